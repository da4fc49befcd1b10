"""Compatibility shim: moved to :mod:`ehr_assets.data.decision_nodes`; removed once the Dagster layer imports the new
modules."""

from .data.decision_nodes import NODE_COLUMNS, decision_nodes, find_nodes

__all__ = ["NODE_COLUMNS", "decision_nodes", "find_nodes"]
