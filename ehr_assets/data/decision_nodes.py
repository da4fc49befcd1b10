"""Decision-node stage: the moments along each trajectory where a prediction is made.

A node is an event whose code full-matches one of the cohort's declared patterns (for a union cohort, each member's
own rule applies to its subjects). Its ``prediction_time`` is the event's time and, as in MEDS, the inclusive end of
the data a model may use. A node needs at least ``min_context_events`` events at or before it and must precede the
subject's death; at most ``max_per_subject`` nodes (the earliest) are kept per subject. An end-of-interval event
(a code ending in ``/STOP``, e.g. a cBioPortal treatment's stop day) is a node only when a pattern that contains
``STOP`` matches it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from meds import death_code

from ..constants import STOP_SUFFIX
from ..specs import DecisionNodeRule, Project

NODE_COLUMNS = ["subject_id", "prediction_time", "node_code", "node_index", "split", "source_cohort"]


def _events_up_to(sid: np.ndarray, t: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For every row: how many events of its subject are at or before its time (rows in ``order`` are sorted by
    subject and time). The count ends at the last row of the row's (subject, time) run."""
    s, tt = sid[order], t[order]
    n = len(s)
    new_subject = np.r_[True, s[1:] != s[:-1]] if n else np.zeros(0, bool)
    run_end = np.r_[(s[1:] != s[:-1]) | (tt[1:] != tt[:-1]), True] if n else np.zeros(0, bool)
    first_row = np.maximum.accumulate(np.where(new_subject, np.arange(n), 0))
    last_of_run = np.minimum.accumulate(np.where(run_end, np.arange(n), n)[::-1])[::-1]
    out = np.empty(n, dtype=np.int64)
    out[order] = last_of_run - first_row + 1
    return out


def find_nodes(events: pd.DataFrame, rule: DecisionNodeRule) -> pd.DataFrame:
    """Nodes of one member cohort's events (sorted by subject, time) under ``rule``."""
    pattern = re.compile("|".join(f"(?:{p})" for p in rule.codes))
    code_idx, codes = pd.factorize(events["code"])
    # an end-of-interval event (``<code>/STOP``) is a node only when a pattern that spells STOP asks for it
    asked = re.compile("|".join(f"(?:{p})" for p in rule.codes if STOP_SUFFIX.strip("/") in p) or "(?!)")
    matches = np.fromiter(
        (
            pattern.fullmatch(c) is not None and (not c.endswith(STOP_SUFFIX) or asked.fullmatch(c) is not None)
            for c in map(str, codes)
        ),
        dtype=bool,
        count=len(codes),
    )
    hit = np.append(matches, False)[code_idx]
    ev = events[["subject_id", "time", "code"]].reset_index(drop=True)  # index = row position
    hits = ev[hit]
    if rule.first_occurrence_only:
        hits = hits.drop_duplicates(["subject_id", "code"], keep="first")
    # one node per (subject, time): the first matching code in row order names it
    hits = hits.drop_duplicates(["subject_id", "time"], keep="first")
    if hits.empty:
        return pd.DataFrame(columns=["subject_id", "prediction_time", "node_code"])

    # events at or before each node (inclusive): the end of its (subject, time) run, counted from the subject's start
    sid = ev["subject_id"].to_numpy(dtype=np.int64)
    t = ev["time"].to_numpy().astype("datetime64[us]").view(np.int64)
    order = np.lexsort((t, sid))
    n_context = _events_up_to(sid, t, order)[hits.index.to_numpy()]
    hits = hits.assign(n_context=n_context)
    death = ev.loc[ev["code"] == death_code].groupby("subject_id")["time"].min()  # empty when nobody died
    death_at = death.reindex(hits["subject_id"].to_numpy()).to_numpy(dtype="datetime64[us]")
    alive = ~(death_at <= hits["time"].to_numpy(dtype="datetime64[us]"))
    hits = hits[(hits["n_context"] >= rule.min_context_events) & alive]
    hits = hits.sort_values(["subject_id", "time"], kind="stable").groupby("subject_id").head(rule.max_per_subject)
    return hits.rename(columns={"time": "prediction_time", "code": "node_code"})[
        ["subject_id", "prediction_time", "node_code"]
    ]


def decision_nodes(project: Project, cohort: str, events: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    """Nodes of ``cohort`` (each member under its own rule) with their split, numbered per subject in time order."""
    frames = []
    for member in project.members(cohort):
        rule = project.cohorts[member].decision_nodes
        frames.append(find_nodes(events[events["source_cohort"] == member], rule))
    nodes = pd.concat(frames, ignore_index=True)
    nodes = nodes.merge(subjects[["subject_id", "split", "source_cohort"]], on="subject_id", how="left")
    nodes = nodes.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)
    nodes["node_index"] = nodes.groupby("subject_id").cumcount().astype("int64")
    nodes["prediction_time"] = nodes["prediction_time"].astype("datetime64[us]")
    return nodes[NODE_COLUMNS]
