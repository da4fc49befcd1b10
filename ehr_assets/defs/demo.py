"""Materialize every asset for every cohort partition on the persistent instance, then print the metrics.

    DAGSTER_HOME=$PWD/dagster_home python -m ehr_assets.demo [--partitions msk,inspect] [--log-level INFO]

Runs are recorded in the instance, so they show in the UI (`dagster dev`) afterwards. Each partition is one run of
the ``smb_pipeline`` job (in-process: on two cores a subprocess per step costs more than it buys), then the
unpartitioned ``cross_disease_report`` runs over all partitions.
"""

import argparse
import os
import sys

import dagster as dg

from .. import keys
from ..eval.evidence import delta_report, latent_report, seeds_report
from ..eval.health import health_report
from ..eval.report import gap_report, load_health, load_metrics, load_table, wide_table
from ..specs import default_project_dir, load_project
from ..warehouse import default_artifact_root, default_home, default_warehouse
from .build import build
from .definitions import defs


def materialize(partitions: list[str] | None, log_level: str = "INFO", tag: str = "demo", force: bool = False) -> int:
    """Build every missing or out-of-date asset partition (:func:`ehr_assets.defs.build.build`) of ``partitions``
    (all when None; the reports over all partitions only then); 0 on success, 1 on a failed run, 2 on an unknown
    partition."""
    if not os.environ.get("DAGSTER_HOME"):  # the project's own instance folder (dagster.yaml, run history)
        os.environ["DAGSTER_HOME"] = str(default_home())
    instance = dg.DagsterInstance.get()
    project = load_project(default_project_dir())
    return build(defs, project, instance, None, partitions, force=force, log_level=log_level, tag=tag)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", help="comma-separated cohort keys (default: all)")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ap.add_argument("--force", action="store_true", help="rebuild everything, up to date or not")
    args = ap.parse_args(argv)
    rc = materialize(args.partitions.split(",") if args.partitions else None, args.log_level, force=args.force)
    if rc:
        return rc
    metrics = load_metrics(default_warehouse())
    print("Held-out AUROC (binary tasks) and Harrell's C (survival) with 95 % bootstrap CIs, per recipe")
    print("(count_baseline = code counts + age; oracle = the same probe on the true latent state; oracle_no_rate =")
    print(" the latent state without its growth rate):\n")
    print(wide_table(metrics))
    print("\nFraction of the baseline-to-oracle gap each recipe closes (closed:<recipe>; NaN where the gap < 0.02):\n")
    print(gap_report(metrics))
    print("\n== python -m ehr_assets.report --format health: did each JEPA objective learn? ==\n")
    print(health_report(load_health(default_warehouse(), default_artifact_root())))
    print_evidence(metrics)
    print("\nEvery metric (AUPRC, Brier, td-AUC, IBS too): python -m ehr_assets.report --format table|csv")
    return 0


def print_evidence(metrics) -> None:
    """The paired differences, the latent-dynamics probe and the spread across seeds (README: "Reading the
    evidence"); the same text as ``python -m ehr_assets.report --format delta|latent|seeds``."""
    wh = default_warehouse()
    paired = load_table(wh, keys.PAIRED_DIFFERENCES, optional=True)
    latent = load_table(wh, keys.LATENT_DYNAMICS, optional=True)
    print("\n== python -m ehr_assets.report --format delta: each recipe minus the count baseline and minus sft ==\n")
    print(delta_report(paired) if paired is not None else "(paired_differences not materialized)")
    print("\n== python -m ehr_assets.report --format latent: the hidden state read from each recipe's embeddings ==\n")
    print(latent_report(latent) if latent is not None else "(latent_dynamics not materialized)")
    print("\n== python -m ehr_assets.report --format seeds: spread across training seeds ==\n")
    print(seeds_report(metrics, paired))


if __name__ == "__main__":
    sys.exit(main())
