"""Materialize every asset for every cohort partition on the persistent instance, then print the answer.

    DAGSTER_HOME=$PWD/dagster_home python -m ehr_assets.demo [--partitions msk,inspect] [--log-level INFO]

Runs are recorded in the instance, so they show in the UI (`dagster dev`) afterwards. Each partition is one run of
the ``smb_pipeline`` job (in-process: on two cores a subprocess per step costs more than it buys), then the
unpartitioned ``cross_disease_report`` runs over all partitions. The demo ends with the summary of
``python -m ehr_assets.report --format summary`` (at most 40 lines of 100 characters) and writes every table and
plot to ``results/`` beside the warehouse (:func:`ehr_assets.eval.results.write_results`).
"""

import argparse
import os
import sys
from pathlib import Path

import dagster as dg

from ..eval.report import summary
from ..eval.results import write_results
from ..specs import Project, default_project_dir, load_project
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


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it (shorter to read and to type)."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else rel


def ending(warehouse: Path, artifacts: Path, project: Project) -> str:
    """Write every table and plot to ``results/`` beside ``warehouse``, then return the demo's last words: the
    summary (:func:`ehr_assets.eval.report.summary`) naming that folder."""
    out = write_results(warehouse, artifacts, project)
    return summary(warehouse, artifacts, project, results=Path(_shown(out)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", help="comma-separated cohort keys (default: all)")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ap.add_argument("--force", action="store_true", help="rebuild everything, up to date or not")
    args = ap.parse_args(argv)
    rc = materialize(args.partitions.split(",") if args.partitions else None, args.log_level, force=args.force)
    if rc:
        return rc
    print()
    print(ending(default_warehouse(), default_artifact_root(), load_project(default_project_dir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
