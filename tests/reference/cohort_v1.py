"""Reference: the label and decision-node code the package used before the columnar rewrite (per-node searches in
Python), verbatim apart from imports. ``tests/data/test_columnar_equivalence.py`` proves the new code gives the same
rows on a seeded synthetic cohort."""

import re

import numpy as np
import pandas as pd
from meds import death_code

from ehr_assets.constants import STOP_SUFFIX, US_PER_DAY
from ehr_assets.data.labels import DAY, LABEL_COLUMNS
from ehr_assets.specs import DecisionNodeRule, ProbeSpec


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


def _outcome_times(events: pd.DataFrame, codes: list[str]) -> pd.Series:
    """Sorted outcome-event times per subject (a numpy datetime64[us] array per subject_id)."""
    pattern = re.compile("|".join(f"(?:{p})" for p in codes))
    uniq = pd.Series(events["code"].unique())
    hit = set(uniq[uniq.map(lambda c: pattern.fullmatch(c) is not None)])
    out_ev = events.loc[events["code"].isin(hit), ["subject_id", "time"]].sort_values(["subject_id", "time"])
    return out_ev.groupby("subject_id")["time"].apply(lambda s: s.to_numpy().astype("datetime64[us]"))


def _first_outcome_after(
    events: pd.DataFrame, nodes: pd.DataFrame, codes: list[str], blanking_days: int = 0
) -> pd.Series:
    """Time of the first outcome event strictly after each node's prediction_time + ``blanking_days`` (NaT if none)."""
    by_subj = _outcome_times(events, codes)
    result = np.full(len(nodes), np.datetime64("NaT"), dtype="datetime64[us]")
    blank = np.timedelta64(int(blanking_days) * US_PER_DAY, "us")
    starts = nodes["prediction_time"].to_numpy().astype("datetime64[us]") + blank
    for i, (s, t) in enumerate(zip(nodes["subject_id"].to_numpy(), starts)):
        arr = by_subj.get(s)
        if arr is not None:
            j = arr.searchsorted(t, side="right")
            if j < len(arr):
                result[i] = arr[j]
    return pd.Series(result, index=nodes.index)


def _outcome_at_or_before(events: pd.DataFrame, nodes: pd.DataFrame, codes: list[str]) -> pd.Series:
    """True where the subject has an outcome event at or before the node's prediction_time (in its context)."""
    first = pd.Series({s: a[0] for s, a in _outcome_times(events, codes).items()}, dtype="datetime64[us]")
    t_first = pd.Series(first.reindex(nodes["subject_id"].to_numpy()).to_numpy(), index=nodes.index)  # NaT: none
    return t_first.notna() & (t_first <= nodes["prediction_time"].astype("datetime64[us]"))


def task_labels(task: ProbeSpec, nodes: pd.DataFrame, events: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    """Labels of one task family (all its horizons) at ``nodes``."""
    if nodes.empty:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    if task.exclude_prior:
        nodes = nodes[~_outcome_at_or_before(events, nodes, task.outcome_codes)]
        if nodes.empty:
            return pd.DataFrame(columns=LABEL_COLUMNS)
    end = nodes["subject_id"].map(subjects.set_index("subject_id")["last_time"])
    outcome = _first_outcome_after(events, nodes, task.outcome_codes, task.blanking_days)
    pt = nodes["prediction_time"]
    base = nodes[["subject_id", "prediction_time", "split", "source_cohort"]].assign(
        task=task.name, outcome_time=outcome
    )
    frames = []
    if task.kind == "binary":
        for h in task.horizons_days:
            horizon_end = pt + h * DAY
            event = outcome.notna() & (outcome <= horizon_end)
            observed = event | (end >= horizon_end)
            frames.append(base[observed].assign(boolean_value=event[observed], float_value=np.nan, horizon_days=h))
    else:
        cap = pt + task.max_followup_days * DAY if task.max_followup_days else pd.Series(pd.NaT, index=pt.index)
        stop = end.where(cap.isna() | (end <= cap), cap)
        event = outcome.notna() & (outcome <= stop)
        t_end = outcome.where(event, stop)
        days = (t_end - pt) / DAY
        keep = days > 0
        frames.append(
            base[keep].assign(boolean_value=event[keep], float_value=days[keep].astype("float32"), horizon_days=0)
        )
    out = pd.concat(frames, ignore_index=True)
    out["boolean_value"] = out["boolean_value"].astype(bool)
    out["float_value"] = out["float_value"].astype("float32")
    out["horizon_days"] = out["horizon_days"].astype("int64")
    return out[LABEL_COLUMNS]
