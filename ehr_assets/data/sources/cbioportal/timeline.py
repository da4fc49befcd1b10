"""cBioPortal timeline files: the built-in rules by EVENT_TYPE and the rows they make.

A timeline file needs ``PATIENT_ID``, ``START_DATE`` and ``EVENT_TYPE`` (``STOP_DATE`` is optional, as for the
importer: point events may leave it out). A row shorter than the header has blank trailing cells (the importer reads
it so); a longer one is malformed. A good row becomes one event at ``START_DATE``:

* **code** = ``EVENT_TYPE`` (upper case, spaces as ``_``) followed by one ``/``-separated segment per code column of
  its rule that the file has. Segments are positional: a blank cell keeps its (empty) slot, so one pattern means
  the same thing on every row of a file (``TREATMENT/Chemo/`` is a treatment without an AGENT; ``[^/]*`` matches an
  empty slot), and a ``/`` inside a value is written ``-``. A column the file lacks has no slot.
* **value**: the rule's value column, as ``numeric_value`` when it parses as a number, else ``text_value``; its unit
  column gives ``unit``.
* **table** (the event's category): the first ``table_by`` rule whose column matches, else the rule's ``table``
  (radiation rows of a TREATMENT file are procedures).
* a rule with ``stop_event`` also gives ``<code>/STOP`` at a later ``STOP_DATE`` (a decision node only when asked).

Malformed rows (more fields than the header, a row that ends before a required column, blank or unknown
``PATIENT_ID``, non-integer dates, ``STOP_DATE`` before ``START_DATE``, blank ``EVENT_TYPE``, a row repeating an
earlier row of the same file) go to :class:`.tsv.MalformedRows` with their line and ``PATIENT_ID``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ....constants import STOP_SUFFIX
from ....specs import TableRule, TimelineRule
from ..base import SourceError
from .tsv import MalformedRows, is_blank, parse_number, read_tsv

TIMELINE_REQUIRED = ("PATIENT_ID", "START_DATE", "EVENT_TYPE")
_RADIATION = [
    TableRule(column="TREATMENT_TYPE", pattern=".*radiation.*", table="procedure"),
    TableRule(column="SUBTYPE", pattern=".*radiation.*", table="procedure"),
]


def _rule(codes=(), value=None, unit=None, table="observation", stop=False, table_by=()) -> TimelineRule:
    return TimelineRule(
        code_columns=list(codes),
        value_column=value,
        unit_column=unit,
        table=table,
        stop_event=stop,
        table_by=list(table_by),
    )


# Built-in rules by EVENT_TYPE (upper case, spaces as '_'): the columns cBioPortal's file-format documentation
# suggests for TREATMENT, LAB_TEST, IMAGING, STATUS and SPECIMEN, and the MSK-CHORD timeline files.
TIMELINE_RULES: dict[str, TimelineRule] = {
    "DIAGNOSIS": _rule(["SUBTYPE", "DX_DESCRIPTION"], table="condition"),
    "TREATMENT": _rule(["SUBTYPE", "AGENT"], table="drug_exposure", stop=True, table_by=_RADIATION),
    "PRIOR_MEDICATION": _rule(["AGENT"], table="drug_exposure"),
    "PRIOR_MEDICATIONS": _rule(["AGENT"], table="drug_exposure"),
    "PRIOR_MEDS": _rule(["AGENT"], table="drug_exposure"),
    "RADIATION": _rule(["SUBTYPE"], table="procedure", stop=True),
    "RADIATION_THERAPY": _rule(["SUBTYPE"], table="procedure", stop=True),
    "SURGERY": _rule(["SUBTYPE", "PROCEDURE_TYPE"], table="procedure"),
    "SPECIMEN": _rule(["SUBTYPE", "SPECIMEN_SITE", "SPECIMEN_TYPE"], table="procedure"),
    "SAMPLE_ACQUISITION": _rule(["SUBTYPE", "SPECIMEN_SITE", "SPECIMEN_TYPE"], table="procedure"),
    "SPECIMEN_SURGERY": _rule(["SUBTYPE"], table="procedure"),
    "SEQUENCING": _rule(["SUBTYPE"], table="procedure"),
    "IMAGING": _rule(["SUBTYPE", "DIAGNOSTIC_TYPE", "DIAGNOSTIC_TYPE_DETAILED"], value="RESULT", table="procedure"),
    "LAB_TEST": _rule(["TEST"], value="RESULT", unit="LR_UNIT_MEASURE", table="lab"),
    "TUMOR_MARKER": _rule(["TEST"], value="RESULT", unit="LR_UNIT_MEASURE", table="lab"),
    "TUMOR_MARKERS": _rule(["TEST"], value="RESULT", unit="LR_UNIT_MEASURE", table="lab"),
    "PATHOLOGY": _rule(["SUBTYPE", "TEST"], value="RESULT", table="measurement"),
    "STATUS": _rule(["SUBTYPE", "STATUS"], table="observation"),
    "PROGRESSION": _rule(["PROGRESSION"], table="observation"),
    "TUMOR_SITES": _rule(["TUMOR_SITE"], table="observation"),
    "CANCER_PRESENCE": _rule(["CANCER_PRESENT"], table="observation"),
    "PERFORMANCE_STATUS": _rule(["SUBTYPE"], value="ECOG_KPS", table="measurement"),
    "ECOG_KPS": _rule(["SUBTYPE"], value="ECOG_KPS", table="measurement"),
    "PDL1": _rule(value="PDL1_POSITIVE", table="measurement"),
    "MMR": _rule(value="MMR", table="measurement"),
    "GLEASON": _rule(value="GLEASON_SCORE", table="measurement"),
    "FOLLOW_UP": _rule(["SUBTYPE"], table="observation"),
}
UNKNOWN_RULE = _rule(["SUBTYPE"], table="observation")
_INT_RE = re.compile(r"^[+-]?\d+$")
# one event row of a timeline file, before it is placed on the calendar (``day`` is days from the patient's day 0)
TIMELINE_ROW_COLUMNS = ["patient_id", "day", "code", "numeric_value", "text_value", "table", "unit"]
REPEATED_ROW = "repeats an earlier row of the file"


def normalize_event_type(event_type: str) -> str:
    """An EVENT_TYPE as rules are keyed: upper case, spaces and '-' as '_' (``"Lab test" -> "LAB_TEST"``)."""
    return "_".join(event_type.strip().upper().replace("-", " ").split())


def timeline_rows(
    files: list[Path], rules: dict[str, TimelineRule], ids: dict[str, int], bad: MalformedRows
) -> tuple[list[tuple], list[dict], dict[str, dict]]:
    """(event rows of every timeline file, in the order given; one report line per file; the EVENT_TYPEs no rule
    covers, each with its row count and the columns its files carry, so that a rule can be written for it)."""
    rows: list[tuple] = []  # TIMELINE_ROW_COLUMNS
    per_file: list[dict] = []
    unknown: dict[str, dict] = {}
    for path in files:
        file_rows, summary = _timeline_file(path, rules, ids, bad, unknown)
        rows.extend(file_rows)
        per_file.append(summary)
    return rows, per_file, unknown


def _timeline_file(
    path: Path, rules: dict[str, TimelineRule], ids: dict[str, int], bad: MalformedRows, unknown: dict[str, dict]
) -> tuple[list[tuple], dict]:
    """(event rows, report line) of one timeline file; malformed rows go to ``bad``, EVENT_TYPEs without a rule
    are recorded in ``unknown``."""
    header, recs = read_tsv(path)
    missing = [c for c in TIMELINE_REQUIRED if c not in header]
    if missing:
        raise SourceError(f"{path}: missing required timeline column {missing[0]!r} (header: {header})")
    idx = {c: i for i, c in enumerate(header)}
    rows: list[tuple] = []
    shapes: dict[str, str] = {}
    seen: set[tuple[str, ...]] = set()
    for lineno, fields in recs:
        n_raw = len(fields)
        fields = [f.strip() for f in fields] + [""] * (len(header) - n_raw)
        pid = fields[idx["PATIENT_ID"]] if n_raw > idx["PATIENT_ID"] else ""
        reason = _malformed_reason(fields, header, idx, ids, n_raw)
        if reason is None and tuple(fields) in seen:
            reason = REPEATED_ROW
        if reason is not None:
            bad(path, lineno, reason, pid)
            continue
        seen.add(tuple(fields))
        etype = normalize_event_type(fields[idx["EVENT_TYPE"]])
        rule = rules.get(etype)
        if rule is None:
            rule = UNKNOWN_RULE
            u = unknown.setdefault(etype, {"rows": 0, "columns": []})
            u["rows"] += 1
            u["columns"] = sorted(set(u["columns"]) | set(header) - {*TIMELINE_REQUIRED, "STOP_DATE"})
        shapes.setdefault(etype, "/".join([etype] + [c for c in rule.code_columns if c in idx]))
        rows.extend(_row_events(fields, idx, etype, rule))
    summary = {
        "file": path.name,
        "rows": len(recs),
        "events": len(rows),
        "event_types": ", ".join(sorted(shapes)),
        "codes": "; ".join(shapes[t] for t in sorted(shapes)),
    }
    return rows, summary


def _malformed_reason(
    fields: list[str], header: list[str], idx: dict[str, int], ids: dict[str, int], n_raw: int
) -> str | None:
    """The first malformed-row rule a timeline row (``n_raw`` fields, padded to the header) breaks (module
    docstring), or None for a good row."""
    if n_raw > len(header):
        return f"{n_raw} fields, header has {len(header)}"
    short = [c for c in TIMELINE_REQUIRED if idx[c] >= n_raw]
    if short:
        return f"{n_raw} fields: the row ends before {short[0]}"
    pid = fields[idx["PATIENT_ID"]]
    if not pid:
        return "blank PATIENT_ID"
    if pid not in ids:
        return "PATIENT_ID not in the patient or sample files"
    start = fields[idx["START_DATE"]]
    stop = fields[idx["STOP_DATE"]] if "STOP_DATE" in idx else ""
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
    """The event of a good timeline row under ``rule`` (positional code, value or text, unit, table) and, for a
    rule with ``stop_event`` and a later STOP_DATE, its ``<code>/STOP`` event."""
    pid = fields[idx["PATIENT_ID"]]
    start = fields[idx["START_DATE"]]
    stop = fields[idx["STOP_DATE"]] if "STOP_DATE" in idx else ""
    slots = [(_cell(fields, idx, c) or "").replace("/", "-") for c in rule.code_columns if c in idx]
    code = "/".join([etype, *slots])
    num, text = np.nan, None
    raw = _cell(fields, idx, rule.value_column)
    if raw is not None:
        x = parse_number(raw)
        num, text = (x, None) if x is not None else (np.nan, raw)
    unit = _cell(fields, idx, rule.unit_column)
    table = next((t.table for t in rule.table_by if _matches(fields, idx, t)), rule.table)
    out = [(pid, int(start), code, num, text, table, unit)]
    if rule.stop_event and stop and int(stop) > int(start):
        out.append((pid, int(stop), code + STOP_SUFFIX, np.nan, None, table, None))
    return out


def _matches(fields: list[str], idx: dict[str, int], t: TableRule) -> bool:
    v = _cell(fields, idx, t.column)
    return v is not None and re.fullmatch(t.pattern, v, flags=re.IGNORECASE) is not None


def _cell(fields: list[str], idx: dict[str, int], column: str | None) -> str | None:
    """The value of ``column`` in a row; None when the rule names no column, the file lacks it or the value is
    blank (one of cBioPortal's no-value markers)."""
    if column and column in idx and not is_blank(fields[idx[column]]):
        return fields[idx[column]]
    return None
