"""Compatibility shim: moved to :mod:`ehr_assets.data.cohort`; removed once the Dagster layer imports the new
modules."""

from .data.cohort import (
    EVENTS_SCHEMA,
    CohortDataError,
    assign_splits,
    cohort_events,
    cohort_source,
    format_failures,
    meds_violations,
    split_violations,
    subjects_table,
    validate_events,
)

__all__ = [
    "EVENTS_SCHEMA",
    "CohortDataError",
    "assign_splits",
    "cohort_events",
    "cohort_source",
    "format_failures",
    "meds_violations",
    "split_violations",
    "subjects_table",
    "validate_events",
]
