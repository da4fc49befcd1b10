"""``kind: cbioportal`` -- a cBioPortal study folder (MSK-CHORD ``msk_chord_2024`` and the like).

* ``data_clinical_patient.txt``: tab-separated, ``#`` comment lines skipped, one row per ``PATIENT_ID``.
* every ``data_timeline_*.txt``: tab-separated with ``PATIENT_ID, START_DATE, STOP_DATE, EVENT_TYPE`` (a file
  lacking one of them is refused, naming the file and the column); further columns are used by the rules below
  or ignored. A row becomes an event coded ``EVENT_TYPE/<value of each code column>`` (EVENT_TYPE upper-cased,
  blank values skipped) at ``START_DATE``; the rule's value column gives ``numeric_value`` when it parses as a
  number, else ``text_value``; the rule's table is the event's category. Built-in rules cover the MSK-CHORD
  event types (:data:`TIMELINE_RULES`); a cohort YAML may override or add rules under ``event_types``; an
  unknown EVENT_TYPE uses ``SUBTYPE`` as its code column and the table ``observation`` (counted).
* **anchor rule**: dates are integer days from each patient's day 0 (the diagnosis in MSK-CHORD). Day 0 is the
  calendar date ``anchor_date`` (default 2000-01-01) for every patient; calendar dates are synthetic (the study is
  de-identified), only intervals are real. ``MEDS_BIRTH`` is derived from an age column when one is known:
  ``age_at: anchor`` -> birth = day 0 - age years; ``age_at: last_follow_up`` -> birth = day 0 + OS_MONTHS -
  age years. Default: ``AGE_AT_DIAGNOSIS`` (at the anchor) when the column exists, else ``CURRENT_AGE_DEID``
  (MSK-CHORD; at last follow-up, needs OS_MONTHS), else no birth row. Demographic columns (default: those of
  GENDER, SEX, RACE, ETHNICITY present) become ``COLUMN/value`` person rows at birth (else at the first event).
* ``OS_STATUS`` starting with ``1`` (``1:DECEASED``) and ``OS_MONTHS`` give ``MEDS_DEATH`` at day
  ``round(OS_MONTHS * 365.25 / 12)``; a death that would precede a recorded event is moved to the last event's
  day (counted), since no event may follow death.
* ``subject_id`` = the first 6 bytes of SHA-256(PATIENT_ID) as an integer (stable across study releases); the
  ``PATIENT_ID`` is kept in the extra column ``patient_id``.
* malformed rows (wrong field count, blank or unknown PATIENT_ID, non-integer START_DATE/STOP_DATE, STOP_DATE
  before START_DATE, blank EVENT_TYPE) are skipped and counted per file and reason (``on_malformed: report``,
  default) or refused with the file and line named (``on_malformed: error``).

:func:`read_cbioportal` below reads as the steps: patients and their ids (:mod:`.patients`) -> the timeline files,
one file and one row at a time (:mod:`.timeline`) -> patient-level rows: birth, demographics, death
(:mod:`.patients`) -> the events frame -> the report. :mod:`.tsv` reads the tab-separated files and keeps the
malformed-row counts.
"""

from __future__ import annotations

from pathlib import Path

import meds
import numpy as np
import pandas as pd

from ....specs import CbioportalSource
from ..base import SourceData, SourceError
from .patients import DAY, patient_rows, read_patients, subject_id_of, subject_ids
from .timeline import TIMELINE_ROW_COLUMNS, TIMELINE_RULES, normalize_event_type, timeline_rows
from .tsv import MalformedRows

__all__ = ["TIMELINE_RULES", "read_cbioportal", "subject_id_of"]


def read_cbioportal(src: CbioportalSource) -> SourceData:
    """Events and report of the cBioPortal study folder ``src.path`` (the rules: module docstring); a study ships
    no splits."""
    root = Path(src.path)
    if not root.is_dir():
        raise SourceError(f"{root}: cBioPortal study folder not found (source.path)")
    bad = MalformedRows(src.on_malformed)
    pat_path = root / "data_clinical_patient.txt"
    header, patients = read_patients(pat_path, bad)
    rules = dict(TIMELINE_RULES)
    rules.update({normalize_event_type(k): v for k, v in src.event_types.items()})
    anchor = np.datetime64(src.anchor_date, "us")
    ids = subject_ids(pat_path, patients)

    rows, per_file, unknown_types = timeline_rows(root, rules, ids, bad)
    timeline = pd.DataFrame(rows, columns=TIMELINE_ROW_COLUMNS)
    static, patient_report = patient_rows(src, pat_path, header, patients, timeline, anchor)
    events = _events_frame(timeline, static, ids, anchor)

    report = {
        "kind": "cbioportal",
        "path": str(root),
        "patients": len(patients),
        "subjects_with_events": int(events["subject_id"].nunique()),
        "timeline_files": per_file,
        "malformed_rows": bad.table(),
        "malformed_rows_total": int(sum(bad.counts.values())),
        "unknown_event_types": unknown_types,
        "anchor_date": src.anchor_date,
        **patient_report,
        "rows": len(events),
    }
    return SourceData(events, None, report)


def _events_frame(
    timeline: pd.DataFrame, static: list[tuple], ids: dict[str, int], anchor: np.datetime64
) -> pd.DataFrame:
    """Timeline and patient-level rows on the calendar, sorted by subject and time; within a day birth and
    demographics come first and death last. Columns: MEDS, ``table``, ``unit``, ``patient_id``."""
    timed = pd.DataFrame(
        {
            "patient_id": timeline["patient_id"],
            "time": anchor + timeline["day"].to_numpy(dtype=np.int64) * DAY,
            "code": timeline["code"],
            "numeric_value": timeline["numeric_value"].astype("float32"),
            "text_value": timeline["text_value"],
            "table": timeline["table"],
            "unit": timeline["unit"],
            "_rank": 1,
        }
    )
    st = pd.DataFrame(static, columns=["patient_id", "time", "code", "table"]).assign(
        numeric_value=np.float32("nan"), text_value=None, unit=None
    )
    st["_rank"] = np.where(st["code"] == meds.death_code, 2, 0)  # birth/demographics first, death last in a day
    events = pd.concat([st, timed], ignore_index=True)
    events["time"] = events["time"].astype("datetime64[us]")
    events.insert(0, "subject_id", events["patient_id"].map(ids).astype("int64"))
    events = events.sort_values(["subject_id", "time", "_rank"], kind="stable").drop(columns="_rank")
    events = events[["subject_id", "time", "code", "numeric_value", "text_value", "table", "unit", "patient_id"]]
    events = events.reset_index(drop=True)
    events["numeric_value"] = events["numeric_value"].astype("float32")
    return events
