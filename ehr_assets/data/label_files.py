"""MEDS label files as tasks (``probes/<task>.yaml`` with ``kind: meds_labels``): labels and prediction times made
by another tool (MEDS-DEV, an ACES run, a hospital's own labelling) arrive as parquet files in the MEDS
``LabelSchema``; their prediction times become contexts the way ACES times do (:mod:`.aces_tasks`).

What is read: ``labels:`` names one parquet file or a folder (every ``**/*.parquet`` in it, hidden files skipped).
Each file is checked with the ``meds`` package's own ``LabelSchema``: ``subject_id`` (int64) and
``prediction_time`` (timestamp) are required; ``boolean_value``, ``integer_value``, ``float_value``,
``categorical_value`` are optional but free of nulls when present, and an all-null optional column is dropped before
the check (MEDS writers commonly keep the columns they do not fill, e.g. the MIMIC-IV demo's task file). Errors name
the file and column.

Which column is the label: ``value:`` (``boolean``, ``integer``, ``float`` or ``categorical``), by default the one
value column the files fill (more than one is an error asking for ``value:``). A boolean is the label; an integer
or categorical value is positive when it is one of ``positive_values``; a float when it is at or above
``threshold``. A file of the folder that lacks the label column is an error.

Rows are matched to the cohort: a row whose subject is not in the cohort is left out (counted: a label file may
cover more subjects than a ``max_subjects`` dev cohort), and so is one whose prediction time is at or after the
subject's death or before its first event (counted: nothing to predict from, or no one left to predict for). Two
rows at one subject and time that disagree are an error. Every row carries its subject's split (checked
downstream, as for ACES). MEDS defines ``prediction_time`` as the inclusive end of the data a model may use, so a
label file's label window starts right after it: ``outcome_time`` = ``prediction_time`` with
``label_window_start_inclusive`` false, which the ACES label-window check accepts and the context check
(no context reads past its prediction time) then guards.
"""

from __future__ import annotations

from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..specs import ProbeSpec
from .labels import LABEL_COLUMNS, LabelError

VALUE_COLUMNS = ("boolean_value", "integer_value", "float_value", "categorical_value")


def label_files(path: str | Path) -> list[Path]:
    """The parquet files a ``labels:`` path names (one file, or every one under a folder)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise LabelError(f"{p}: MEDS label file or folder not found (labels:)")
    files = sorted(f for f in p.glob("**/*.parquet") if not any(part.startswith(".") for part in f.parts))
    if not files:
        raise LabelError(f"{p}: no parquet files in the label folder (labels:)")
    return files


def read_label_file(path: Path) -> pd.DataFrame:
    """One MEDS label file, validated with ``meds.LabelSchema`` (all-null optional columns dropped first)."""
    try:
        table = pq.read_table(path)
    except Exception as e:  # not parquet, truncated, ...
        raise LabelError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    for col in (meds.LabelSchema.subject_id_name, meds.LabelSchema.prediction_time_name):
        if col not in table.column_names:
            raise LabelError(f"{path}: column {col!r}: required by meds.LabelSchema (columns: {table.column_names})")
    for col in VALUE_COLUMNS:
        if col in table.column_names and table.column(col).null_count == table.num_rows:
            table = table.drop_columns([col])
    for col in table.column_names:
        if table.column(col).null_count and col not in VALUE_COLUMNS:
            raise LabelError(f"{path}: column {col!r}: {table.column(col).null_count} null value(s)")
    try:
        table = meds.LabelSchema.align(table)
        meds.LabelSchema.validate(table)
    except Exception as e:
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        raise LabelError(f"{path}: fails meds.LabelSchema: {e}{cause}") from None
    df = table.to_pandas()
    df["prediction_time"] = df["prediction_time"].astype("datetime64[us]")
    return df


def _label_column(task: ProbeSpec, frame: pd.DataFrame, where: str) -> str:
    filled = [c for c in VALUE_COLUMNS if c in frame.columns and frame[c].notna().any()]
    if task.value is not None:
        col = f"{task.value}_value"
        if col not in filled:
            raise LabelError(f"{where}: column {col!r}: not in the label file(s), or empty (value: {task.value})")
        return col
    if len(filled) != 1:
        raise LabelError(
            f"{where}: the label file(s) fill {filled or 'no value column'}; declare value: (boolean, integer, "
            "float or categorical) in the task"
        )
    col = filled[0]
    if col in ("integer_value", "categorical_value") and not task.positive_values:
        raise LabelError(f"{where}: column {col!r}: declare value: and positive_values: to binarize it")
    if col == "float_value" and task.threshold is None:
        raise LabelError(f"{where}: column {col!r}: declare value: float and threshold: to binarize it")
    return col


def _binary(task: ProbeSpec, values: pd.Series, col: str) -> pd.Series:
    if col == "boolean_value":
        return values.astype(bool)
    if col == "float_value":
        return values.astype("float64") >= float(task.threshold)
    positives = {str(v) for v in task.positive_values}
    if col == "integer_value":
        return values.map(lambda v: str(int(v)) in positives).astype(bool)
    return values.astype(str).isin(positives)


def label_file_task_labels(task: ProbeSpec, probe_file: Path, subjects: pd.DataFrame, log=None) -> pd.DataFrame:
    """Labels of one label-file task on the cohort of ``subjects`` (``subject_id, split, source_cohort``, and
    ``first_time`` / ``death_time`` when present): the columns of :data:`LABEL_COLUMNS` plus
    ``label_window_start_inclusive``."""
    files = label_files(task.labels)
    frames = [read_label_file(f).assign(_file=str(f)) for f in files]
    raw = pd.concat(frames, ignore_index=True)
    where = f"{probe_file}: labels: {task.labels}"
    col = _label_column(task, raw, where)
    missing = raw[col].isna()  # a file that does not fill the label column (meds allows no nulls in a present one)
    if missing.any():
        raise LabelError(f"{raw.loc[missing, '_file'].iloc[0]}: column {col!r}: not in this file (value: {col})")
    raw["label"] = _binary(task, raw[col], col)

    subj = subjects.set_index("subject_id")
    known = raw["subject_id"].isin(subj.index)
    pt = raw["prediction_time"]
    first_time = raw["subject_id"].map(subj["first_time"]) if "first_time" in subj else pd.Series(pd.NaT, raw.index)
    death = raw["subject_id"].map(subj["death_time"]) if "death_time" in subj else pd.Series(pd.NaT, raw.index)
    first_time, death = first_time.astype("datetime64[us]"), death.astype("datetime64[us]")
    after_death = known & death.notna() & (pt >= death)
    before_data = known & first_time.notna() & (pt < first_time)
    keep = known & ~after_death & ~before_data
    counts = {
        "rows_read": len(raw),
        "subjects_not_in_cohort": int(raw.loc[~known, "subject_id"].nunique()),
        "rows_of_subjects_not_in_cohort": int((~known).sum()),
        "rows_at_or_after_death": int(after_death.sum()),
        "rows_before_first_event": int(before_data.sum()),
    }
    raw = raw[keep]
    conflict = raw.groupby(["subject_id", "prediction_time"])["label"].nunique() > 1
    if conflict.any():
        sid, t = conflict[conflict].index[0]
        raise LabelError(
            f"{where}: {int(conflict.sum())} subject/prediction_time pair(s) with two different labels "
            f"(e.g. subject_id {sid} at {t}); column {col!r}"
        )
    raw = raw.drop_duplicates(["subject_id", "prediction_time"])
    if log is not None:
        log(f"label-file task {task.name}: {counts}; {len(raw)} rows kept, {int(raw['label'].sum())} positive")
    out = pd.DataFrame(
        {
            "subject_id": raw["subject_id"].astype("int64"),
            "prediction_time": raw["prediction_time"].astype("datetime64[us]"),
            "boolean_value": raw["label"].astype(bool),
            "float_value": pd.Series(np.nan, index=raw.index, dtype="float32"),
            "task": task.name,
            "horizon_days": np.int64(0),
            "split": raw["subject_id"].map(subj["split"]).to_numpy(),
            "source_cohort": raw["subject_id"].map(subj["source_cohort"]).to_numpy(),
            "outcome_time": raw["prediction_time"].astype("datetime64[us]"),  # the window opens right after it
            "label_window_start_inclusive": False,
        }
    )
    out["horizon_days"] = out["horizon_days"].astype("int64")
    out = out.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)
    return out[[*LABEL_COLUMNS, "label_window_start_inclusive"]]
