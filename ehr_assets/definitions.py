"""Dagster entry point: ``dagster dev -m ehr_assets.definitions`` / ``dagster asset materialize -m
ehr_assets.definitions``. The definitions are built in :mod:`ehr_assets.defs.definitions`."""

from .defs.definitions import EXECUTOR, PIPELINE_JOB, REPORT_JOB, build_definitions, defs

__all__ = ["EXECUTOR", "PIPELINE_JOB", "REPORT_JOB", "build_definitions", "defs"]
