"""Compatibility shim: moved to :mod:`ehr_assets.eval.benchmark`; removed once the Dagster layer imports the new
modules."""

from .eval.benchmark import (
    BASELINE,
    LONG_HORIZON_DAYS,
    MIN_GAP,
    ORACLE,
    auroc_by_horizon_png,
    benchmark_wide,
    gap_summary,
    gap_table,
    headline,
    recipe_order,
)

__all__ = [
    "BASELINE",
    "LONG_HORIZON_DAYS",
    "MIN_GAP",
    "ORACLE",
    "auroc_by_horizon_png",
    "benchmark_wide",
    "gap_summary",
    "gap_table",
    "headline",
    "recipe_order",
]
