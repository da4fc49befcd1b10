"""Compatibility shim: moved to :mod:`ehr_assets.eval.oracle`; removed once the Dagster layer imports the new
modules."""

from .eval.oracle import (
    LATENT_COLUMNS,
    LATENT_TABLE_COLUMNS,
    ORACLES,
    cohort_latent,
    latent_at_nodes,
    oracle_features,
    oracle_unavailable,
)

__all__ = [
    "LATENT_COLUMNS",
    "LATENT_TABLE_COLUMNS",
    "ORACLES",
    "cohort_latent",
    "latent_at_nodes",
    "oracle_features",
    "oracle_unavailable",
]
