"""``make mimic-demo``: the real-data example project (``examples/mimic_iv_demo``) built end to end, then a short
results page: the sample size, the ``source[...]`` report, the labels held out, the metrics (metrics with too few
held-out positives or negatives say so instead of a number) and the seconds of each stage, with the data's ODbL
attribution. The fetch and the environment are set up by :mod:`ehr_assets.mimic_demo` before this module (which
builds the definitions of the project named by ``EHR_PROJECT_DIR``) is imported."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from ..eval.report import load_metrics, load_table, markdown_table, wide_table
from ..fetch import ATTRIBUTION
from ..warehouse import default_warehouse
from .demo import materialize

STAGE_ORDER = ("cohort_events", "cohort_table", "subjects", "decision_nodes", "task_labels", "aces_labels")


def stage_seconds(instance: dg.DagsterInstance, since: float) -> pd.DataFrame:
    """Seconds per step (asset or check) over the runs created after ``since`` (epoch seconds), summed."""
    rows = []
    for rec in instance.get_run_records(filters=dg.RunsFilter(created_after=pd.Timestamp(since, unit="s"))):
        for s in instance.get_run_step_stats(rec.dagster_run.run_id):
            if s.start_time and s.end_time:
                rows.append({"step": s.step_key, "seconds": s.end_time - s.start_time})
    if not rows:
        return pd.DataFrame(columns=["step", "seconds"])
    df = pd.DataFrame(rows).groupby("step", as_index=False)["seconds"].sum()
    df["seconds"] = df["seconds"].round(1)
    return df.sort_values("seconds", ascending=False, kind="stable").reset_index(drop=True)


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


def results_page(instance: dg.DagsterInstance, since: float, wall_s: float, cohort: str = "mimic") -> str:
    wh = default_warehouse()
    subjects = load_table(wh, "subjects")
    splits = subjects["split"].value_counts()
    src = source_report(instance, cohort)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        "# The MIMIC-IV demo, end to end",
        "",
        f"Produced by `make mimic-demo` on {time.strftime('%Y-%m-%d')} in {wall_s:.0f} s wall time on {cpus} CPU "
        f"cores ({platform.machine()}, Python {platform.python_version()}).",
        "",
        f"**Data.** {ATTRIBUTION}",
        "",
        f"**Sample size.** {len(subjects)} subjects: {int(splits.get('train', 0))} train, "
        f"{int(splits.get('tuning', 0))} tuning, {int(splits.get('held_out', 0))} held out (the dataset's own split). "
        "Every metric below is computed on the held-out subjects only; with this few, most metrics are too few to "
        "score, and those that are scored have wide intervals. This is a run of the method on real records, not "
        "evidence about it.",
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
        "## Seconds per step (summed over the build's runs)",
        "",
        markdown_table(stage_seconds(instance, since)),
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(results_page(dg.DagsterInstance.get(), t0, wall))
    print(f"[mimic-demo] {out} written ({wall:.0f} s)")
    return 0
