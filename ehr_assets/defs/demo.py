"""Materialize every asset for every cohort partition on the persistent instance, then print the metrics.

    DAGSTER_HOME=$PWD/dagster_home python -m ehr_assets.demo [--partitions msk,inspect] [--log-level INFO]

Runs are recorded in the instance, so they show in the UI (`dagster dev`) afterwards. Each partition is one run of
the ``smb_pipeline`` job (in-process: on two cores a subprocess per step costs more than it buys), then the
unpartitioned ``cross_disease_report`` runs over all partitions.
"""

import argparse
import os
import sys
import time

import dagster as dg

from .. import keys
from ..eval.evidence import delta_report, latent_report, seeds_report
from ..eval.health import health_report
from ..eval.report import gap_report, load_health, load_metrics, load_table, wide_table
from ..warehouse import default_artifact_root, default_home, default_warehouse
from .definitions import PIPELINE_JOB, REPORT_JOB, defs


def _run_config(log_level: str) -> dict:
    # in-process: one step at a time, so a step may use every core (EHR_THREADS still overrides)
    return {
        "loggers": {"console": {"config": {"log_level": log_level}}},
        "resources": {"compute": {"config": {"concurrent_steps": 1}}},
    }


def materialize(partitions: list[str] | None, log_level: str = "INFO", tag: str = "demo") -> int:
    """Run the pipeline job for each partition (all when None), then the report job over all of them (only when
    every partition ran); 0 on success, 1 on a failed run, 2 on an unknown partition."""
    if not os.environ.get("DAGSTER_HOME"):  # the project's own instance folder (dagster.yaml, run history)
        os.environ["DAGSTER_HOME"] = str(default_home())
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(PIPELINE_JOB)
    all_keys = job.partitions_def.get_partition_keys()
    keys = partitions or all_keys
    unknown = [k for k in keys if k not in all_keys]
    if unknown:
        print(f"[{tag}] unknown partition(s) {unknown}; declared cohorts: {all_keys}", file=sys.stderr)
        return 2
    t_all = time.perf_counter()
    for i, key in enumerate(keys, 1):
        t0 = time.perf_counter()
        print(f"[{tag}] ({i}/{len(keys)}) materializing partition {key!r} ...", flush=True)
        res = job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=_run_config(log_level)
        )
        status = "ok" if res.success else "FAILED"
        print(f"[{tag}] partition {key!r}: {status} in {time.perf_counter() - t0:.0f} s (run {res.run_id})", flush=True)
        if not res.success:
            return 1
    job_names = {j.name for j in defs.resolve_all_job_defs()}
    if not partitions and REPORT_JOB in job_names:  # the reports exist with a union cohort or a study
        t0 = time.perf_counter()
        report_job = defs.resolve_job_def(REPORT_JOB)
        res = report_job.execute_in_process(instance=instance, raise_on_error=False, run_config=_run_config(log_level))
        if not res.success:
            print(f"[{tag}] {REPORT_JOB} FAILED", flush=True)
            return 1
        print(f"[{tag}] {REPORT_JOB}: ok in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"[{tag}] all runs done in {time.perf_counter() - t_all:.0f} s\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", help="comma-separated cohort keys (default: all)")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args(argv)
    rc = materialize(args.partitions.split(",") if args.partitions else None, args.log_level)
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
