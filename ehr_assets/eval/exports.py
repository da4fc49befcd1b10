"""Export stage: labels and held-out predictions as files that other MEDS tools read.

**Labels** (:func:`write_label_files`): one MEDS label file per task and horizon, ``<dest>/<task_name>.parquet``,
validated with :class:`meds.LabelSchema`; ``task_name`` is ``<task>_<horizon>d`` for a binary task (e.g.
``mortality_365d``) and ``<task>`` for a survival task. Every decision node that has a label is one row:
``subject_id``, ``prediction_time`` (inclusive end of the data a model may use) and

* binary tasks: ``boolean_value`` = the outcome occurs in ``(prediction_time, prediction_time + horizon]``; nodes
  whose follow-up ends before the horizon without the outcome are absent (censored);
* survival tasks -- MEDS has no time-to-event label type yet (MEDS issue #40), so the encoding is:
  ``boolean_value`` = the event was observed (False: censored), ``float_value`` = days from ``prediction_time`` to
  the event, or to the end of follow-up when censored (capped at the task's ``max_followup_days``).

Subjects' splits are in ``<dest>/subject_splits.parquet`` (:class:`meds.SubjectSplitSchema`), and
``<dest>/manifest.json`` lists each file with its task, kind, horizon, row and positive counts and the encoding.

**Predictions** (:func:`write_prediction_files`): for every recipe (the count baseline and the oracles included) and
every binary task, ``<dest>/<recipe>/<task_name>.parquet`` with the MEDS label columns of the held-out rows plus
meds-evaluation's two prediction columns: ``predicted_boolean_probability`` (float32, the probe's probability) and
``predicted_boolean_value`` (probability > 0.5, the rule of scikit-learn's ``LogisticRegression.predict``). The
types are those of meds-evaluation's own ``PredictionSchema`` (mirrored by :class:`PredictionSchema` below, which
validates every file; the test suite validates them with meds-evaluation's and scores them with
``meds-evaluation-cli``). The probes round their probabilities to float32 before scoring
(:func:`ehr_assets.eval.probes.binary_probe`), so the AUROC in ``probe_metrics`` is computed from exactly the values
written here and any scorer reading the files agrees with it. meds-evaluation scores binary tasks only: survival
tasks are exported as label files. Nothing here imports Dagster.
"""

import json  # no `from __future__ import annotations`: flexible_schema reads PredictionSchema's annotations
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from flexible_schema import Optional

__all__ = ["PredictionSchema", "SURVIVAL_ENCODING", "task_file_name", "write_label_files", "write_prediction_files"]

SURVIVAL_ENCODING = (
    "boolean_value = event observed (False = censored); float_value = days from prediction_time to the event, "
    "or to the end of follow-up when censored (capped at max_followup_days)"
)
BINARY_ENCODING = (
    "boolean_value = outcome in (prediction_time, prediction_time + horizon]; nodes censored before the horizon "
    "without the outcome are absent"
)


class PredictionSchema(meds.LabelSchema):
    """meds-evaluation's prediction file (``meds_evaluation.schema.PredictionSchema``, a test dependency only):
    :class:`meds.LabelSchema` plus ``predicted_boolean_value`` (bool) and ``predicted_boolean_probability``
    (float32); closed (no other column). Stricter than meds-evaluation's in one way: no nulls."""

    predicted_boolean_value: Optional(pa.bool_(), nullable=False)
    predicted_boolean_probability: Optional(pa.float32(), nullable=False)


PREDICTED_TRUE_ABOVE = 0.5  # predicted_boolean_value = probability > 0.5, as LogisticRegression.predict decides


def task_file_name(task: str, horizon_days: int, kind: str) -> str:
    """``<task>_<h>d`` for a binary task, ``<task>`` for a survival task."""
    return f"{task}_{int(horizon_days)}d" if kind == "binary" else task


def _label_table(rows: pd.DataFrame, kind: str) -> pa.Table:
    cols = {
        "subject_id": pa.array(rows["subject_id"].to_numpy(dtype=np.int64), pa.int64()),
        "prediction_time": pa.array(rows["prediction_time"].to_numpy().astype("datetime64[us]"), pa.timestamp("us")),
        "boolean_value": pa.array(rows["boolean_value"].to_numpy(dtype=bool), pa.bool_()),
    }
    if kind == "survival":
        cols["float_value"] = pa.array(rows["float_value"].to_numpy(dtype=np.float32), pa.float32())
    return pa.table(cols)


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def write_label_files(
    labels: pd.DataFrame, task_kinds: dict[str, str], dest: Path, subjects: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Write ``labels`` (the ``task_labels`` table of one partition) as MEDS label files under ``dest`` (see the
    module docstring). Returns the manifest as a frame (file, task, kind, horizon_days, rows, positives)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(labels["task"]) - set(task_kinds))
    if unknown:
        raise ValueError(f"task_labels hold task(s) {unknown} that no probes/*.yaml declares")
    manifest = []
    for (task, horizon), rows in labels.groupby(["task", "horizon_days"], sort=True):
        kind = task_kinds[task]
        name = task_file_name(task, horizon, kind)
        rows = rows.sort_values(["subject_id", "prediction_time"], kind="stable")
        table = _label_table(rows, kind)
        meds.LabelSchema.validate(table)
        _write_parquet(table, dest / f"{name}.parquet")
        manifest.append(
            {
                "file": f"{name}.parquet",
                "task": task,
                "kind": kind,
                "horizon_days": int(horizon),
                "rows": int(len(rows)),
                "positives": int(rows["boolean_value"].sum()),
                "encoding": BINARY_ENCODING if kind == "binary" else SURVIVAL_ENCODING,
            }
        )
    # the cohort's splits (every subject, from the subjects table when given), as a MEDS subject_splits file
    src = subjects if subjects is not None else labels
    splits = src[["subject_id", "split"]].drop_duplicates("subject_id").sort_values("subject_id")
    sp = pa.table(
        {
            "subject_id": pa.array(splits["subject_id"].to_numpy(dtype=np.int64), pa.int64()),
            "split": pa.array(splits["split"].astype(str).tolist(), pa.string()),
        }
    )
    meds.SubjectSplitSchema.validate(sp)
    _write_parquet(sp, dest / "subject_splits.parquet")
    (dest / "manifest.json").write_text(json.dumps({"labels": manifest}, indent=2) + "\n")
    return pd.DataFrame(manifest)


def write_prediction_files(preds: pd.DataFrame, dest: Path) -> pd.DataFrame:
    """Write the held-out binary predictions of ``preds`` (the ``probe_predictions`` rows of one partition, any
    number of recipes) as ``dest/<recipe>/<task>_<h>d.parquet``, validated with :class:`PredictionSchema`. Rows
    whose probe could not be fit (no probability) are left out. Returns one row per file written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    binary = preds[preds["predicted_boolean_probability"].notna()]
    written = []
    for (recipe, task, horizon), rows in binary.groupby(["recipe", "task", "horizon_days"], sort=True):
        rows = rows.sort_values(["subject_id", "prediction_time"], kind="stable")
        prob = rows["predicted_boolean_probability"].to_numpy(dtype=np.float32)
        table = (
            _label_table(rows, "binary")
            .append_column("predicted_boolean_value", pa.array(prob > PREDICTED_TRUE_ABOVE, pa.bool_()))
            .append_column("predicted_boolean_probability", pa.array(prob, pa.float32()))
        )
        PredictionSchema.validate(table)
        name = task_file_name(task, horizon, "binary")
        _write_parquet(table, dest / recipe / f"{name}.parquet")
        written.append(
            {
                "recipe": recipe,
                "file": f"{recipe}/{name}.parquet",
                "task": task,
                "horizon_days": int(horizon),
                "rows": len(rows),
            }
        )
    return pd.DataFrame(written, columns=["recipe", "file", "task", "horizon_days", "rows"])
