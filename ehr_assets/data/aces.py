"""ACES tasks (``probes/<task>.yaml`` with ``kind: aces``): labels and prediction times from an ACES task config,
extracted by ACES itself (the ``es-aces`` package: ``TaskExtractorConfig.load``, ``predicates.get_predicates_df``,
``query.query``, and the MEDS label conversion of its CLI) from the cohort's events written as a MEDS data file.

What ACES reads: the cohort's events (``subject_id``, ``time``, ``code``, ``numeric_value``) in one parquet file.
The cohort table placed MEDS static rows (null time) at birth; rows whose code matches one of the config's
``patient_demographics`` (static) predicates are handed to ACES with a null time again, as MEDS ships them, so that
ACES's static filters see them. A union cohort gives ACES the events of the members the task names.

What comes back (one row per ACES output row, same columns as :data:`ehr_assets.data.labels.LABEL_COLUMNS`):
``prediction_time`` = the config's ``index_timestamp`` (MEDS: the inclusive end of the data a model may use),
``boolean_value`` = the config's ``label`` (count > 0, as ACES's CLI casts it), ``horizon_days`` = 0, the subject's
split, and ``outcome_time`` = the start of the label window (its timestamp boundary), which the leakage check
compares with the prediction time. These prediction times are the task's own nodes, not the cohort's decision
nodes: embeddings are taken there too (see the README, "ACES tasks").
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from ..specs import ProbeSpec, Project
from .labels import LABEL_COLUMNS, LabelError

ACES_INPUT_COLUMNS = ["subject_id", "time", "code", "numeric_value"]


def load_config(task: ProbeSpec, probe_file: Path):
    """The task's ACES ``TaskExtractorConfig``; any error of ACES's loader is re-raised naming the probe file."""
    from aces.config import TaskExtractorConfig

    try:
        cfg = TaskExtractorConfig.load(config_path=Path(task.config), predicates_path=task.predicates)
    except Exception as e:  # ACES raises ValueError, KeyError, FileNotFoundError ... for a bad config
        raise LabelError(f"{probe_file}: config: ACES cannot load {task.config}: {type(e).__name__}: {e}") from None
    missing = [k for k, v in (("label", cfg.label_window), ("index_timestamp", cfg.index_timestamp_window)) if not v]
    if missing:
        raise LabelError(
            f"{probe_file}: config: {task.config} declares no window with {' or '.join(missing)}; a probe needs a "
            "label and a prediction time (index_timestamp) per row"
        )
    return cfg


def aces_input(events: pd.DataFrame, cfg) -> pd.DataFrame:
    """The events as ACES reads a MEDS shard; rows of the config's static predicates get a null time."""
    import polars as pl

    df = pl.from_pandas(events[ACES_INPUT_COLUMNS].reset_index(drop=True))
    df = df.with_columns(pl.col("numeric_value").cast(pl.Float32), pl.col("time").cast(pl.Datetime("us")))
    static = [p for p in cfg.plain_predicates.values() if p.static]
    if static:
        is_static = pl.any_horizontal([p.MEDS_eval_expr() for p in static])
        df = df.with_columns(pl.when(is_static).then(None).otherwise(pl.col("time")).alias("time"))
    return df


def run_aces(cfg, events: pd.DataFrame) -> pd.DataFrame:
    """ACES on ``events``: its query result converted to MEDS labels as its CLI does (``subject_id``,
    ``index_timestamp`` -> ``prediction_time``, ``label`` -> ``boolean_value``, ``run.get_and_validate_label_schema``),
    plus ``label_window_start``."""
    import polars as pl
    from aces import predicates, query
    from aces.run import get_and_validate_label_schema
    from omegaconf import DictConfig

    with tempfile.TemporaryDirectory(prefix="aces-") as tmp:
        path = Path(tmp) / "data.parquet"
        aces_input(events, cfg).write_parquet(path)
        quiet = logging.getLogger("aces")
        level, quiet.level = quiet.level, logging.WARNING  # ACES logs every step at INFO
        try:
            pred = predicates.get_predicates_df(cfg, DictConfig({"path": str(path), "standard": "meds"}))
            result = query.query(cfg, pred)
        finally:
            quiet.setLevel(level)
    if result.is_empty():
        return pd.DataFrame(columns=["subject_id", "prediction_time", "boolean_value", "label_window_start"])
    label_window = cfg.windows[cfg.label_window]
    side = "end" if label_window.root_node == "start" else "start"
    start = pl.col(f"{cfg.label_window}.{side}_summary").struct.field("timestamp_at_start")
    result = result.with_columns(start.alias("label_window_start"))
    labels = get_and_validate_label_schema(
        result.select("subject_id", "index_timestamp", "label").rename(
            {"index_timestamp": "prediction_time", "label": "boolean_value"}
        )
    ).to_pandas()
    labels["label_window_start"] = result["label_window_start"].to_pandas().astype("datetime64[us]")
    return labels


def aces_task_labels(task: ProbeSpec, probe_file: Path, events: pd.DataFrame, subjects: pd.DataFrame):
    """Labels of one ACES task on ``events`` (columns of :data:`LABEL_COLUMNS`)."""
    cfg = load_config(task, probe_file)
    raw = run_aces(cfg, events)
    if raw.empty:
        return pd.DataFrame(columns=LABEL_COLUMNS)
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
        }
    )
    out["horizon_days"] = out["horizon_days"].astype("int64")
    return out.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)[LABEL_COLUMNS]


def cohort_aces_labels(project: Project, cohort: str, events: pd.DataFrame, subjects: pd.DataFrame, log=None):
    """Labels of every ACES task declared for ``cohort`` (a union: on the members each task names)."""
    frames = []
    union = project.cohorts[cohort].is_union
    for task in project.tasks_for(cohort):
        if task.kind != "aces":
            continue
        ev = events[events["source_cohort"].isin(task.cohorts)] if union else events
        lab = aces_task_labels(task, project.root / "probes" / f"{task.name}.yaml", ev, subjects)
        if log is not None:
            log(f"ACES task {task.name}: {len(lab)} rows, {int(lab['boolean_value'].sum())} positive")
        frames.append(lab)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LABEL_COLUMNS)


def aces_nodes(labels: pd.DataFrame) -> pd.DataFrame:
    """The distinct prediction times of ACES labels, as nodes (subject_id, prediction_time, split, source_cohort)."""
    cols = ["subject_id", "prediction_time", "split", "source_cohort"]
    nodes = labels[cols].drop_duplicates(["subject_id", "prediction_time"])
    return nodes.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)


def label_window_violations(labels: pd.DataFrame, start_inclusive: dict[str, bool]) -> pd.DataFrame:
    """ACES rows whose label window starts before the prediction time, or at it and includes that instant: the
    label would count events the model may read. ``start_inclusive``: per task, whether its label window's start is
    inclusive."""
    incl = labels["task"].map(start_inclusive).fillna(True).astype(bool)
    start, pt = labels["outcome_time"], labels["prediction_time"]
    return labels[start.isna() | (start < pt) | ((start == pt) & incl)]
