"""cBioPortal timeline files (``data_timeline_*.txt``): the built-in rules by EVENT_TYPE and the rows they make.

A file needs ``PATIENT_ID, START_DATE, STOP_DATE, EVENT_TYPE``; a good row becomes an event coded
``EVENT_TYPE/<value of each code column>`` at ``START_DATE`` (and, for a rule with ``stop_event``, a
``<code>/STOP`` event at a later ``STOP_DATE``); a malformed row is handed to :class:`.tsv.MalformedRows`. One
function per level: all files, one file, one row (the malformed-row rules, then the event it makes).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ....specs import TimelineRule
from ..base import SourceError
from .tsv import MalformedRows, is_blank, parse_number, read_tsv

TIMELINE_REQUIRED = ("PATIENT_ID", "START_DATE", "STOP_DATE", "EVENT_TYPE")

# Built-in rules by EVENT_TYPE (upper case, spaces as '_'), after the MSK-CHORD timeline files.
TIMELINE_RULES: dict[str, TimelineRule] = {
    "DIAGNOSIS": TimelineRule(code_columns=["SUBTYPE", "DX_DESCRIPTION"], table="condition"),
    "TREATMENT": TimelineRule(code_columns=["SUBTYPE", "AGENT"], table="drug_exposure", stop_event=True),
    "PRIOR_MEDICATION": TimelineRule(code_columns=["AGENT"], table="drug_exposure"),
    "SURGERY": TimelineRule(code_columns=["SUBTYPE"], table="procedure"),
    "RADIATION": TimelineRule(code_columns=["SUBTYPE"], table="procedure", stop_event=True),
    "RADIATION_THERAPY": TimelineRule(code_columns=["SUBTYPE"], table="procedure", stop_event=True),
    "SPECIMEN": TimelineRule(code_columns=["SUBTYPE"], table="procedure"),
    "SPECIMEN_SURGERY": TimelineRule(code_columns=["SUBTYPE"], table="procedure"),
    "SEQUENCING": TimelineRule(code_columns=["SUBTYPE"], table="procedure"),
    "LAB_TEST": TimelineRule(code_columns=["TEST"], value_column="RESULT", unit_column="LR_UNIT_MEASURE", table="lab"),
    "PROGRESSION": TimelineRule(code_columns=["PROGRESSION"], table="observation"),
    "IMAGING": TimelineRule(code_columns=["SUBTYPE"], table="observation"),
    "TUMOR_SITES": TimelineRule(code_columns=["TUMOR_SITE"], table="observation"),
    "CANCER_PRESENCE": TimelineRule(code_columns=["CANCER_PRESENT"], table="observation"),
    "PERFORMANCE_STATUS": TimelineRule(code_columns=["SUBTYPE"], value_column="ECOG_KPS", table="measurement"),
    "ECOG_KPS": TimelineRule(code_columns=["SUBTYPE"], value_column="ECOG_KPS", table="measurement"),
    "PDL1": TimelineRule(value_column="PDL1_POSITIVE", table="measurement"),
    "MMR": TimelineRule(value_column="MMR", table="measurement"),
    "GLEASON": TimelineRule(value_column="GLEASON_SCORE", table="measurement"),
    "TUMOR_MARKER": TimelineRule(code_columns=["TEST"], value_column="RESULT", table="lab"),
    "FOLLOW_UP": TimelineRule(code_columns=["SUBTYPE"], table="observation"),
}
UNKNOWN_RULE = TimelineRule(code_columns=["SUBTYPE"], table="observation")
_INT_RE = re.compile(r"^[+-]?\d+$")
# one event row of a timeline file, before it is placed on the calendar (``day`` is days from the patient's day 0)
TIMELINE_ROW_COLUMNS = ["patient_id", "day", "code", "numeric_value", "text_value", "table", "unit"]


def normalize_event_type(event_type: str) -> str:
    """An EVENT_TYPE as rules are keyed: upper case, spaces and '-' as '_' (``"Lab test" -> "LAB_TEST"``)."""
    return "_".join(event_type.strip().upper().replace("-", " ").split())


def timeline_rows(
    root: Path, rules: dict[str, TimelineRule], ids: dict[str, int], bad: MalformedRows
) -> tuple[list[tuple], list[dict], dict[str, int]]:
    """(event rows of every ``data_timeline_*.txt`` in name order, one report line per file, counts of the
    EVENT_TYPEs no rule covers)."""
    files = sorted(root.glob("data_timeline_*.txt"))
    if not files:
        raise SourceError(f"{root}: no data_timeline_*.txt files")
    rows: list[tuple] = []  # TIMELINE_ROW_COLUMNS
    per_file: list[dict] = []
    unknown_types: dict[str, int] = {}
    for path in files:
        file_rows, summary = _timeline_file(path, rules, ids, bad, unknown_types)
        rows.extend(file_rows)
        per_file.append(summary)
    return rows, per_file, unknown_types


def _timeline_file(
    path: Path, rules: dict[str, TimelineRule], ids: dict[str, int], bad: MalformedRows, unknown_types: dict[str, int]
) -> tuple[list[tuple], dict]:
    """(event rows, report line) of one timeline file; malformed rows go to ``bad``, EVENT_TYPEs without a rule
    are counted in ``unknown_types``."""
    header, recs = read_tsv(path)
    missing = [c for c in TIMELINE_REQUIRED if c not in header]
    if missing:
        raise SourceError(f"{path}: missing required timeline column {missing[0]!r} (header: {header})")
    idx = {c: i for i, c in enumerate(header)}
    rows: list[tuple] = []
    types: set[str] = set()
    for lineno, fields in recs:
        reason = _malformed_reason(fields, header, idx, ids)
        if reason is not None:
            bad(path, lineno, reason)
            continue
        etype = normalize_event_type(fields[idx["EVENT_TYPE"]])
        rule = rules.get(etype)
        if rule is None:
            rule = UNKNOWN_RULE
            unknown_types[etype] = unknown_types.get(etype, 0) + 1
        types.add(etype)
        rows.extend(_row_events(fields, idx, etype, rule))
    summary = {"file": path.name, "rows": len(recs), "events": len(rows), "event_types": ", ".join(sorted(types))}
    return rows, summary


def _malformed_reason(fields: list[str], header: list[str], idx: dict[str, int], ids: dict[str, int]) -> str | None:
    """The first malformed-row rule a timeline row breaks (module docstring), or None for a good row."""
    if len(fields) != len(header):
        return f"{len(fields)} fields, header has {len(header)}"
    pid = fields[idx["PATIENT_ID"]].strip()
    if not pid:
        return "blank PATIENT_ID"
    if pid not in ids:
        return "PATIENT_ID not in data_clinical_patient.txt"
    start, stop = fields[idx["START_DATE"]].strip(), fields[idx["STOP_DATE"]].strip()
    if not _INT_RE.match(start):
        return "START_DATE is not an integer day"
    if stop and not _INT_RE.match(stop):
        return "STOP_DATE is not an integer day"
    if stop and int(stop) < int(start):
        return "STOP_DATE before START_DATE"
    if not normalize_event_type(fields[idx["EVENT_TYPE"]]):
        return "blank EVENT_TYPE"
    return None


def _row_events(fields: list[str], idx: dict[str, int], etype: str, rule: TimelineRule) -> list[tuple]:
    """The event of a good timeline row under ``rule`` (code, value or text, unit, table) and, for a rule with
    ``stop_event`` and a later STOP_DATE, its ``<code>/STOP`` event."""
    pid = fields[idx["PATIENT_ID"]].strip()
    start, stop = fields[idx["START_DATE"]].strip(), fields[idx["STOP_DATE"]].strip()
    parts = [etype] + [v for c in rule.code_columns if (v := _cell(fields, idx, c)) is not None]
    code = "/".join(parts)
    num, text = np.nan, None
    raw = _cell(fields, idx, rule.value_column)
    if raw is not None:
        x = parse_number(raw)
        num, text = (x, None) if x is not None else (np.nan, raw)
    unit = _cell(fields, idx, rule.unit_column)
    out = [(pid, int(start), code, num, text, rule.table, unit)]
    if rule.stop_event and stop and int(stop) > int(start):
        out.append((pid, int(stop), code + "/STOP", np.nan, None, rule.table, None))
    return out


def _cell(fields: list[str], idx: dict[str, int], column: str | None) -> str | None:
    """The stripped value of ``column`` in a row; None when the rule names no column, the file lacks it or the
    value is blank."""
    if column and column in idx and not is_blank(fields[idx[column]]):
        return fields[idx[column]].strip()
    return None
