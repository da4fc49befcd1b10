"""Label stage: task labels at decision nodes, in the MEDS label schema.

Binary task (per horizon h): ``boolean_value`` is True when an outcome event falls in ``(prediction_time,
prediction_time + h]``; False when the subject's follow-up (last recorded event, death included) reaches
``prediction_time + h`` without one; a node whose follow-up ends earlier without the event is excluded (censored).

Survival task (MEDS has no time-to-event label type yet): ``boolean_value`` = event observed, ``float_value`` = days
from ``prediction_time`` to the first outcome event, or to the end of follow-up when censored (capped at
``max_followup_days``, which also censors). Rows with no follow-up after the node are excluded.

Outcomes are looked up strictly after ``prediction_time``; nothing in the context window can set a label.
Follow-up ends at the subject's death when it has one (``death_time`` of the subjects table): an event recorded after
the death (a cohort that declares ``events_after_death: keep``) neither extends follow-up nor counts as an outcome.
Two optional task keys narrow what counts: ``blanking_days`` ignores outcomes in ``(prediction_time,
prediction_time + blanking_days]`` (e.g. the index episode's own diagnosis, so that only a *recurrence* counts;
follow-up and survival times are still measured from ``prediction_time``), and ``exclude_prior`` drops nodes whose
context already holds an outcome event (an *incident* outcome task: a prevalent condition is no prediction).
Extra columns: ``task``, ``horizon_days`` (0 for survival), ``split``, ``source_cohort``, ``outcome_time``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..constants import US_PER_DAY
from ..specs import ProbeSpec, Project

LABEL_COLUMNS = [
    "subject_id",
    "prediction_time",
    "boolean_value",
    "float_value",
    "task",
    "horizon_days",
    "split",
    "source_cohort",
    "outcome_time",
]
DAY = pd.Timedelta(days=1)


class OutcomeIndex:
    """The events of a cohort as the label stage searches them: codes factorized once, so that a task's outcome
    events are one regex match per distinct code and one mask, not a string comparison per event and task."""

    def __init__(self, events: pd.DataFrame):
        idx, uniq = pd.factorize(events["code"])
        self.code_idx = np.asarray(idx, dtype=np.int64)
        self.codes = pd.Index(uniq).astype(str)
        self.subject_id = events["subject_id"].to_numpy(dtype=np.int64)
        self.time = events["time"].to_numpy().astype("datetime64[us]")

    def matching(self, patterns: list[str]) -> np.ndarray:
        """Per distinct code, whether it full-matches one of ``patterns``."""
        pattern = re.compile("|".join(f"(?:{p})" for p in patterns))
        return np.fromiter((pattern.fullmatch(c) is not None for c in self.codes), dtype=bool, count=len(self.codes))

    def outcomes(self, patterns: list[str]) -> pd.DataFrame:
        """``subject_id, time`` of the events whose code matches ``patterns``, sorted by time."""
        hit = self.matching(patterns)[self.code_idx]
        out = pd.DataFrame({"subject_id": self.subject_id[hit], "time": self.time[hit]})
        return out.sort_values("time", kind="stable").reset_index(drop=True)


def _first_outcome_after(outcomes: pd.DataFrame, nodes: pd.DataFrame, blanking_days: int = 0) -> pd.Series:
    """Time of the first outcome event strictly after each node's prediction_time + ``blanking_days`` (NaT if none):
    one as-of join (forward, exact matches excluded) of all nodes against all outcome events."""
    start = nodes["prediction_time"].to_numpy().astype("datetime64[us]")
    start = start + np.timedelta64(int(blanking_days) * US_PER_DAY, "us")
    left = pd.DataFrame(
        {"subject_id": nodes["subject_id"].to_numpy(dtype=np.int64), "start": start, "_row": np.arange(len(nodes))}
    ).sort_values("start", kind="stable")
    right = outcomes.rename(columns={"time": "outcome"})
    joined = pd.merge_asof(
        left,
        right,
        left_on="start",
        right_on="outcome",
        by="subject_id",
        direction="forward",
        allow_exact_matches=False,
    )
    result = np.empty(len(nodes), dtype="datetime64[us]")
    result[joined["_row"].to_numpy()] = joined["outcome"].to_numpy().astype("datetime64[us]")
    return pd.Series(result, index=nodes.index)


def _outcome_at_or_before(outcomes: pd.DataFrame, nodes: pd.DataFrame) -> pd.Series:
    """True where the subject has an outcome event at or before the node's prediction_time (in its context)."""
    first = outcomes.groupby("subject_id")["time"].min()  # empty when no subject has the outcome
    t_first = pd.Series(first.reindex(nodes["subject_id"].to_numpy()).to_numpy(), index=nodes.index)  # NaT: none
    return t_first.notna() & (t_first <= nodes["prediction_time"].astype("datetime64[us]"))


def followup_end(nodes: pd.DataFrame, subjects: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(end of follow-up, death time) of each node's subject: the last recorded event, but never after the death
    (NaT death: none recorded, or a subjects table without ``death_time``)."""
    subj = subjects.set_index("subject_id")
    last = nodes["subject_id"].map(subj["last_time"]).astype("datetime64[us]")
    if "death_time" in subj.columns:
        death = nodes["subject_id"].map(subj["death_time"]).astype("datetime64[us]")
    else:
        death = pd.Series(pd.NaT, index=nodes.index, dtype="datetime64[us]")
    return last.where(~(last > death), death), death


def task_labels(
    task: ProbeSpec,
    nodes: pd.DataFrame,
    events: pd.DataFrame,
    subjects: pd.DataFrame,
    index: OutcomeIndex | None = None,
) -> pd.DataFrame:
    """Labels of one task family (all its horizons) at ``nodes`` (``index``: the events' :class:`OutcomeIndex`,
    built once per cohort by :func:`cohort_labels`)."""
    if nodes.empty:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    outcomes = (index or OutcomeIndex(events)).outcomes(task.outcome_codes)
    if task.exclude_prior:
        nodes = nodes[~_outcome_at_or_before(outcomes, nodes)]
        if nodes.empty:
            return pd.DataFrame(columns=LABEL_COLUMNS)
    end, death = followup_end(nodes, subjects)
    outcome = _first_outcome_after(outcomes, nodes, task.blanking_days)
    outcome = outcome.where(~(outcome > death))  # an outcome after the death (events_after_death: keep) is none
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


class LabelError(ValueError):
    """A task cannot be labelled on a cohort; the message names the probe file and the field."""


def check_outcomes_occur(
    project: Project, cohort: str, task: ProbeSpec, events: pd.DataFrame, index: OutcomeIndex | None = None
) -> None:
    """A task whose outcome codes match no event of the cohort is a declaration error (a typo, a code system the
    source does not use), not a task with no positives: refuse it, naming the probe file."""
    members = [m for m in project.members(cohort) if m in task.cohorts or cohort in task.cohorts]
    index = index or OutcomeIndex(events)
    hit = index.matching(task.outcome_codes)[index.code_idx]
    if "source_cohort" in events.columns:
        hit &= events["source_cohort"].isin(members).to_numpy()
    if not hit.any():
        raise LabelError(
            f"{project.root / 'probes' / (task.name + '.yaml')}: outcome_codes: no event of cohort {cohort!r} matches "
            f"{task.outcome_codes}; fix the codes or remove {cohort!r} from the task's cohorts"
        )


def cohort_labels(project: Project, cohort: str, nodes: pd.DataFrame, events: pd.DataFrame, subjects: pd.DataFrame):
    """Labels of every task declared for ``cohort``. In a union cohort a task covers the members that declare it.
    Each task is a few vectorized joins of all its nodes against its outcome events (:class:`OutcomeIndex`)."""
    frames = []
    union = project.cohorts[cohort].is_union
    index = OutcomeIndex(events)
    for task in project.tasks_for(cohort):
        if task.own_times:  # labelled by ACES or read from a label file (data.aces_tasks), at the task's own times
            continue
        check_outcomes_occur(project, cohort, task, events, index)
        task_nodes = nodes
        if union:
            task_nodes = nodes[nodes["source_cohort"].isin(task.cohorts)]
        frames.append(task_labels(task, task_nodes, events, subjects, index))
    if not frames:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    return pd.concat(frames, ignore_index=True)
