"""The ``smb_v1`` format: the plain-text layout the released SMB-v1 checkpoints read (the other format, ``delimited``,
lives in :mod:`ehr_assets.text.delimited`). The command that prints either for one subject::

    python -m ehr_assets.serialize --format smb_v1|delimited --meds-parquet FILE --subject ID [--end-time T]

``smb_v1`` layout (one subject; input = MEDS events with optional ``table`` and ``unit`` columns)
---------------------------------------------------------------------------------------------------
Events are sorted by (time, table) (pandas ``sort_values``: stable for two keys, a null table last). ``table`` values
map to categories (:data:`SMB_V1_CATEGORIES`, exact and case-sensitive); an event whose table is in no category is left
out (its day still gets its date line). The text is:

1. the demographics lines: every ``person`` row, formatted as a category (below);
2. when the subject has any non-person event: two empty lines (none when there are no demographics lines), then
   one block per calendar day in ascending order, blocks separated by one empty line; a block is the line
   ``[YYYY-MM-DD]`` followed by that day's lines, category by category in the order conditions, observations,
   measurements, procedures, drugs, death, notes;
3. inside a category, one line per code in first-seen order: ``Birth: YYYY-MM-DD`` (the code's first time) for a
   code containing ``birth`` in any case; ``CODE`` when none of the code's events that day has a value; else
   ``CODE (unit): v1, ..., v5`` with the last five values, a number as ``%.2f`` of the stored value (Python rounds
   the binary value half-to-even: 8.125 -> ``8.12``), else the text value as it is (an empty text is no value); the
   unit is the last shown value's (the line has no parentheses when it is empty). A line identical to an earlier
   line of the same category and day is dropped (e.g. two birth codes on one date).

**Without a ``table`` column** the text is what the released formatter prints for such data (``format_patient_history``
in ``standardmodelbio/smb-utils``, ``smb_utils/ehr_process.py``, which groups by category only when the category
column exists): no categories and no demographics section -- every event, ``MEDS_BIRTH`` and static rows
included, sits in its day's block, and each day lists all its codes in first-seen order (so ``Birth: YYYY-MM-DD``
is a line of the birth day's block, not a header). Events are sorted by time alone, ties kept in input order (the
released formatter's single-key quicksort leaves their order unspecified). A subject whose ``table`` is null on
every row is laid out the same way: the warehouse stores a null ``table`` for a source that has no such column, and
reading it as "no event in any category" would leave only date lines.

``end_time`` keeps events at or before it (what a model may read at a decision node);
``time_bins`` (the optional binned mode, with ``end_time``) replaces day blocks by ``YYYY-MM-DD - YYYY-MM-DD`` blocks,
each ``(days_back_start, days_back_end)`` covering ``(end_time - start, end_time - end]``, printed in the reverse of the
listed order (list the most recent bin first to print the oldest first); empty bins are left out.

In the pipeline (:func:`smb_v1_blocks`) a day that holds a decision node is split at the node's time into two blocks
with the same date line, so that each node's context is a prefix of the subject's text and equals
``smb_v1_text(events at or before the node)`` exactly (when two nodes share a day, the later node's context shows
that day as two blocks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

SMB_V1_CATEGORIES: dict[str, list[str]] = {
    "demographics": ["person"],
    "conditions": ["condition", "diagnosis", "condition_occurrence"],
    "observations": [
        "observation",
        "ed_out",
        "icu_discharge",
        "ed_registration",
        "hospital_admission",
        "icu_admission",
        "hospital_discharge",
    ],
    "measurements": [
        "measurement",
        "lab",
        "blood pressure sitting",
        "bmi",
        "bmi (kg/m2)",
        "blood pressure standing (1 min)",
        "egfr",
        "blood pressure",
        "height",
        "height (inches)",
        "weight",
        "blood pressure standing",
        "blood pressure lying",
        "subject_fluid_output",
        "blood pressure standing (3 mins)",
        "weight (lbs)",
    ],
    "procedures": ["procedure", "device_exposure", "procedure_occurrence"],
    "drugs": ["drug_exposure", "medication", "infusion_start", "infusion_end"],
    "death": ["death", "meds_death"],
    "notes": ["note"],
}
SMB_V1_ORDER = list(SMB_V1_CATEGORIES)
DEMOGRAPHIC_TABLES = ("person",)
MAX_VALUES = 5


# ------------------------------------------------------------------------------------------------------- pieces
def _value_str(num, text) -> str:
    """An event's shown value: a number as ``%.2f``, else the text value, else ``""`` (no value)."""
    if num is not None and not pd.isna(num):
        return f"{float(num):.2f}"
    if text is not None and not pd.isna(text):
        return str(text)
    return ""


def _unit_str(unit) -> str:
    return "" if unit is None or pd.isna(unit) else str(unit)


def _code_lines(rows: list[tuple], max_values: int = MAX_VALUES) -> list[str]:
    """Lines of one category (or of a whole day without categories). ``rows``: (code, time, num, text, unit) in
    sorted order."""
    groups: dict[object, list[tuple]] = {}
    for r in rows:
        groups.setdefault(r[0], []).append(r)
    lines: list[str] = []
    for code, items in groups.items():
        if "birth" in str(code).lower():
            lines.append(f"Birth: {pd.Timestamp(items[0][1]).strftime('%Y-%m-%d')}")
            continue
        values = [(v, _unit_str(u)) for _, _, n, t, u in items if (v := _value_str(n, t))]
        if values:
            recent = values[-max_values:]
            unit = recent[-1][1]
            lines.append(f"{code}{f' ({unit})' if unit else ''}: {', '.join(v for v, _ in recent)}")
        else:
            lines.append(str(code))
    seen: set[str] = set()
    return [x for x in lines if not (x in seen or seen.add(x))]


def _category_lines(rows: list[tuple], tables: list, has_table: bool) -> str:
    """The text of a set of events (sorted): category sections in order, or all codes when there is no table."""
    if not has_table:
        return "\n".join(_code_lines(rows))
    parts = []
    for cat in SMB_V1_ORDER:
        allowed = SMB_V1_CATEGORIES[cat]
        sel = [r for r, t in zip(rows, tables) if isinstance(t, str) and t in allowed]
        lines = _code_lines(sel) if sel else []
        if lines:
            parts.append("\n".join(lines))
    return "\n".join(parts)


def has_categories(events: pd.DataFrame) -> bool:
    """Whether ``events`` are laid out by category: they have a ``table`` column with at least one value (module
    docstring: a subject whose ``table`` is all null reads as one without the column)."""
    return "table" in events.columns and bool(events["table"].notna().any())


def _sorted(events: pd.DataFrame, has_table: bool) -> pd.DataFrame:
    # as the released formatter sorts: by (time, table) with pandas' defaults (two keys sort stably, a null table
    # last); by time alone without categories, stably (see the module docstring)
    if has_table:
        return events.sort_values(["time", "table"], na_position="last")
    return events.sort_values("time", kind="stable")


def _rows(df: pd.DataFrame) -> list[tuple]:
    """(code, time, numeric_value, text_value, unit) per event; an absent column reads as None."""
    n = len(df)
    get = lambda c: df[c].tolist() if c in df.columns else [None] * n  # noqa: E731
    return list(zip(get("code"), get("time"), get("numeric_value"), get("text_value"), get("unit")))


# --------------------------------------------------------------------------------------------------------- text
def _section_text(df: pd.DataFrame, has_table: bool) -> str:
    """The lines of a set of sorted events: category sections in order, or all codes when there is no table."""
    return _category_lines(_rows(df), df["table"].tolist() if has_table else [], has_table)


def _binned_blocks(
    df: pd.DataFrame, end: pd.Timestamp, time_bins: Sequence[tuple[int, int]], has_table: bool
) -> list[str]:
    """The binned mode's blocks (module docstring): one per non-empty bin, in the reverse of the listed order."""
    for a, b in time_bins:
        if a < b:
            raise ValueError(f"time bin ({a}, {b}): the first value (days back to the start) must be >= the second")
    blocks = []
    for a, b in reversed(list(time_bins)):
        lo, hi = end - pd.Timedelta(days=a), end - pd.Timedelta(days=b)
        sel = df[(df["time"] > lo) & (df["time"] <= hi)]
        if sel.empty:
            continue
        body = _section_text(sel, has_table)
        if body:
            blocks.append(f"{lo.strftime('%Y-%m-%d')} - {hi.strftime('%Y-%m-%d')}\n{body}")
    return blocks


def _day_blocks(df: pd.DataFrame, has_table: bool) -> str:
    """One block per calendar day, in ascending order: a ``[YYYY-MM-DD]`` line and the day's lines."""
    blocks = []
    dates = df["time"].dt.normalize()
    for d in sorted(dates.dropna().unique()):
        sel = df[dates == d]
        body = _section_text(sel, has_table)
        blocks.append(f"\n[{pd.Timestamp(d).strftime('%Y-%m-%d')}]" + (f"\n{body}" if body else ""))
    return "\n".join(blocks)


def smb_v1_text(
    events: pd.DataFrame,
    *,
    start_time=None,
    end_time=None,
    time_bins: Sequence[tuple[int, int]] | None = None,
) -> str:
    """One subject's events in the SMB-v1 layout (module docstring)."""
    if events.empty:
        return ""
    has_table = has_categories(events)
    df = _sorted(events, has_table)
    if start_time is not None:
        df = df[df["time"] >= pd.Timestamp(start_time)]
    if end_time is not None:
        df = df[df["time"] <= pd.Timestamp(end_time)]
    if df.empty:
        return ""
    parts: list[str] = []
    if has_table:
        person = df["table"].isin(DEMOGRAPHIC_TABLES)
        if person.any():
            demo = _section_text(df[person], True)
            if demo:
                parts.append(demo)
        df = df[~person]
    if df.empty:
        return "\n\n".join(parts)
    if time_bins and end_time is not None:
        parts.extend(_binned_blocks(df, pd.Timestamp(end_time), time_bins, has_table))
    else:
        content = _day_blocks(df, has_table)
        if content:
            parts.append(content)
    return "\n\n".join(parts)


@dataclass
class TextBlocks:
    """A subject's text with its time blocks: ``text[:char_ends[k]]`` is everything up to block ``k`` and
    ``times[k]`` the latest event time inside it (block 0: the demographics lines)."""

    text: str
    times: list  # np.datetime64[us] per block
    char_ends: list[int]


def _day_segments(times: np.ndarray, split_times: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Each event's day and its block within the day (0, 1, ...): a day's events after one of its split times go to a
    later block of the same day."""
    splits = np.sort(np.asarray(list(split_times), dtype="datetime64[us]"))
    days = times.astype("datetime64[D]")
    seg = np.zeros(len(times), dtype=np.int64)
    for s in splits:
        seg += (days == s.astype("datetime64[D]")) & (times > s)
    return days, seg


def smb_v1_blocks(events: pd.DataFrame, split_times: Sequence = ()) -> TextBlocks:
    """The SMB-v1 text of one subject (day blocks) with block offsets; days holding one of ``split_times`` are split
    there (events at or before the split time, then the rest), see the module docstring."""
    has_table = has_categories(events)
    if "table" not in events.columns:
        events = events.assign(table=None)
    df = _sorted(events, has_table)
    person = df["table"].isin(DEMOGRAPHIC_TABLES).to_numpy()
    demo_df = df[person]
    demo = _category_lines(_rows(demo_df), demo_df["table"].tolist(), True) if len(demo_df) else ""
    rest = df[~person].reset_index(drop=True)
    times_np = rest["time"].to_numpy(dtype="datetime64[us]")
    if len(demo_df):
        t0 = demo_df["time"].max().to_datetime64()
    elif len(rest):
        t0 = times_np[0]
    else:
        t0 = np.datetime64("NaT", "us")
    block_times = [np.datetime64(t0, "us")]
    char_ends = [len(demo)]
    if rest.empty:
        return TextBlocks(demo, block_times, char_ends)

    days, seg = _day_segments(times_np, split_times)
    tables = rest["table"].tolist()
    rows = _rows(rest)
    keys = pd.DataFrame({"day": days, "seg": seg})
    text = demo + ("\n\n" if demo else "")
    for i, ((day, _), g) in enumerate(keys.groupby(["day", "seg"], sort=True)):
        idx = g.index.to_numpy()
        body = _category_lines([rows[j] for j in idx], [tables[j] for j in idx], has_table)
        text += ("\n" if i else "") + f"\n[{pd.Timestamp(day).strftime('%Y-%m-%d')}]" + (f"\n{body}" if body else "")
        block_times.append(times_np[idx].max())
        char_ends.append(len(text))
    # times[k] = the latest event time in blocks 0..k (non-decreasing, so a context is found by a sorted search)
    block_times = list(np.maximum.accumulate(np.asarray(block_times, dtype="datetime64[us]")))
    return TextBlocks(text, block_times, char_ends)


def smb_v1_cohort(events: pd.DataFrame, nodes: pd.DataFrame | None = None, log=None) -> pd.DataFrame:
    """One row per subject: subject_id, text, block_times, block_ends (character offsets)."""
    split_by = {}
    if nodes is not None and len(nodes):
        split_by = nodes.groupby("subject_id")["prediction_time"].apply(lambda s: list(s.to_numpy())).to_dict()
    rows = []
    groups = events.groupby("subject_id", sort=True)
    for i, (sid, ev) in enumerate(groups):
        b = smb_v1_blocks(ev, split_by.get(sid, ()))
        rows.append((sid, b.text, b.times, b.char_ends))
        if log and (i + 1) % 2000 == 0:
            log(f"serialized {i + 1}/{groups.ngroups} subjects (smb_v1)")
    return pd.DataFrame(rows, columns=["subject_id", "text", "block_times", "block_ends"])
