"""Compatibility shim: moved to :mod:`ehr_assets.eval.probe_metrics` (``evaluate``) and :mod:`ehr_assets.eval.report`
(``markdown_table``); removed once the Dagster layer imports the new modules."""

from .eval.probe_metrics import METRIC_COLUMNS, PREDICTION_COLUMNS, evaluate
from .eval.report import markdown_table

__all__ = ["METRIC_COLUMNS", "PREDICTION_COLUMNS", "evaluate", "markdown_table"]
