"""``make mimic-demo``: the real-data example project (``examples/mimic_iv_demo``) built end to end, then a short
results page: the sample size, the ``source[...]`` report, the labels held out, the metrics (metrics with too few
held-out positives or negatives say so instead of a number) and the seconds of each stage, with the data's ODbL
attribution. The fetch and the environment are set up by :mod:`ehr_assets.mimic_demo` before this module (which
builds the definitions of the project named by ``EHR_PROJECT_DIR``) is imported."""

from __future__ import annotations

import json
import os
import platform
import textwrap
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from ..eval.report import load_metrics, load_table, markdown_table, wide_table
from ..fetch import ATTRIBUTION
from ..warehouse import default_warehouse
from .demo import materialize

WIDTH = 100  # columns of the page's prose


def stage_seconds(instance: dg.DagsterInstance, min_seconds: float = 0.5) -> pd.DataFrame:
    """Seconds of each step (asset or check) in the latest run that ran it, longest first; the steps shorter than
    ``min_seconds`` summed into one row."""
    seen: dict[str, float] = {}
    for rec in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS])):
        for s in instance.get_run_step_stats(rec.dagster_run.run_id):  # records come newest first
            if s.start_time and s.end_time and s.step_key not in seen:
                seen[s.step_key] = s.end_time - s.start_time
    df = pd.DataFrame({"step": list(seen), "seconds": list(seen.values())})
    df = df.sort_values("seconds", ascending=False, kind="stable")
    short = df[df["seconds"] < min_seconds]
    df = df[df["seconds"] >= min_seconds]
    if len(short):
        rest = pd.DataFrame(
            {"step": [f"{len(short)} other steps (checks, small assets)"], "seconds": [short["seconds"].sum()]}
        )
        df = pd.concat([df, rest], ignore_index=True)
    df["seconds"] = df["seconds"].map(lambda v: f"{v:.1f}")
    return df.reset_index(drop=True)


def source_report(instance: dg.DagsterInstance, cohort: str) -> dict:
    """The ``source[<cohort>]`` entry of the latest ``cohort_events`` materialization (empty if none)."""
    ev = instance.get_latest_materialization_event(dg.AssetKey("cohort_events"))
    if ev is None:
        return {}
    md = ev.asset_materialization.metadata.get(f"source[{cohort}]")
    return dict(md.value) if md is not None else {}


def label_counts(warehouse: Path) -> pd.DataFrame:
    """Rows and positives per task, horizon and split (YAML tasks, ACES and label-file tasks)."""
    frames = [load_table(warehouse, t, optional=True) for t in ("task_labels", "aces_labels")]
    lab = pd.concat([f for f in frames if f is not None and len(f)], ignore_index=True)
    g = lab.groupby(["task", "horizon_days", "split"])["boolean_value"].agg(n="size", positives="sum").reset_index()
    wide = g.pivot_table(index=["task", "horizon_days"], columns="split", values=["n", "positives"], fill_value=0)
    wide.columns = [f"{split} {what}" for what, split in wide.columns]
    cols = [f"{s} {w}" for s in ("train", "held_out") for w in ("n", "positives") if f"{s} {w}" in wide.columns]
    return wide[cols].astype(int).reset_index()


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=WIDTH, break_long_words=False, break_on_hyphens=False)


def results_page(instance: dg.DagsterInstance, wall_s: float, built: bool = True, cohort: str = "mimic") -> str:
    wh = default_warehouse()
    subjects = load_table(wh, "subjects")
    splits = subjects["split"].value_counts()
    src = source_report(instance, cohort)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        "# The MIMIC-IV demo, end to end",
        "",
        _wrap(
            f"Produced by `make mimic-demo` (`python -m ehr_assets.mimic_demo`) on {time.strftime('%Y-%m-%d')}: "
            + ("the build took" if built else "everything was up to date, checked in")
            + f" {wall_s:.0f} s of wall time on {cpus} CPU cores ({platform.machine()}, Python "
            + f"{platform.python_version()})."
        ),
        "",
        _wrap(f"**Data.** {ATTRIBUTION}"),
        "",
        _wrap(
            f"**Sample size.** {len(subjects)} subjects: {int(splits.get('train', 0))} train, "
            f"{int(splits.get('tuning', 0))} tuning, {int(splits.get('held_out', 0))} held out (the dataset's own "
            "split). Every metric below is computed on the held-out subjects only. Below 10 held-out positives or "
            "10 negatives a metric is too few to score (project.yaml `small_samples`; docs/how-to/real-ehr.md) and no "
            "point estimate is shown. This is a run of the method on real records, not evidence about it."
        ),
        "",
        "## What the source delivered (`source[mimic]`)",
        "",
        "```",
        json.dumps({k: v for k, v in src.items() if k not in ("extra_columns", "path")}, indent=1, sort_keys=True),
        "```",
        "",
        "## Labels per task (rows and positives)",
        "",
        markdown_table(label_counts(wh)),
        "",
        "## Held-out metrics",
        "",
        "```",
        wide_table(load_metrics(wh)),
        "```",
        "",
        "## Seconds per step (the latest run of each)",
        "",
        markdown_table(stage_seconds(instance)),
        "",
    ]
    return "\n".join(lines)


def run(out: Path, log_level: str = "WARNING", force: bool = False) -> int:
    """Build the example (only what is missing or out of date, or everything with ``force``) and write ``out``."""
    t0 = time.time()
    rc = materialize(None, log_level, tag="mimic_demo", force=force)
    if rc:
        return rc
    wall = time.time() - t0
    instance = dg.DagsterInstance.get()
    built = bool(instance.get_run_records(filters=dg.RunsFilter(created_after=pd.Timestamp(t0, unit="s", tz="UTC"))))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(results_page(instance, wall, built))
    print(f"[mimic-demo] {out} written ({wall:.0f} s)")
    return 0
