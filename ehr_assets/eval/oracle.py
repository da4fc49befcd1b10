"""Oracle stage: the true hidden state at each decision node, the ceiling every encoder is measured against.

A synthetic cohort's simulator (:mod:`ehr_assets.synthetic`) records its hidden state (``burden``, ``growth_rate``,
``reserve``, ``treatment_sensitivity``, ``on_treatment``, ``clot_load``) in a side table, one row per visit or time
step. :func:`cohort_latent` rebuilds that table for a cohort partition (the generator is a pure function of its
declared profile, size and seed, so the rows belong to exactly the subjects of ``cohort_events``); the Dagster asset
``cohort_latent`` stores it, and only the oracle probe assets read it -- no model asset depends on it (a test
checks the graph).

The oracle is the *same* probe as for a recipe (:func:`ehr_assets.eval.probe_metrics.evaluate`) with the latent
snapshot at the node as its features: :func:`latent_at_nodes` takes each node's last latent row at or before its
prediction time (MEDS ``prediction_time`` is inclusive). :data:`ORACLES` declares the variants: ``oracle`` reads the
whole state; ``oracle_no_rate`` drops ``growth_rate`` -- the rate a single snapshot does not show but a trajectory
does -- so the distance between the two measures how much a task needs the trajectory.

Real sources (MEDS, cBioPortal, ...) have no hidden state: :func:`oracle_unavailable` says why, the assets then
write no rows and record the reason, and the benchmark leaves the oracle column empty.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..specs import Project
from ..synthetic import LATENT_COLUMNS, generate

__all__ = [
    "LATENT_TABLE_COLUMNS",
    "ORACLES",
    "cohort_latent",
    "latent_at_nodes",
    "oracle_features",
    "oracle_unavailable",
]

LATENT_TABLE_COLUMNS = ["subject_id", "time", *LATENT_COLUMNS, "source_cohort"]
# oracle variant -> latent columns it reads
ORACLES: dict[str, list[str]] = {
    "oracle": list(LATENT_COLUMNS),
    "oracle_no_rate": [c for c in LATENT_COLUMNS if c != "growth_rate"],
}


def oracle_unavailable(project: Project, cohort: str) -> str:
    """Why ``cohort`` has no latent state ('' when every member is synthetic and it has one)."""
    missing = []
    for member in project.members(cohort):
        kind = getattr(project.cohorts[member].source, "kind", None)
        if kind != "synthetic":
            missing.append(f"{member!r} (source kind {kind!r})")
    if not missing:
        return ""
    return (
        f"cohort {cohort!r}: no oracle -- only synthetic sources have a hidden state, and member(s) "
        f"{', '.join(missing)} are not synthetic"
    )


def cohort_latent(project: Project, cohort: str) -> pd.DataFrame:
    """The hidden-state rows of every member of ``cohort`` (columns :data:`LATENT_TABLE_COLUMNS`, sorted by subject
    and time); an empty frame with those columns when :func:`oracle_unavailable` says there is none."""
    if oracle_unavailable(project, cohort):
        return _empty()
    frames = []
    for member in project.members(cohort):
        src = project.cohorts[member].source
        frames.append(generate(src.profile, src.subjects, src.seed, src.id_start).latent.assign(source_cohort=member))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)[LATENT_TABLE_COLUMNS]


def _empty() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype="float64") for c in LATENT_TABLE_COLUMNS})
    return out.astype({"subject_id": "int64", "time": "datetime64[us]", "source_cohort": object})


def latent_at_nodes(latent: pd.DataFrame, nodes: pd.DataFrame) -> pd.DataFrame:
    """The latent row in effect at each node: the subject's last row with ``time <= prediction_time``. One row per
    node, in the order of ``nodes`` (its index reset), with the latent columns and ``latent_time``. A node with no
    latent row at or before it is an error naming the subject (the table does not belong to these nodes)."""
    if nodes.empty:
        return pd.DataFrame(columns=["subject_id", "prediction_time", "latent_time", *LATENT_COLUMNS])
    missing = [c for c in ("subject_id", "time", *LATENT_COLUMNS) if c not in latent.columns]
    if missing:
        raise ValueError(f"latent table lacks column(s) {missing}")
    left = nodes[["subject_id", "prediction_time"]].reset_index(drop=True)
    left = left.assign(_row=np.arange(len(left)), prediction_time=left["prediction_time"].astype("datetime64[us]"))
    right = latent[["subject_id", "time", *LATENT_COLUMNS]].rename(columns={"time": "latent_time"})
    right = right.assign(latent_time=right["latent_time"].astype("datetime64[us]"))
    snap = pd.merge_asof(
        left.sort_values("prediction_time", kind="stable"),
        right.sort_values("latent_time", kind="stable"),
        left_on="prediction_time",
        right_on="latent_time",
        by="subject_id",
        direction="backward",
        allow_exact_matches=True,
    )
    snap = snap.sort_values("_row").drop(columns="_row").reset_index(drop=True)
    lost = snap["latent_time"].isna()
    if lost.any():
        first = snap.loc[lost].iloc[0]
        raise ValueError(
            f"{int(lost.sum())} decision node(s) have no latent row at or before their prediction time, e.g. "
            f"subject_id {int(first['subject_id'])} at {first['prediction_time']}: the latent table does not "
            "belong to this cohort's events"
        )
    return snap[["subject_id", "prediction_time", "latent_time", *LATENT_COLUMNS]]


def oracle_features(snapshot: pd.DataFrame, variant: str = "oracle") -> np.ndarray:
    """The feature matrix of oracle ``variant`` (a key of :data:`ORACLES`) from :func:`latent_at_nodes` rows."""
    if variant not in ORACLES:
        raise ValueError(f"unknown oracle variant {variant!r}; known: {sorted(ORACLES)}")
    return snapshot[ORACLES[variant]].to_numpy(dtype=np.float64)
