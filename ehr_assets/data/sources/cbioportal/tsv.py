"""cBioPortal's tab-separated files, cell by cell: reading a file (UTF-8 with or without a byte-order mark; ``#``
comment lines and blank lines skipped), the markers that mean "no value", numbers in cells, and the bookkeeping of
malformed rows (counted per file and reason with the first line and its ``PATIENT_ID``, or refused at once with the
file, line and ``PATIENT_ID`` named). Shared by the patient, sample and timeline files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..base import SourceError

BLANK_VALUES = {"", "NA", "N/A", "NAN", "NULL", "[NOT AVAILABLE]", "[UNKNOWN]", "[NOT APPLICABLE]"}


def is_blank(v: str | None) -> bool:
    """True for a missing cell or one of :data:`BLANK_VALUES` (case and surrounding spaces ignored)."""
    return v is None or v.strip().upper() in BLANK_VALUES


def parse_number(v: str) -> float | None:
    """The finite float a cell holds, else None (text, blank, inf, nan)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read_tsv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a cBioPortal tab-separated file; '#' lines and blank lines skipped."""
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                if fields[0].startswith("#"):
                    continue
                if header is None:
                    header = [h.strip() for h in fields]
                    continue
                rows.append((lineno, fields))
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text ({e})") from None
    if header is None:
        raise SourceError(f"{path}: no header row")
    return header, rows


class MalformedRows:
    """Per-file counts of skipped rows by reason (``mode="report"``) or an immediate error naming file, line and
    ``PATIENT_ID`` (``mode="error"``); call it with ``(path, line number, reason, PATIENT_ID or None)`` for each
    malformed row."""

    def __init__(self, mode: str):
        self.mode = mode
        self.counts: dict[tuple[str, str], int] = {}
        self.first: dict[tuple[str, str], tuple[int, str | None]] = {}

    def __call__(self, path: Path, lineno: int, reason: str, patient_id: str | None = None) -> None:
        if self.mode == "error":
            who = f" (PATIENT_ID {patient_id})" if patient_id else ""
            raise SourceError(f"{path}:{lineno}: malformed row{who}: {reason}")
        key = (path.name, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.first.setdefault(key, (lineno, patient_id or None))

    def table(self) -> list[dict]:
        """One JSON-able row per (file, reason): rows skipped, the first line and its PATIENT_ID (None when blank),
        sorted by file and reason."""
        return [
            {
                "file": f,
                "reason": r,
                "rows": n,
                "first_line": self.first[(f, r)][0],
                "patient_id": self.first[(f, r)][1],
            }
            for (f, r), n in sorted(self.counts.items())
        ]
