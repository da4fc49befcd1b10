"""``python -m ehr_assets.study``: run the declared study (``make study``) and publish its report.

    python -m ehr_assets.study [--project study] [--out bench/results] [--log-level INFO]

Materializes the study project (a project folder with a ``study.yaml``: by default ``study/`` of this repository)
through the same assets as the demo -- every cohort partition of the ``smb_pipeline`` job, then the report job
with ``study_report`` -- on the instance in ``<project>/dagster_home`` (``DAGSTER_HOME`` overrides), so the runs and
the report's metadata show in ``dagster dev`` afterwards. Then copies ``study.md`` and its plots from the artifact
root to ``--out`` and writes the wall time at its top.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ehr_assets.study", description=__doc__.splitlines()[0])
    ap.add_argument("--project", default=str(REPO / "study"), help="the study's project folder (with study.yaml)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), help="where study.md and its PNGs go")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args(argv)
    project = Path(args.project).resolve()
    if not (project / "study.yaml").is_file():
        print(f"[study] {project / 'study.yaml'}: not found (a study project declares its questions there)")
        return 2
    os.environ["EHR_PROJECT_DIR"] = str(project)  # read when the definitions are built, so before the import
    os.environ.setdefault("DAGSTER_HOME", str(project / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from .defs.demo import materialize
    from .defs.study import STUDY_REPORT, study_report_built_at
    from .specs import load_project
    from .warehouse import default_artifact_root

    started = time.time()
    rc = materialize(None, args.log_level, tag="study")
    if rc:
        return rc
    wall = time.perf_counter() - t0
    built = study_report_built_at()
    if built is not None and built < started and (Path(args.out) / "study.md").is_file():
        print(f"[study] {Path(args.out) / 'study.md'} is up to date (the study report was not rebuilt)")
        return 0
    spec = load_project(project)
    src = default_artifact_root(project) / STUDY_REPORT / spec.study.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.suffix == ".png":
            shutil.copyfile(f, out / f.name)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    head = (
        f"Produced by `make study` (`python -m ehr_assets.study`) in {wall / 60:.1f} min wall time on {cpus} CPU "
        f"cores ({platform.machine()}, Python {platform.python_version()}), {time.strftime('%Y-%m-%d')}.\n\n"
    )
    text = (src / "study.md").read_text()
    title, _, rest = text.partition("\n")
    (out / "study.md").write_text(f"{title}\n\n{head}{rest.lstrip()}")
    print(f"[study] {out / 'study.md'} written ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
