"""Compatibility shim: moved to :mod:`ehr_assets.data.sources`; removed once the Dagster layer imports the new
modules."""

from .data.sources import (
    TIMELINE_RULES,
    SourceData,
    SourceError,
    read_cbioportal,
    read_meds,
    read_source,
    subject_id_of,
)
from .data.sources import place_static_rows as _place_static_rows

__all__ = [
    "TIMELINE_RULES",
    "SourceData",
    "SourceError",
    "_place_static_rows",
    "read_cbioportal",
    "read_meds",
    "read_source",
    "subject_id_of",
]
