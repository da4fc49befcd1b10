"""Cohort assets: ``cohort_events`` (the source as delivered) -> ``cohort_table`` (validated) -> ``subjects``
(splits) -> ``decision_nodes`` -> ``task_labels``. The work is in :mod:`ehr_assets.data`."""

import time

import dagster as dg
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from ..data import cohort as cohort_stage
from ..data import decision_nodes as nodes_stage
from ..data import labels as labels_stage
from ..specs import Project
from ..versions import frame_version
from ..warehouse import read_partition, replace_partitions, table_exists
from .io import POOL, read_table, tag_partition, write_table
from .metadata import meta_table, published_count, source_metadata, subject_count
from .versioning import FOLLOWS_DECLARATIONS, code_version, data_version, declaration_key

EVENT_COLUMNS = ["subject_id", "time", "code", "source_cohort"]


def _cohort_asset(partitions: dg.PartitionsDefinition, deps: list[str], stage: str, declared: str | None = None):
    """The decorator every asset of this module shares: partitioned, warehouse-writing (pool), group ``cohort``;
    the code version of ``stage``, and ``declared``: the declared part of each partition it reads."""
    return dg.asset(
        group_name="cohort",
        kinds={"duckdb"},
        partitions_def=partitions,
        pool=POOL,
        deps=[*deps, *([declaration_key(declared)] if declared else [])],
        code_version=code_version(stage),
        automation_condition=FOLLOWS_DECLARATIONS,
    )


def source_names(project: Project, cohort: str) -> str:
    """``member: kind path; ...`` of a cohort's sources, for error messages."""
    parts = []
    for m in project.members(cohort):
        src = project.cohorts[m].source
        parts.append(f"{m}: {src.kind}" + (f" {getattr(src, 'path', '')}" if getattr(src, "path", None) else ""))
    return "; ".join(parts)


def cohort_events_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @_cohort_asset(partitions, [], "cohort", "cohort_source")
    def cohort_events(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """MEDS events of the cohort as its source delivers them (a union concatenates its members)."""
        t0 = time.perf_counter()
        key = context.partition_key
        ev, shipped_splits, reports = cohort_stage.cohort_source(project, key)  # raises before anything is written
        for member, rep in reports.items():  # the PATIENT_IDs go to the run log, not to the published metadata
            for r in rep.get("malformed_rows", []):
                context.log.warning(
                    f"source[{member}]: {r['rows']} malformed row(s) skipped in {r['file']}: {r['reason']} "
                    f"(first: line {r['first_line']}, PATIENT_ID {r.get('patient_id')})"
                )
        if ev.empty:
            raise cohort_stage.CohortDataError(
                f"cohort {key!r}: the source yielded no events ({source_names(project, key)}); nothing was written"
            )
        cohort_stage.validate_events(
            ev, key, cohort_stage.keeps_events_after_death(project, key)
        )  # every rule, before writing: a bad delivery never replaces a good one
        with warehouse.get_connection() as conn:  # both tables in one transaction
            n, _ = replace_partitions(
                conn,
                [
                    ("cohort_events", tag_partition(ev, key), {"cohort": key}),
                    ("source_splits", tag_partition(shipped_splits, key), {"cohort": key}),
                ],
            )
        return dg.MaterializeResult(
            data_version=data_version(frame_version(ev, shipped_splits)),
            metadata={
                "dagster/row_count": n,
                "subjects": published_count(subject_count(ev)),
                "codes": int(ev["code"].nunique()),
                "members": ", ".join(project.members(key)),
                "wall_s": round(time.perf_counter() - t0, 2),
                **source_metadata(reports),
            },
        )

    return cohort_events


def cohort_table_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @_cohort_asset(partitions, ["cohort_events"], "cohort")
    def cohort_table(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Validated events (pandera): typed columns, no event after death, no duplicate rows. Fails on bad rows."""
        key = context.partition_key
        ev = read_table(warehouse, "cohort_events", key).drop(columns=["cohort"])
        keep = cohort_stage.keeps_events_after_death(project, key)
        valid = cohort_stage.validate_events(ev, key, keep)  # raises CohortDataError listing every failed rule
        n = write_table(warehouse, "cohort_table", key, valid)
        return dg.MaterializeResult(
            data_version=data_version(frame_version(valid)),
            metadata={"dagster/row_count": n, "subjects": published_count(subject_count(valid)), "pandera": "passed"},
        )

    return cohort_table


def subjects_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @_cohort_asset(partitions, ["cohort_table", "cohort_events"], "cohort", "cohort_splits")  # + source_splits
    def subjects(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """One row per subject: split (train / tuning / held_out), member cohort, follow-up window."""
        key = context.partition_key
        ev = read_table(warehouse, "cohort_table", key, columns=EVENT_COLUMNS)
        with warehouse.get_connection() as conn:  # splits shipped by the source (e.g. MEDS subject_splits.parquet)
            shipped = (
                read_partition(conn, "source_splits", {"cohort": key}) if table_exists(conn, "source_splits") else None
            )
        subj = cohort_stage.subjects_table(project, key, ev, shipped)
        n = write_table(warehouse, "subjects", key, subj)
        counts = subj.groupby(["source_cohort", "split"]).size().rename("subjects").reset_index()
        return dg.MaterializeResult(
            data_version=data_version(frame_version(subj)),
            metadata={"dagster/row_count": n, "splits": meta_table(counts, ("subjects",))},
        )

    return subjects


def decision_nodes_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @_cohort_asset(partitions, ["subjects", "cohort_table"], "decision_nodes", "cohort_decision_nodes")
    def decision_nodes(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Decision nodes (prediction times) from each member cohort's declared rule."""
        key = context.partition_key
        ev = read_table(warehouse, "cohort_table", key, columns=EVENT_COLUMNS)
        subj = read_table(warehouse, "subjects", key)
        nodes = nodes_stage.decision_nodes(project, key, ev, subj)
        if nodes.empty:
            raise ValueError(f"cohort {key!r}: no decision node matches the declared codes")
        n = write_table(warehouse, "decision_nodes", key, nodes)
        per = nodes.groupby("node_code").size().rename("nodes").reset_index().sort_values("nodes", ascending=False)
        return dg.MaterializeResult(
            data_version=data_version(frame_version(nodes)),
            metadata={
                "dagster/row_count": n,
                "subjects": published_count(subject_count(nodes)),
                "nodes_per_subject": round(n / max(subject_count(nodes), 1), 2),
                "by_code": meta_table(per.head(15), ("nodes",)),
            },
        )

    return decision_nodes


def task_labels_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @_cohort_asset(partitions, ["decision_nodes", "subjects", "cohort_table"], "labels", "cohort_tasks")
    def task_labels(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Task labels at decision nodes in the MEDS label schema (+ task, horizon_days, split columns)."""
        key = context.partition_key
        ev = read_table(warehouse, "cohort_table", key, columns=EVENT_COLUMNS)
        subj = read_table(warehouse, "subjects", key)
        nodes = read_table(warehouse, "decision_nodes", key).drop(columns=["cohort"])
        lab = labels_stage.cohort_labels(project, key, nodes, ev, subj)
        n = write_table(warehouse, "task_labels", key, lab)
        summary = (
            lab.groupby(["task", "horizon_days"])
            .agg(rows=("boolean_value", "size"), positives=("boolean_value", "sum"))
            .reset_index()
        )
        summary["rate"] = (summary["positives"] / summary["rows"]).round(3)
        return dg.MaterializeResult(
            data_version=data_version(frame_version(lab)),
            metadata={
                "dagster/row_count": n,
                "tasks": meta_table(summary, ("rows", "positives"), hides={"rate": "positives"}),
            },
        )

    return task_labels


def build_cohort_assets(project: Project, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [
        cohort_events_asset(project, partitions),
        cohort_table_asset(project, partitions),
        subjects_asset(project, partitions),
        decision_nodes_asset(project, partitions),
        task_labels_asset(project, partitions),
    ]
