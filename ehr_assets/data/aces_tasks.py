"""ACES tasks (``probes/<task>.yaml`` with ``kind: aces``): labels and prediction times from an ACES task config,
extracted by ACES itself (the ``es-aces`` package) from the cohort's events written as a MEDS data file.

ACES runs in its own environment (``make aces`` creates ``.venv-aces``; or ``$EHR_ACES_PYTHON``), through
:mod:`ehr_assets.data.aces_runner`, a script that imports only ACES: ``es-aces`` needs ``hydra-core``, which pins
``antlr4-python3-runtime`` 4.9, and Dagster 1.13's asset-selection parser needs 4.13; one environment cannot hold
both. The runner uses ACES's own steps (config loading, predicates, query, the label conversion of its CLI).

What ACES reads: the cohort's events (``subject_id``, ``time``, ``code``, ``numeric_value``) in one parquet file.
The cohort table placed MEDS static rows (null time) at birth; rows whose code matches one of the config's
``patient_demographics`` (static) predicates are handed to ACES with a null time again, as MEDS ships them. A union
cohort gives ACES the events of the members the task names.

What comes back (one row per ACES output row, the columns of :data:`ehr_assets.data.labels.LABEL_COLUMNS` plus
``label_window_start_inclusive``): ``prediction_time`` = the config's ``index_timestamp`` (MEDS: the inclusive end of
the data a model may use), ``boolean_value`` = its ``label``, ``horizon_days`` = 0, the subject's split, and
``outcome_time`` = the start of the label window, which the leakage check compares with the prediction time. These
prediction times are the task's own nodes, not the cohort's decision nodes (docs/how-to/aces.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from ..specs import ProbeSpec, Project, default_project_dir
from .label_files import label_file_task_labels
from .labels import LABEL_COLUMNS, LabelError

ACES_INPUT_COLUMNS = ["subject_id", "time", "code", "numeric_value"]
ACES_VERSION = "es-aces==0.7.3"
RUNNER = Path(__file__).with_name("aces_runner.py")


def aces_python() -> Path:
    """The interpreter of ACES's environment: ``$EHR_ACES_PYTHON``, else ``.venv-aces`` (``make aces``) in the project
    folder, in the repository holding this package, or beside the running environment; a clear error when none."""
    env = os.environ.get("EHR_ACES_PYTHON")
    if env:
        if not Path(env).is_file():
            raise LabelError(f"EHR_ACES_PYTHON={env}: no such interpreter (it should be ACES's environment's python)")
        return Path(env)
    for root in (default_project_dir(), Path(__file__).resolve().parents[2], Path(sys.prefix).parent):
        cand = root / ".venv-aces" / "bin" / "python"
        if cand.is_file():
            return cand
    raise LabelError(
        "ACES tasks need ACES in an environment of its own (es-aces pins antlr 4.9, Dagster needs 4.13): run "
        f"`make aces` (creates .venv-aces with {ACES_VERSION}) or set EHR_ACES_PYTHON to its python"
    )


def run_aces(task: ProbeSpec, probe_file: Path, events: pd.DataFrame) -> pd.DataFrame:
    """The ACES runner on ``events``: subject_id, prediction_time, boolean_value, label_window_start(_inclusive)."""
    py = aces_python()
    with tempfile.TemporaryDirectory(prefix="aces-") as tmp:
        ev, out = Path(tmp) / "events.parquet", Path(tmp) / "labels.parquet"
        frame = events[ACES_INPUT_COLUMNS].reset_index(drop=True)
        frame.astype({"time": "datetime64[us]", "numeric_value": "float32"}).to_parquet(ev, index=False)
        cmd = [str(py), "-I", str(RUNNER), "--config", str(task.config), "--events", str(ev), "--out", str(out)]
        if task.predicates:
            cmd += ["--predicates", str(task.predicates)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-6:])
            raise LabelError(f"{probe_file}: config: {tail}")
        labels = pd.read_parquet(out)
    labels["prediction_time"] = labels["prediction_time"].astype("datetime64[us]")
    labels["label_window_start"] = labels["label_window_start"].astype("datetime64[us]")
    return labels


def aces_task_labels(task: ProbeSpec, probe_file: Path, events: pd.DataFrame, subjects: pd.DataFrame):
    """Labels of one ACES task on ``events`` (columns of :data:`LABEL_COLUMNS`)."""
    raw = run_aces(task, probe_file, events)
    if raw.empty:
        return pd.DataFrame(columns=[*LABEL_COLUMNS, "label_window_start_inclusive"])
    subj = subjects.set_index("subject_id")
    out = pd.DataFrame(
        {
            "subject_id": raw["subject_id"].astype("int64"),
            "prediction_time": raw["prediction_time"].astype("datetime64[us]"),
            "boolean_value": raw["boolean_value"].astype(bool),
            "float_value": pd.Series(float("nan"), index=raw.index, dtype="float32"),
            "task": task.name,
            "horizon_days": 0,
            "split": raw["subject_id"].map(subj["split"]).to_numpy(),
            "source_cohort": raw["subject_id"].map(subj["source_cohort"]).to_numpy(),
            "outcome_time": raw["label_window_start"].astype("datetime64[us]"),
            "label_window_start_inclusive": raw["label_window_start_inclusive"].astype(bool),
        }
    )
    out["horizon_days"] = out["horizon_days"].astype("int64")
    out = out.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)
    return out[[*LABEL_COLUMNS, "label_window_start_inclusive"]]


def cohort_aces_labels(project: Project, cohort: str, events: pd.DataFrame, subjects: pd.DataFrame, log=None):
    """Labels of every task of ``cohort`` with its own prediction times (a union: on the members each task names):
    the ACES tasks, and the MEDS label-file tasks (:mod:`.label_files`)."""
    frames = []
    union = project.cohorts[cohort].is_union
    for task in project.tasks_for(cohort):
        if task.kind == "meds_labels":
            subj = subjects[subjects["source_cohort"].isin(task.cohorts)] if union else subjects
            probe_file = project.root / "probes" / f"{task.name}.yaml"
            frames.append(label_file_task_labels(task, probe_file, subj, log=log))
            continue
        if task.kind != "aces":
            continue
        ev = events[events["source_cohort"].isin(task.cohorts)] if union else events
        lab = aces_task_labels(task, project.root / "probes" / f"{task.name}.yaml", ev, subjects)
        if log is not None:
            log(f"ACES task {task.name}: {len(lab)} rows, {int(lab['boolean_value'].sum())} positive")
        frames.append(lab)
    cols = [*LABEL_COLUMNS, "label_window_start_inclusive"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def aces_nodes(labels: pd.DataFrame) -> pd.DataFrame:
    """The distinct prediction times of ACES labels, as nodes (subject_id, prediction_time, split, source_cohort)."""
    cols = ["subject_id", "prediction_time", "split", "source_cohort"]
    nodes = labels[cols].drop_duplicates(["subject_id", "prediction_time"])
    return nodes.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)


def label_window_violations(labels: pd.DataFrame) -> pd.DataFrame:
    """ACES rows whose label window starts before the prediction time, or at it and includes that instant
    (``label_window_start_inclusive``): the label would count events the model may read."""
    incl = labels["label_window_start_inclusive"].astype(bool)
    start, pt = labels["outcome_time"], labels["prediction_time"]
    return labels[start.isna() | (start < pt) | ((start == pt) & incl)]
