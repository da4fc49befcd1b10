"""Cohort stage: read a cohort's source into MEDS events, validate them, assign subject splits.

``cohort_events`` holds the events as the source delivers them (MEDS DataSchema plus the optional ``table`` and
``unit`` columns). ``cohort_table`` is the validated copy every later stage reads (pandera schema below), and
``subjects`` has one row per subject with its split and follow-up window.

**Repeated rows** (identical in every column, extras included: the same code with the same value at the same time
twice, which MEDS allows and real extracts contain) are collapsed into one row when the source is read
(:func:`collapse_repeated_rows`); the number collapsed is the ``repeated_rows_collapsed`` entry of the member's
``source[...]`` report. A repeat carries no information the text or a label could use, and counting it twice
would double a value in the serialized text. Rows that differ in any column (e.g. two values of one lab at one
time) are all kept.

**Events after death.** Real extracts record a death by day (MIMIC-IV's ``dod`` is a date, so ``MEDS_DEATH`` sits at
midnight) or chart results and stopped infusions after the recorded time. What happens to events later than a
subject's first ``MEDS_DEATH`` is the member cohort's declared ``events_after_death``
(:func:`apply_death_policy`, counted in its ``source[...]`` report):

* ``clip`` (default): the death is known to the day. A subject whose events continue later on the death's calendar
  day gets its ``MEDS_DEATH`` row(s) moved to the end of that day (23:59:59.999999), after those events; events on
  later days are dropped. Nothing is left after the death.
* ``drop``: every event after the death is dropped.
* ``keep``: the events stay where they are; the cohort rule ``no_event_after_death`` is waived for the member, and
  the later stages end every subject's follow-up at the death: no decision node at or after it
  (:mod:`.decision_nodes`), no outcome and no follow-up after it (:mod:`.labels`).
* ``error``: the cohort is refused (rule ``no_event_after_death``), naming the subjects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
from meds import DataSchema, birth_code, death_code, held_out_split, train_split, tuning_split

from ..constants import EXTRA_COLUMNS, MEDS_COLUMNS, SPLITS
from ..specs import Project, Splits
from .sources import read_source


class CohortDataError(ValueError):
    """The cohort's data break a rule; the message names the cohort, the column and the rule."""


# ---------------------------------------------------------------------------------------------------------- sources
def cohort_events(project: Project, cohort: str) -> pd.DataFrame:
    """Events of ``cohort`` (a union concatenates its members) with ``source_cohort`` recording each row's member."""
    return cohort_source(project, cohort)[0]


def cohort_source(project: Project, cohort: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(events, source splits, reports): the events of :func:`cohort_events`; the splits the members' sources ship
    (``subject_id, split, source_cohort``; empty when none does); one source report per member."""
    frames, split_frames, reports = [], [], {}
    seen: dict[int, str] = {}
    for member in project.members(cohort):
        data = read_source(project.cohorts[member])
        ev = data.events
        ids = pd.unique(ev["subject_id"])
        clash = [i for i in ids[:] if i in seen] if seen else []
        if clash:
            raise CohortDataError(
                f"cohort {cohort!r}: {len(clash)} subject_id(s) of {member!r} also occur in {seen[clash[0]]!r} "
                f"(e.g. subject_id {clash[0]}); give the members disjoint id ranges"
            )
        seen.update(dict.fromkeys(ids.tolist(), member))
        ev, death_report = apply_death_policy(ev, project.cohorts[member].after_death)
        ev, n_repeated = collapse_repeated_rows(ev)
        frames.append(ev.assign(source_cohort=member))
        if data.splits is not None:
            split_frames.append(data.splits[["subject_id", "split"]].assign(source_cohort=member))
        reports[member] = {**data.report, "repeated_rows_collapsed": n_repeated, **death_report}
    events = pd.concat(frames, ignore_index=True)
    for col in EXTRA_COLUMNS:
        if col not in events.columns:
            events[col] = None
    splits = (
        pd.concat(split_frames, ignore_index=True)
        if split_frames
        else pd.DataFrame(
            {
                "subject_id": pd.Series(dtype="int64"),
                "split": pd.Series(dtype=str),
                "source_cohort": pd.Series(dtype=str),
            }
        )
    )
    splits["subject_id"] = splits["subject_id"].astype("int64")
    return events, splits, reports


def apply_death_policy(events: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, dict]:
    """(events under ``policy`` for rows after each subject's first ``MEDS_DEATH``, report entries counting every
    affected row). The policies: module docstring. ``events`` needs ``subject_id``, ``time`` and ``code``."""
    report: dict = {"events_after_death": policy}
    if events.empty:
        return events, {**report, "rows_after_death": 0}
    time = pd.to_datetime(events["time"]).astype("datetime64[us]")
    death = death_times(events.assign(time=time))
    after = (death.notna() & (time > death)).to_numpy()
    report["rows_after_death"] = int(after.sum())
    report["subjects_with_rows_after_death"] = int(events.loc[after, "subject_id"].nunique())
    if not after.any() or policy in ("keep", "error"):
        return events, report
    if policy == "drop":
        report["rows_after_death_dropped"] = int(after.sum())
        return events[~after].reset_index(drop=True), report
    if policy != "clip":
        raise ValueError(f"events_after_death: unknown policy {policy!r}")
    day_end = death.dt.normalize() + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    later_day = after & (time > day_end).to_numpy()
    same_day = after & ~later_day
    moved_subjects = events.loc[same_day, "subject_id"].unique()
    move = (
        (events["code"] == death_code).to_numpy()
        & events["subject_id"].isin(moved_subjects).to_numpy()
        & (time <= day_end).to_numpy()
    )
    out = events.assign(time=time)
    out.loc[move, "time"] = day_end[move]
    report["rows_after_death_same_day_kept"] = int(same_day.sum())
    report["deaths_moved_to_end_of_day"] = int(len(moved_subjects))
    report["rows_after_death_day_dropped"] = int(later_day.sum())
    out = out[~later_day].sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)
    return out, report


def keeps_events_after_death(project: Project, cohort: str) -> list[str]:
    """The members of ``cohort`` that declare ``events_after_death: keep`` (the rule is waived for their rows)."""
    return [m for m in project.members(cohort) if project.cohorts[m].after_death == "keep"]


def collapse_repeated_rows(events: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(events with each set of identical rows kept once, first in order; the number of rows dropped). Values that
    pandas cannot hash (lists, dicts in an extra column) are compared by their text."""
    key = events
    unhashable = [c for c in events.columns if events[c].dtype == object and _unhashable(events[c])]
    if unhashable:
        key = events.assign(**{c: events[c].map(repr) for c in unhashable})
    repeated = key.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return events, 0
    return events[~repeated].reset_index(drop=True), int(repeated.sum())


def _unhashable(col: pd.Series) -> bool:
    v = col.dropna()
    return len(v) > 0 and isinstance(v.iloc[0], list | dict | set | np.ndarray)


# ------------------------------------------------------------------------------------------------------ validation
def meds_violations(events: pd.DataFrame) -> list[str]:
    """Problems with the MEDS DataSchema, from the ``meds`` package's own validator (empty list: valid)."""
    missing = [c for c in ("subject_id", "time", "code") if c not in events.columns]
    if missing:
        return [f"missing required MEDS column(s): {missing}"]
    cols = [c for c in MEDS_COLUMNS if c in events.columns]
    try:
        table = pa_arrow.Table.from_pandas(events[cols], preserve_index=False)
        DataSchema.validate(DataSchema.align(table))
    except Exception as e:  # the meds package raises plain exceptions with a useful message
        return [f"{type(e).__name__}: {e}"]
    return []


def death_times(events: pd.DataFrame) -> pd.Series:
    """Each row's subject's first ``MEDS_DEATH`` time (NaT without one; a cohort without any death is fine)."""
    death = events.loc[events["code"] == death_code].groupby("subject_id")["time"].min()
    limit = death.reindex(events["subject_id"].to_numpy()).to_numpy(dtype="datetime64[us]")
    return pd.Series(limit, index=events.index)


def _no_event_after_death(df: pd.DataFrame, waived: tuple[str, ...] = ()) -> pd.Series:
    limit = death_times(df)
    ok = ~(limit.notna() & (df["time"] > limit))
    return ok | df["source_cohort"].isin(waived) if waived else ok


def events_schema(keep_after_death: tuple[str, ...] = ()) -> pa.DataFrameSchema:
    """:data:`EVENTS_SCHEMA` with ``no_event_after_death`` waived for the rows of the members in
    ``keep_after_death`` (those that declare ``events_after_death: keep``)."""
    if not keep_after_death:
        return EVENTS_SCHEMA
    death = pa.Check(lambda df: _no_event_after_death(df, keep_after_death), name="no_event_after_death")
    return pa.DataFrameSchema(
        EVENTS_SCHEMA.columns,
        checks=[death, *[c for c in EVENTS_SCHEMA.checks if c.name != "no_event_after_death"]],
        strict=False,
        coerce=False,
    )


EVENTS_SCHEMA = pa.DataFrameSchema(
    {
        "subject_id": pa.Column("int64", nullable=False),
        "time": pa.Column("datetime64[us]", nullable=False),
        "code": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
        "numeric_value": pa.Column(
            "float32", pa.Check(lambda s: np.isfinite(s) | s.isna(), name="finite"), nullable=True
        ),
        "text_value": pa.Column(object, nullable=True),
        "table": pa.Column(object, nullable=True),
        "unit": pa.Column(object, nullable=True),
        "source_cohort": pa.Column(str, nullable=False),
    },
    checks=[
        pa.Check(_no_event_after_death, name="no_event_after_death"),
        pa.Check(lambda df: ~df.duplicated(), name="no_duplicate_rows"),
    ],
    strict=False,
    coerce=False,
)


def format_failures(
    err: pa.errors.SchemaErrors, df: pd.DataFrame | None = None, limit: int = 20, examples: int = 5
) -> str:
    """A markdown table of pandera's failure cases: check, columns, failing rows and, when ``df`` (the validated
    frame) is given, the first few subject_ids concerned, so the data can be fixed. No event content is shown."""
    fc = err.failure_cases.copy()
    fc["column"] = fc["column"].fillna("(row)").astype(str)
    fc["check"] = fc["check"].astype(str)
    summary = (
        fc.groupby("check", dropna=False)
        .agg(
            columns=("column", lambda c: ", ".join(sorted(set(c)))),
            rows=("index", "nunique"),
            index=("index", lambda i: sorted({int(x) for x in i if x is not None and x == x})),
        )
        .reset_index()
        .head(limit)
    )
    with_ids = df is not None and "subject_id" in df.columns
    lines = [
        "| check | columns | failing rows |" + (" subjects (first) |" if with_ids else ""),
        "|---|---|---|" + ("---|" if with_ids else ""),
    ]
    for r in summary.itertuples():
        line = f"| {r.check} | {r.columns} | {r.rows} |"
        if with_ids:
            line += f" {subjects_named(df.loc[[i for i in r.index if i in df.index]], examples)} |"
        lines.append(line)
    return "\n".join(lines)


def subjects_named(rows: pd.DataFrame, examples: int = 5) -> str:
    """The first few subjects of ``rows`` as a user knows them: ``PATIENT_ID ...`` for a cBioPortal source (the
    ``subject_id`` is only a hash of it), else ``subject_id ...``; empty for no rows."""
    if "patient_id" in rows.columns and rows["patient_id"].notna().any():
        names = list(dict.fromkeys(str(x) for x in rows["patient_id"].dropna()))[:examples]
        return f"PATIENT_ID {', '.join(names)}"
    ids = list(dict.fromkeys(int(x) for x in rows["subject_id"]))[:examples]
    return f"subject_id {', '.join(map(str, ids))}" if ids else ""


def validate_events(events: pd.DataFrame, cohort: str, keep_after_death: Sequence[str] = ()) -> pd.DataFrame:
    """Coerce to the cohort-table dtypes and validate; raise :class:`CohortDataError` listing every failed rule.
    ``keep_after_death``: members whose rows may follow their subject's death (:func:`keeps_events_after_death`)."""
    df = events.copy()
    missing = [c for c in ("subject_id", "time", "code") if c not in df.columns]
    if missing:
        raise CohortDataError(f"cohort {cohort!r}: events lack required column(s) {missing}")
    if df["time"].isna().any():
        # MEDS static rows (null time) carry no position on the timeline; this project needs every event placed.
        raise CohortDataError(
            f"cohort {cohort!r}: column 'time' has {int(df['time'].isna().sum())} null value(s); "
            "static rows are not supported yet"
        )
    try:
        df["subject_id"] = df["subject_id"].astype("int64")
        df["time"] = pd.to_datetime(df["time"]).astype("datetime64[us]")
        if "numeric_value" not in df:
            df["numeric_value"] = np.nan
        if df["numeric_value"].dtype == object:
            raise CohortDataError(
                f"cohort {cohort!r}: column 'numeric_value' holds non-numeric values (dtype object); "
                "numbers must be numeric, text goes in 'text_value'"
            )
        df["numeric_value"] = df["numeric_value"].astype("float32")
    except (TypeError, ValueError) as e:
        if isinstance(e, CohortDataError):
            raise
        raise CohortDataError(f"cohort {cohort!r}: cannot coerce event columns: {e}") from None
    for col in ("text_value", "table", "unit"):
        if col not in df:
            df[col] = None
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    df["code"] = df["code"].astype(str)
    df["source_cohort"] = df.get("source_cohort", cohort)
    try:
        events_schema(tuple(keep_after_death)).validate(df, lazy=True)
    except pa.errors.SchemaErrors as e:
        hint = ""
        if (e.failure_cases["check"].astype(str) == "no_event_after_death").any():
            hint = (
                "\nevents after MEDS_DEATH: declare events_after_death (clip, drop or keep) in the "
                "cohort's YAML (docs/how-to/real-ehr.md)"
            )
        raise CohortDataError(f"cohort {cohort!r}: events failed validation:\n{format_failures(e, df)}{hint}") from None
    return df.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------- splits
def assign_splits(subject_ids: np.ndarray, fractions: dict[str, float], seed: int) -> pd.DataFrame:
    """Deterministic random split of subjects (independent of row order)."""
    ids = np.sort(np.unique(np.asarray(subject_ids, dtype=np.int64)))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ids))
    n_train = int(round(fractions[train_split] * len(ids)))
    n_tune = int(round(fractions[tuning_split] * len(ids)))
    split = np.empty(len(ids), dtype=object)
    split[perm[:n_train]] = train_split
    split[perm[n_train : n_train + n_tune]] = tuning_split
    split[perm[n_train + n_tune :]] = held_out_split
    return pd.DataFrame({"subject_id": ids, "split": split})


def subjects_table(
    project: Project, cohort: str, events: pd.DataFrame, source_splits: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per subject: split, member cohort and follow-up window. A member whose source ships splits
    (``source_splits`` rows with its ``source_cohort``, e.g. a MEDS ``subject_splits.parquet``) keeps them; the
    others are split by their declared fractions and seed."""
    parts = [_member_splits(project, cohort, member, events, source_splits) for member in project.members(cohort)]
    subj = pd.concat(parts, ignore_index=True)
    out = subj.merge(_followup_window(events), left_on="subject_id", right_index=True, how="left")
    return out.sort_values("subject_id").reset_index(drop=True)


def _member_splits(
    project: Project, cohort: str, member: str, events: pd.DataFrame, source_splits: pd.DataFrame | None
) -> pd.DataFrame:
    """``subject_id, split, source_cohort`` of one member's subjects: the splits its source shipped, else seeded."""
    s = project.cohorts[member].splits or Splits()
    ids = events.loc[events["source_cohort"] == member, "subject_id"].unique()
    shipped = None
    if source_splits is not None and len(source_splits):
        shipped = source_splits[source_splits["source_cohort"] == member]
    if shipped is not None and len(shipped):
        split = shipped.set_index("subject_id")["split"]
        missing = [i for i in ids if i not in split.index]
        if missing:
            raise CohortDataError(
                f"cohort {cohort!r}: {len(missing)} subject(s) of {member!r} have no shipped split "
                f"(e.g. subject_id {missing[0]})"
            )
        return pd.DataFrame({"subject_id": np.sort(ids).astype("int64")}).assign(
            split=lambda d: d["subject_id"].map(split).astype(object), source_cohort=member
        )
    frac = {train_split: s.train, tuning_split: s.tuning, held_out_split: s.held_out}
    return assign_splits(ids, frac, s.seed).assign(source_cohort=member)


def _followup_window(events: pd.DataFrame) -> pd.DataFrame:
    """Per subject_id (the index): first and last event time, event count, birth and death time (NaT if none)."""
    g = events.groupby("subject_id")
    window = pd.DataFrame(
        {
            "first_time": g["time"].min(),
            "last_time": g["time"].max(),
            "n_events": g.size().astype("int64"),
        }
    )
    births = events.loc[events["code"] == birth_code].groupby("subject_id")["time"].min().rename("birth_time")
    deaths = events.loc[events["code"] == death_code].groupby("subject_id")["time"].min().rename("death_time")
    return window.join(births).join(deaths)


def split_violations(subjects: pd.DataFrame) -> list[str]:
    """Subjects listed twice (possibly in two splits) or with an unknown split."""
    problems = []
    dup = subjects["subject_id"].duplicated(keep=False)
    if dup.any():
        n_two = subjects.loc[dup].groupby("subject_id")["split"].nunique().gt(1).sum()
        problems.append(f"{int(dup.sum())} rows for repeated subject_ids; {int(n_two)} subject(s) in two splits")
    bad = ~subjects["split"].isin(SPLITS)
    if bad.any():
        problems.append(f"{int(bad.sum())} rows with a split outside {list(SPLITS)}")
    return problems
