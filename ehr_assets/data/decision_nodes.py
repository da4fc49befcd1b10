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

import pandas as pd
from meds import death_code

from ..constants import STOP_SUFFIX
from ..specs import DecisionNodeRule, Project

NODE_COLUMNS = ["subject_id", "prediction_time", "node_code", "node_index", "split", "source_cohort"]


def find_nodes(events: pd.DataFrame, rule: DecisionNodeRule) -> pd.DataFrame:
    """Nodes of one member cohort's events (sorted by subject, time) under ``rule``."""
    pattern = re.compile("|".join(f"(?:{p})" for p in rule.codes))
    codes = pd.Series(events["code"].unique())
    hit_codes = set(codes[codes.map(lambda c: pattern.fullmatch(c) is not None)])
    # an end-of-interval event (``<code>/STOP``) is a node only when a pattern that spells STOP asks for it
    asked = re.compile("|".join(f"(?:{p})" for p in rule.codes if STOP_SUFFIX.strip("/") in p) or "(?!)")
    hit_codes = {c for c in hit_codes if not c.endswith(STOP_SUFFIX) or asked.fullmatch(c)}
    ev = events[["subject_id", "time", "code"]]
    hits = ev[ev["code"].isin(hit_codes)]
    if rule.first_occurrence_only:
        hits = hits.drop_duplicates(["subject_id", "code"], keep="first")
    # one node per (subject, time): the first matching code in row order names it
    hits = hits.drop_duplicates(["subject_id", "time"], keep="first")
    if hits.empty:
        return pd.DataFrame(columns=["subject_id", "prediction_time", "node_code"])

    # events at or before each node (inclusive), counted with a sorted search per subject
    times = ev.groupby("subject_id")["time"].apply(lambda s: s.to_numpy())
    n_context = [
        int(times[s].searchsorted(t.to_datetime64(), side="right")) for s, t in zip(hits["subject_id"], hits["time"])
    ]
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
