"""Compatibility shim: moved to :mod:`ehr_assets.data.labels`; removed once the Dagster layer imports the new
modules."""

from .data.labels import LABEL_COLUMNS, LabelError, check_outcomes_occur, cohort_labels, task_labels

__all__ = ["LABEL_COLUMNS", "LabelError", "check_outcomes_occur", "cohort_labels", "task_labels"]
