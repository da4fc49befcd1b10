"""``kind: cbioportal`` -- a cBioPortal study folder (MSK-CHORD ``msk_chord_2024`` and the like).

* **files** are found as cBioPortal's importer finds them: through the study's meta files (``datatype:
  PATIENT_ATTRIBUTES``, ``SAMPLE_ATTRIBUTES``, ``TIMELINE`` and their ``data_filename``), else by the usual names
  (``data_clinical_patient(s).txt``, ``data_clinical_sample.txt``, ``data_timeline.txt``, ``data_timeline_*.txt``);
  the rules and errors: :mod:`.study`. Clinical files are tab-separated, ``#`` lines (the four attribute header
  lines) skipped.
* **patients** are every ``PATIENT_ID`` of the patient files and of the sample files (:mod:`.patients`); patients
  without timeline rows are counted (``patients_without_timeline_rows``) and keep their birth, demographic and death
  rows; a patient with no event at all is counted (``patients_without_events``) and left out.
* **timeline rows** become events by rules keyed by ``EVENT_TYPE`` (:mod:`.timeline`): code =
  ``EVENT_TYPE/<one positional segment per code column>`` at ``START_DATE``, a value and unit, a category
  (``table``), a ``<code>/STOP`` event for intervals. Built-in rules (:data:`TIMELINE_RULES`) cover the event types
  cBioPortal documents and those of MSK-CHORD; a cohort YAML may override or add rules under ``event_types``; an
  EVENT_TYPE without a rule is coded with its ``SUBTYPE`` as an observation and reported with its columns.
* **anchor rule**: dates are integer days from each patient's day 0 (the diagnosis in MSK-CHORD). Day 0 is the
  calendar date ``anchor_date`` (default 2000-01-01) for every patient; calendar dates are synthetic (the study is
  de-identified), only intervals are real. ``MEDS_BIRTH`` is derived from an age column when one is known:
  ``age_at: anchor`` -> birth = day 0 - age years; ``age_at: last_follow_up`` -> birth = day 0 + OS_MONTHS -
  age years. Default: ``AGE_AT_DIAGNOSIS`` or ``AGE`` (cBioPortal's age at diagnosis, at the anchor) when the column
  exists, else ``CURRENT_AGE_DEID`` (MSK-CHORD; at last follow-up, needs OS_MONTHS), else no birth row. Demographic
  columns (default: those of GENDER, SEX, RACE, ETHNICITY present) become ``COLUMN/value`` person rows at birth
  (else at the first event).
* ``OS_STATUS`` starting with ``1`` or reading ``DECEASED`` (``1:DECEASED``) and ``OS_MONTHS`` give ``MEDS_DEATH``
  at day ``round(OS_MONTHS * 365.25 / 12)``; a death that would precede a recorded event is moved to the last
  event's day (counted), since no event may follow death.
* ``subject_id`` = the first 6 bytes of SHA-256(PATIENT_ID) as an integer (stable across study releases); the
  ``PATIENT_ID`` is kept in the extra column ``patient_id``, and errors name it.
* malformed rows are skipped and counted per file and reason with the first line (``on_malformed: report``,
  default; the first row's PATIENT_ID is logged, not published in asset metadata) or refused with the file, line
  and PATIENT_ID named (``on_malformed: error``).

:func:`read_cbioportal` below reads as the steps: the study's files (:mod:`.study`) -> patients and their ids
(:mod:`.patients`) -> the timeline files, one file and one row at a time (:mod:`.timeline`) -> patient-level rows:
birth, demographics, death (:mod:`.patients`) -> the events frame -> the report. :mod:`.tsv` reads the
tab-separated files and keeps the malformed-row counts.
"""

from __future__ import annotations

from pathlib import Path

import meds
import numpy as np
import pandas as pd

from ....specs import CbioportalSource
from ..base import SourceData, SourceError
from .patients import DAY, patient_rows, read_patients, subject_id_of, subject_ids
from .study import find_study_files
from .timeline import TIMELINE_ROW_COLUMNS, TIMELINE_RULES, normalize_event_type, timeline_rows
from .tsv import MalformedRows

__all__ = ["TIMELINE_RULES", "read_cbioportal", "subject_id_of"]


def read_cbioportal(src: CbioportalSource) -> SourceData:
    """Events and report of the cBioPortal study folder ``src.path`` (the rules: module docstring); a study ships
    no splits."""
    root = Path(src.path)
    if not root.is_dir():
        raise SourceError(f"{root}: cBioPortal study folder not found (source.path)")
    files = find_study_files(root)
    bad = MalformedRows(src.on_malformed)
    header, patients, read_report = read_patients(files.patients, files.samples, bad)
    rules = dict(TIMELINE_RULES)
    rules.update({normalize_event_type(k): v for k, v in src.event_types.items()})
    anchor = np.datetime64(src.anchor_date, "us")
    ids = subject_ids(root, patients)

    rows, per_file, unknown_types = timeline_rows(files.timelines, rules, ids, bad)
    timeline = pd.DataFrame(rows, columns=TIMELINE_ROW_COLUMNS)
    where = ", ".join(str(p) for p in files.patients) or str(root)
    static, patient_report = patient_rows(src, where, header, patients, timeline, anchor)
    events = _events_frame(timeline, static, ids, anchor)

    with_events = int(events["subject_id"].nunique())
    report = {
        "kind": "cbioportal",
        "path": str(root),
        **files.report(),
        "patients": len(patients),
        **read_report,
        "patients_without_timeline_rows": len(patients) - int(timeline["patient_id"].nunique()),
        "patients_without_events": len(patients) - with_events,
        "subjects_with_events": with_events,
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
