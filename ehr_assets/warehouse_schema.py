"""The warehouse's declared schema: the DuckDB type of every column of every table, one home per table.

A table's column types come from here, never from the first frame written to it, so the order in which cohorts are
written cannot matter (a cohort without ``text_value`` once created that column with DuckDB type ``NULL``, and every
later cohort that had text values failed to insert). :func:`ehr_assets.warehouse.replace_partitions` creates a table
with its declared columns, casts every write to them, and repairs or refuses a table that disagrees (see there).

* **Events** (``cohort_events``, ``cohort_table``): the MEDS ``DataSchema`` types, taken from the ``meds`` package
  (:func:`arrow_to_duckdb`), plus the project's ``table``, ``unit``, ``source_cohort`` and ``patient_id`` columns.
  A source's own extra columns (e.g. a MEDS ``visit_id``) are kept: their type is the type the source delivers
  (``extras="source"``), a column with no value yet is ``VARCHAR``, and once a table holds an extra column its type
  stays (a later write is cast to it).
* **Labels and splits** (``task_labels``, ``source_splits``, ``subjects``): the MEDS ``LabelSchema`` and
  ``SubjectSplitSchema`` types for the MEDS columns, the project's for the rest.
* **Everything else**: the project's own declarations below, matching what the stages write.

A table or column missing here is written with the type of its data (never ``NULL``: such a column is ``VARCHAR``);
:func:`undeclared` lists them so that a test can require every table of the graph to be declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import meds
import pyarrow as pa

__all__ = ["TABLES", "TableSchema", "arrow_to_duckdb", "declared", "undeclared"]


def arrow_to_duckdb(t: pa.DataType) -> str:
    """The DuckDB type of an Arrow type of the MEDS schemas (int64 -> BIGINT, timestamp[us] -> TIMESTAMP, ...)."""
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}[t.bit_width]
    if pa.types.is_floating(t):
        return "FLOAT" if t.bit_width == 32 else "DOUBLE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz is None else "TIMESTAMP WITH TIME ZONE"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{arrow_to_duckdb(t.value_type)}[]"
    raise ValueError(f"no DuckDB type declared for Arrow type {t}")


def _meds(schema, *names: str) -> dict[str, str]:
    """``name -> DuckDB type`` of columns of a ``meds`` schema (all of them when no name is given)."""
    s = schema.schema()
    return {n: arrow_to_duckdb(s.field(n).type) for n in (names or s.names)}


@dataclass(frozen=True)
class TableSchema:
    """A table's declared columns (in order) and what its undeclared columns are: ``"source"`` (a source's own
    columns, typed as delivered), a DuckDB type for all of them, or ``None`` (none expected)."""

    columns: dict[str, str]
    extras: str | None = None
    doc: str = field(default="", compare=False)


COHORT = {"cohort": "VARCHAR"}
EVENTS = TableSchema(
    {
        **COHORT,
        **_meds(meds.DataSchema),
        "table": "VARCHAR",  # the event's SMB-v1 category
        "unit": "VARCHAR",
        "source_cohort": "VARCHAR",
        "patient_id": "VARCHAR",  # a cBioPortal PATIENT_ID
    },
    extras="source",
    doc="MEDS events (DataSchema types from the meds package) and the project's event columns",
)
NODE_KEY = {**COHORT, "subject_id": "BIGINT", "prediction_time": "TIMESTAMP"}
SUBJECT_SPLIT = {**COHORT, **_meds(meds.SubjectSplitSchema), "source_cohort": "VARCHAR"}
BLOCKS = {"block_times": "TIMESTAMP[]", "block_ends": "INTEGER[]"}

TABLES: dict[str, TableSchema] = {
    "cohort_events": EVENTS,
    "cohort_table": EVENTS,
    "source_splits": TableSchema(SUBJECT_SPLIT, doc="splits a source ships (MEDS subject_splits.parquet)"),
    "subjects": TableSchema(
        {
            **SUBJECT_SPLIT,
            "first_time": "TIMESTAMP",
            "last_time": "TIMESTAMP",
            "n_events": "BIGINT",
            "birth_time": "TIMESTAMP",
            "death_time": "TIMESTAMP",
        }
    ),
    "decision_nodes": TableSchema(
        {**NODE_KEY, "node_code": "VARCHAR", "node_index": "BIGINT", "split": "VARCHAR", "source_cohort": "VARCHAR"}
    ),
    "task_labels": TableSchema(
        {
            **COHORT,
            **_meds(meds.LabelSchema, "subject_id", "prediction_time", "boolean_value", "float_value"),
            "task": "VARCHAR",
            "horizon_days": "BIGINT",
            "split": "VARCHAR",
            "source_cohort": "VARCHAR",
            "outcome_time": "TIMESTAMP",
        }
    ),
    "token_sequences": TableSchema(
        {
            **COHORT,
            "subject_id": "BIGINT",
            "text": "VARCHAR",
            **BLOCKS,
            "input_ids": "INTEGER[]",
            "n_tokens": "BIGINT",
            "n_unk": "BIGINT",
            "split": "VARCHAR",
            "source_cohort": "VARCHAR",
        }
    ),
    "node_contexts": TableSchema(
        {
            **NODE_KEY,
            "split": "VARCHAR",
            "source_cohort": "VARCHAR",
            "context_end": "BIGINT",
            "context_last_time": "TIMESTAMP",
            "n_tokens": "BIGINT",
            "header_end": "BIGINT",  # the subject's header (block 0) that a cropped context keeps
        }
    ),
    "smb_v1_text": TableSchema(
        {
            **COHORT,
            "subject_id": "BIGINT",
            "text": "VARCHAR",
            **BLOCKS,
            "n_chars": "BIGINT",
            "split": "VARCHAR",
            "source_cohort": "VARCHAR",
        }
    ),
    "recipe_token_sequences": TableSchema(
        {
            **COHORT,
            "tokens_asset": "VARCHAR",
            "subject_id": "BIGINT",
            "split": "VARCHAR",
            "source_cohort": "VARCHAR",
            "input_ids": "INTEGER[]",
            "n_tokens": "BIGINT",
            "block_times": "TIMESTAMP[]",
            "block_char_ends": "INTEGER[]",
            "block_ends": "INTEGER[]",
        }
    ),
    "recipe_node_contexts": TableSchema(
        {
            **COHORT,
            "tokens_asset": "VARCHAR",
            "subject_id": "BIGINT",
            "prediction_time": "TIMESTAMP",
            "split": "VARCHAR",
            "source_cohort": "VARCHAR",
            "context_char_end": "BIGINT",
            "context_last_time": "TIMESTAMP",
            "n_chars": "BIGINT",
            "context_ids": "INTEGER[]",
            "n_context_tokens": "BIGINT",
            "n_header_tokens": "BIGINT",  # the subject's header at the start of context_ids
            "future_start": "BIGINT",
            "n_tokens": "BIGINT",
        }
    ),
    "probe_metrics": TableSchema(
        {
            **COHORT,
            "recipe": "VARCHAR",
            "task": "VARCHAR",
            "horizon_days": "BIGINT",
            "metric": "VARCHAR",
            "value": "DOUBLE",
            "ci_low": "DOUBLE",
            "ci_high": "DOUBLE",
            "n": "BIGINT",
            "n_pos": "BIGINT",
            "too_few": "BOOLEAN",
            "note": "VARCHAR",
            "materialized_at": "VARCHAR",
        }
    ),
    "probe_predictions": TableSchema(
        {
            **COHORT,
            "recipe": "VARCHAR",
            "task": "VARCHAR",
            "horizon_days": "BIGINT",
            "subject_id": "BIGINT",
            "prediction_time": "TIMESTAMP",
            "boolean_value": "BOOLEAN",
            "float_value": "FLOAT",
            "predicted_boolean_probability": "DOUBLE",  # float32 values (exports.py); DOUBLE holds them exactly
            "predicted_risk": "DOUBLE",
            "source_cohort": "VARCHAR",
        }
    ),
    "cohort_latent": TableSchema(
        {**COHORT, "subject_id": "BIGINT", "time": "TIMESTAMP", "source_cohort": "VARCHAR"},
        extras="DOUBLE",
        doc="the simulator's hidden state: one DOUBLE column per latent variable",
    ),
    "benchmark_summary": TableSchema(
        {
            **COHORT,
            "task": "VARCHAR",
            "horizon_days": "BIGINT",
            "metric": "VARCHAR",
            "recipe": "VARCHAR",
            "value": "DOUBLE",
            "baseline": "DOUBLE",
            "oracle": "DOUBLE",
            "gap": "DOUBLE",
            "gap_closed": "DOUBLE",
            "too_few": "BOOLEAN",
        }
    ),
    "paired_differences": TableSchema(  # ehr_assets.eval.paired.COLUMNS
        {
            **COHORT,
            "scope": "VARCHAR",
            "task": "VARCHAR",
            "horizon_days": "BIGINT",
            "metric": "VARCHAR",
            "statistic": "VARCHAR",
            "recipe": "VARCHAR",
            "reference": "VARCHAR",
            **dict.fromkeys(("estimate", "ci_low", "ci_high", "p_value", "recipe_value", "reference_value"), "DOUBLE"),
            **dict.fromkeys(("n", "n_subjects", "n_pos", "n_boot"), "BIGINT"),
            "too_few": "BOOLEAN",
            "note": "VARCHAR",
        }
    ),
    "latent_dynamics": TableSchema(  # ehr_assets.eval.latent_probe.COLUMNS
        {
            **COHORT,
            "recipe": "VARCHAR",
            "variable": "VARCHAR",
            "offset_days": "BIGINT",
            **dict.fromkeys(("r2", "ci_low", "ci_high"), "DOUBLE"),
            **dict.fromkeys(("n", "n_subjects"), "BIGINT"),
            "alpha": "DOUBLE",
            "note": "VARCHAR",
        }
    ),
    "latent_replicates": TableSchema(  # ehr_assets.eval.latent_probe.REPLICATE_COLUMNS: the R^2 under each draw
        {
            **COHORT,
            "recipe": "VARCHAR",
            "variable": "VARCHAR",
            "offset_days": "BIGINT",
            "replicate": "BIGINT",
            "r2": "DOUBLE",
        }
    ),
}


def declared(table: str) -> TableSchema | None:
    """The declaration of ``table`` (None: an undeclared table, written with its data's types)."""
    return TABLES.get(table)


def undeclared(table: str, columns) -> list[str]:
    """The columns of ``table`` that no declaration covers (all of them for an undeclared table)."""
    spec = TABLES.get(table)
    if spec is None:
        return list(columns)
    return [] if spec.extras else [c for c in columns if c not in spec.columns]
