"""Which files of a cBioPortal study folder hold what, found the way cBioPortal's importer finds them.

**Meta files first.** The importer (``cbioportalImporter.py``) reads every file of the study folder whose name
contains ``meta`` as a word or before ``_``/a digit (``(\\b|_)meta(\\b|[_0-9])``, any case, skipping names that start
with ``.`` or end with ``~``). A meta file is ``key: value`` lines (split at the first ``:``; blank lines skipped);
``genetic_alteration_type`` and ``datatype`` say what its ``data_filename`` holds. This reader uses:

* ``CLINICAL`` + ``PATIENT_ATTRIBUTES``: patient attributes (``data_clinical_patient.txt``, or any name);
* ``CLINICAL`` + ``SAMPLE_ATTRIBUTES``: sample attributes, read for their ``PATIENT_ID`` column only (cBioPortal's
  patient file is optional: a patient may appear only here);
* ``CLINICAL`` + ``TIMELINE``: one timeline file each (``data_timeline.txt``, ``data_timeline_<name>.txt``, ...).

Other meta files (mutations, copy number, the study's own ``meta_study.txt``, ...) are listed in the report as not
read, and so are ``data_*.txt`` files that no meta file names (the importer does not load them either). A meta file
without ``:`` on a line, a clinical meta file without ``data_filename``, a ``data_filename`` that does not exist, or
``cancer_study_identifier`` values that disagree are errors naming the meta file.

**Naming conventions otherwise.** A folder without any clinical meta file is read by name: patient attributes from
``data_clinical_patient*.txt`` (``data_clinical_patient.txt``, ``data_clinical_patients.txt``), samples from
``data_clinical_sample*.txt``, timelines from ``data_timeline*.txt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..base import SourceError

META_NAME = re.compile(r"(\b|_)meta(\b|[_0-9])", re.IGNORECASE)  # cbioportalImporter.py's rule
PATIENTS, SAMPLES, TIMELINE = "PATIENT_ATTRIBUTES", "SAMPLE_ATTRIBUTES", "TIMELINE"
FALLBACK = {
    PATIENTS: "data_clinical_patient*.txt",
    SAMPLES: "data_clinical_sample*.txt",
    TIMELINE: "data_timeline*.txt",
}


@dataclass
class StudyFiles:
    """The data files of a study by what they hold, and how they were found (for the report)."""

    patients: list[Path] = field(default_factory=list)
    samples: list[Path] = field(default_factory=list)
    timelines: list[Path] = field(default_factory=list)
    found_by: str = "file names"
    study_id: str | None = None
    not_read: list[str] = field(default_factory=list)  # meta files of data this reader does not use
    no_meta: list[str] = field(default_factory=list)  # data_*.txt files no meta file names (the importer skips them)

    def report(self) -> dict:
        out = {
            "files_found_by": self.found_by,
            "patient_files": [p.name for p in self.patients],
            "sample_files": [p.name for p in self.samples],
        }
        if self.study_id:
            out["cancer_study_identifier"] = self.study_id
        if self.not_read:
            out["meta_files_not_read"] = self.not_read
        if self.no_meta:
            out["data_files_without_meta_file"] = self.no_meta
        return out


def read_meta_file(path: Path) -> dict[str, str]:
    """The ``key: value`` pairs of a meta file, as the importer parses them."""
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise SourceError(f"{path}:{i}: not a meta file entry (no ':' in {line.strip()[:60]!r})")
        key, value = line.split(":", 1)
        out[key.strip()] = value.strip()
    return out


def meta_files(root: Path) -> list[Path]:
    """The files the importer treats as meta files, in name order."""
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and META_NAME.search(p.name) and not (p.name.startswith(".") or p.name.endswith("~"))
    )


def find_study_files(root: Path) -> StudyFiles:
    """The study's patient, sample and timeline files: by its meta files when it has clinical ones, else by name."""
    found = _by_meta_files(root)
    if found is None:
        found = StudyFiles(**{_attr(k): sorted(root.glob(g)) for k, g in FALLBACK.items()})
    if not found.patients and not found.samples:
        raise SourceError(
            f"{root}: no patient attributes: a cBioPortal study needs a meta file with `datatype: PATIENT_ATTRIBUTES` "
            "(or SAMPLE_ATTRIBUTES) naming its data file, or a data_clinical_patient.txt"
        )
    if not found.timelines:
        raise SourceError(
            f"{root}: no timeline files: a meta file with `datatype: TIMELINE` naming its data file, or "
            "data_timeline.txt / data_timeline_<name>.txt"
        )
    return found


def _attr(datatype: str) -> str:
    return {PATIENTS: "patients", SAMPLES: "samples", TIMELINE: "timelines"}[datatype]


def _by_meta_files(root: Path) -> StudyFiles | None:
    """The clinical data files the meta files name; None when no meta file describes clinical data."""
    found = StudyFiles(found_by="meta files")
    study_of: dict[str, Path] = {}
    named: set[str] = set()
    any_clinical = False
    for meta in meta_files(root):
        entries = read_meta_file(meta)
        sid = entries.get("cancer_study_identifier")
        if sid:
            study_of.setdefault(sid, meta)
        named.add(entries.get("data_filename", ""))
        kind = (entries.get("genetic_alteration_type", "").upper(), entries.get("datatype", "").upper())
        if kind[0] != "CLINICAL" or kind[1] not in (PATIENTS, SAMPLES, TIMELINE):
            found.not_read.append(meta.name)
            continue
        any_clinical = True
        name = entries.get("data_filename")
        if not name:
            raise SourceError(f"{meta}: missing 'data_filename' (datatype: {kind[1]})")
        data = root / name
        if not data.is_file():
            raise SourceError(f"{meta}: data_filename {name!r} not found in {root}")
        getattr(found, _attr(kind[1])).append(data)
    if len(study_of) > 1:
        (a, pa), (b, pb) = list(study_of.items())[:2]
        raise SourceError(f"{pb}: cancer_study_identifier {b!r} differs from {a!r} in {pa.name}")
    found.study_id = next(iter(study_of), None)
    found.no_meta = sorted(p.name for p in root.glob("data_*.txt") if p.name not in named)
    return found if any_clinical else None
