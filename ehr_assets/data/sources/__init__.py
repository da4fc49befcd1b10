"""Source readers: what a cohort declares under ``source:`` becomes MEDS events.

Every reader returns a :class:`SourceData`: the events (MEDS DataSchema columns, ``table`` and ``unit``, plus any
extra columns the source carries), the subject splits the source ships (or ``None``: the cohort's seeded split is
used) and a JSON-able report for the ``cohort_events`` asset's metadata. Bad input raises :class:`SourceError` naming
the file and the column, line or subject; nothing is written before the whole source has been read.

One module per ``kind``, each with its rules in its docstring:

``kind: meds`` -- :mod:`.meds_dataset` (named so that it does not shadow the ``meds`` package it reads with)
    a MEDS dataset folder (the INSPECT release, or anything a MEDS ETL wrote).
``kind: cbioportal`` -- :mod:`.cbioportal`
    a cBioPortal study folder (MSK-CHORD ``msk_chord_2024`` and the like).
``kind: synthetic`` -- :func:`ehr_assets.synthetic.generate`, the simulator with known dynamics.
"""

from __future__ import annotations

from ...specs import CohortSpec
from .base import SourceData, SourceError
from .cbioportal import TIMELINE_RULES, read_cbioportal, subject_id_of
from .meds_dataset import place_static_rows, read_meds

__all__ = [
    "TIMELINE_RULES",
    "SourceData",
    "SourceError",
    "place_static_rows",
    "read_cbioportal",
    "read_meds",
    "read_source",
    "subject_id_of",
]


def read_source(spec: CohortSpec) -> SourceData:
    """Read a source cohort's declared source (paths are absolute once :func:`specs.load_project` resolved them)."""
    src = spec.source
    if src.kind == "synthetic":
        from ...synthetic import generate

        ev = generate(src.profile, src.subjects, src.seed, src.id_start).events
        return SourceData(ev, None, {"kind": "synthetic", "profile": src.profile})
    if src.kind == "meds":
        return read_meds(src)
    if src.kind == "cbioportal":
        return read_cbioportal(src)
    raise SourceError(f"cohort {spec.name!r}: source kind {src.kind!r} is not supported")
