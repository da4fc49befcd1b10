"""cBioPortal patients: one record per PATIENT_ID from the study's patient attribute files (every one the study
names, merged: the first non-blank value of a column wins) and the ``PATIENT_ID`` column of its sample files (a
patient may have no patient-file row: cBioPortal's patient file is optional); its stable ``subject_id``; and the
patient-level events it gives: ``MEDS_BIRTH`` from an age column, demographic ``COLUMN/value`` rows, ``MEDS_DEATH``
from ``OS_STATUS`` and ``OS_MONTHS`` (the anchor, age and death rules: :mod:`ehr_assets.data.sources.cbioportal`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import meds
import numpy as np
import pandas as pd

from ....constants import DAYS_PER_MONTH, DAYS_PER_YEAR
from ....specs import CbioportalSource
from ..base import SourceError
from .tsv import MalformedRows, is_blank, parse_number, read_tsv

DEMOGRAPHIC_COLUMNS = ("GENDER", "SEX", "RACE", "ETHNICITY")
DAY = np.timedelta64(1, "D")


def subject_id_of(patient_id: str) -> int:
    """Stable int64 id of a cBioPortal PATIENT_ID: the first 6 bytes of its SHA-256."""
    return int.from_bytes(hashlib.sha256(patient_id.encode("utf-8")).digest()[:6], "big")


def read_patients(
    patient_files: list[Path], sample_files: list[Path], bad: MalformedRows
) -> tuple[list[str], list[dict], dict]:
    """(the patient files' columns, one record per patient, report entries). A PATIENT_ID defined twice in one
    patient file is an error naming the file, both lines and the PATIENT_ID."""
    header: list[str] = []
    by_id: dict[str, dict] = {}
    for path in patient_files:
        cols, rows = read_tsv(path)
        if "PATIENT_ID" not in cols:
            raise SourceError(f"{path}: missing column 'PATIENT_ID' (header: {cols})")
        header += [c for c in cols if c not in header]
        seen: dict[str, int] = {}
        for lineno, fields in rows:
            rec = dict(zip(cols, (x.strip() for x in fields)))
            pid = rec.get("PATIENT_ID", "")
            if len(fields) != len(cols):
                bad(path, lineno, f"{len(fields)} fields, header has {len(cols)}", pid)
                continue
            if not pid:
                bad(path, lineno, "blank PATIENT_ID")
                continue
            if pid in seen:
                raise SourceError(f"{path}:{lineno}: PATIENT_ID {pid!r} already defined on line {seen[pid]}")
            seen[pid] = lineno
            merged = by_id.setdefault(pid, {})
            merged.update({k: v for k, v in rec.items() if is_blank(merged.get(k))})
    only_in_samples = 0
    for path in sample_files:
        cols, rows = read_tsv(path)
        if "PATIENT_ID" not in cols:
            raise SourceError(f"{path}: missing column 'PATIENT_ID' (a sample file maps samples to patients)")
        i = cols.index("PATIENT_ID")
        for lineno, fields in rows:
            pid = fields[i].strip() if len(fields) > i else ""
            if not pid:
                bad(path, lineno, "blank PATIENT_ID")
            elif pid not in by_id:
                by_id[pid] = {"PATIENT_ID": pid}
                only_in_samples += 1
    return header, list(by_id.values()), {"patients_only_in_sample_files": only_in_samples}


def subject_ids(root: Path, patients: list[dict]) -> dict[str, int]:
    """PATIENT_ID -> subject_id (:func:`subject_id_of`); two PATIENT_IDs with one hash are an error naming both."""
    ids: dict[str, int] = {}
    owner: dict[int, str] = {}
    for p in patients:
        pid = p["PATIENT_ID"]
        sid = subject_id_of(pid)
        if sid in owner:
            raise SourceError(f"{root}: PATIENT_IDs {owner[sid]!r} and {pid!r} hash to the same subject_id")
        owner[sid] = pid
        ids[pid] = sid
    return ids


def _age_rule(src: CbioportalSource, where: str, header: list[str]) -> tuple[str | None, str | None]:
    """(age column, ``anchor`` or ``last_follow_up``): the declared one, else the default; (None, None): no birth."""
    if src.age_column is not None:
        if src.age_column not in header:
            raise SourceError(f"{where}: age_column {src.age_column!r} not in the patient attributes ({header})")
        return src.age_column, src.age_at or "anchor"
    for col in ("AGE_AT_DIAGNOSIS", "AGE"):  # cBioPortal's AGE: age when the disease was first diagnosed (day 0)
        if col in header:
            return col, "anchor"
    if "CURRENT_AGE_DEID" in header and "OS_MONTHS" in header:
        return "CURRENT_AGE_DEID", "last_follow_up"
    return None, None


def patient_rows(
    src: CbioportalSource,
    where: str,
    header: list[str],
    patients: list[dict],
    timeline: pd.DataFrame,
    anchor: np.datetime64,
) -> tuple[list[tuple], dict]:
    """(birth, demographic and death rows as ``(patient_id, time, code, table)``, their report entries) by the
    anchor, age and death rules (package docstring); ``where`` names the patient files in errors."""
    last_day = timeline.groupby("patient_id")["day"].max()
    first_day = timeline.groupby("patient_id")["day"].min()
    age_col, age_at = _age_rule(src, where, header)
    demo_cols = src.demographics if src.demographics is not None else [c for c in DEMOGRAPHIC_COLUMNS if c in header]
    for c in demo_cols:
        if c not in header:
            raise SourceError(f"{where}: demographics column {c!r} not in the patient attributes ({header})")
    static: list[tuple] = []
    n_birth = n_death = n_moved = n_no_os = 0
    for p in patients:
        pid = p["PATIENT_ID"]
        os_months = parse_number(p.get("OS_MONTHS", ""))
        birth = _birth_time(p, age_col, age_at, os_months, anchor)
        first = anchor + int(first_day[pid]) * DAY if pid in first_day.index else None
        demo_time = birth if birth is not None else first
        if birth is not None:
            static.append((pid, birth, meds.birth_code, "person"))
            n_birth += 1
        if demo_time is not None:
            for c in demo_cols:
                v = p.get(c, "")
                if not is_blank(v):
                    static.append((pid, demo_time, f"{c}/{v}", "person"))
        if not _deceased(p):
            continue
        if os_months is None:
            n_no_os += 1
            continue
        d = int(round(os_months * DAYS_PER_MONTH))
        if pid in last_day.index and d < int(last_day[pid]):
            d = int(last_day[pid])
            n_moved += 1
        static.append((pid, anchor + d * DAY, meds.death_code, "death"))
        n_death += 1
    report = {
        "birth_rule": f"{age_col} at {age_at}" if age_col else "none (no age column)",
        "births": n_birth,
        "deaths": n_death,
        "deaths_moved_to_last_event": n_moved,
        "deceased_without_os_months": n_no_os,
    }
    return static, report


def _birth_time(
    patient: dict, age_col: str | None, age_at: str | None, os_months: float | None, anchor: np.datetime64
) -> np.datetime64 | None:
    """MEDS_BIRTH time by the age rule: day 0 - age years (``anchor``), or day 0 + OS_MONTHS - age years
    (``last_follow_up``, needs OS_MONTHS); None without an age."""
    if age_col is None:
        return None
    age = parse_number(patient.get(age_col, ""))
    if age is None or (age_at != "anchor" and os_months is None):
        return None
    offset = (os_months or 0.0) * DAYS_PER_MONTH if age_at == "last_follow_up" else 0.0
    return anchor + int(round(offset - age * DAYS_PER_YEAR)) * DAY


def _deceased(patient: dict) -> bool:
    status = patient.get("OS_STATUS", "").strip().upper()
    return status.startswith("1") or "DECEASED" in status
