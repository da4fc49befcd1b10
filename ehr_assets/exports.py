"""Compatibility shim: moved to :mod:`ehr_assets.eval.exports`; removed once the Dagster layer imports the new
modules."""

from .eval.exports import (
    SURVIVAL_ENCODING,
    PredictionSchema,
    task_file_name,
    write_label_files,
    write_prediction_files,
)

__all__ = ["PredictionSchema", "SURVIVAL_ENCODING", "task_file_name", "write_label_files", "write_prediction_files"]
