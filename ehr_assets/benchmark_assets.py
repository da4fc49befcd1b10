"""The benchmark's Dagster assets, generated from the project like those of :mod:`ehr_assets.assets`:

* ``cohort_latent`` -- the synthetic cohorts' hidden state (:mod:`ehr_assets.oracle`); read by the oracle probes
  only (no model asset depends on it). A cohort with a non-synthetic member stores no rows and says why.
* ``<variant>_probe_metrics`` for each oracle variant of :data:`ehr_assets.oracle.ORACLES` (``oracle``,
  ``oracle_no_rate``) -- the recipes' probe on the latent snapshot at each decision node; rows land in
  ``probe_metrics`` / ``probe_predictions`` beside the recipes' and the count baseline's.
* ``label_files`` / ``prediction_files`` -- MEDS label files and held-out prediction files under the artifact root
  (:mod:`ehr_assets.exports`).
* ``benchmark_summary`` -- per cohort: every recipe between baseline and oracle (gap closed), an AUROC-by-horizon
  plot and markdown tables in the metadata (:mod:`ehr_assets.benchmark`).
"""

import base64  # no `from __future__ import annotations`: Dagster inspects the `context` annotation

import dagster as dg
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from . import benchmark as bench
from . import exports
from . import oracle as oracle_stage
from .assets import POOL, ArtifactStore, _meta_table, _probe_and_write, _read, _write
from .specs import Project
from .warehouse import atomic_dir, ident, table_exists

LATENT_TABLE = "cohort_latent"


def _clear(warehouse: DuckDBResource, table: str, where: dict) -> None:
    """Delete the rows of ``table`` matching ``where`` if the table exists (a partition that now has no rows)."""
    with warehouse.get_connection() as conn:
        if table_exists(conn, table):
            cond = " AND ".join(f"{ident(c)} = ?" for c in where)
            conn.execute(f"DELETE FROM {ident(table)} WHERE {cond}", list(where.values()))


def _png_md(png: bytes, title: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")


def oracle_metric_assets() -> list[str]:
    return [f"{v}_probe_metrics" for v in oracle_stage.ORACLES]


def build_latent_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(name=LATENT_TABLE, group_name="oracle", kinds={"duckdb"}, partitions_def=partitions, pool=POOL)
    def cohort_latent(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """The hidden state of a synthetic cohort's simulator, one row per visit / time step. Read by the oracle
        probes only; a cohort with a non-synthetic member has none (no rows, the reason in the metadata)."""
        key = context.partition_key
        reason = oracle_stage.oracle_unavailable(project, key)
        if reason:
            _clear(warehouse, LATENT_TABLE, {"cohort": key})
            context.log.info(reason)
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "oracle": reason})
        lat = oracle_stage.cohort_latent(project, key)
        n = _write(warehouse, LATENT_TABLE, key, lat)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": n,
                "subjects": int(lat["subject_id"].nunique()),
                "columns": ", ".join(oracle_stage.LATENT_TABLE_COLUMNS),
                "oracle": "available",
            }
        )

    return cohort_latent


def build_oracle_asset(project: Project, variant: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    columns = oracle_stage.ORACLES[variant]

    @dg.asset(
        name=f"{variant}_probe_metrics",
        group_name="oracle",
        kinds={"duckdb", "sklearn"},
        deps=[LATENT_TABLE, "decision_nodes", "task_labels"],
        partitions_def=partitions,
        pool=POOL,
        description=f"The recipes' probes on the true latent state at each decision node ({', '.join(columns)}): "
        "the ceiling of the benchmark. Synthetic cohorts only.",
    )
    def oracle_probe_metrics(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        key = context.partition_key
        reason = oracle_stage.oracle_unavailable(project, key)
        if reason:
            for table in ("probe_metrics", "probe_predictions"):
                _clear(warehouse, table, {"cohort": key, "recipe": variant})
            context.log.info(reason)
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "oracle": reason})
        nodes = _read(warehouse, "decision_nodes", key, order_by=["subject_id", "prediction_time"])
        nodes = nodes.drop(columns=["cohort"])
        nodes["prediction_time"] = nodes["prediction_time"].astype("datetime64[us]")
        latent = _read(warehouse, LATENT_TABLE, key)
        snap = oracle_stage.latent_at_nodes(latent, nodes)
        feats = oracle_stage.oracle_features(snap, variant)
        return _probe_and_write(context, warehouse, project, key, variant, feats, nodes)

    return oracle_probe_metrics


def build_export_assets(
    project: Project, partitions: dg.PartitionsDefinition, metric_assets: list[str]
) -> list[dg.AssetsDefinition]:
    kinds = {p.name: p.kind for p in project.probes.values()}

    @dg.asset(group_name="exports", kinds={"parquet"}, deps=["task_labels", "subjects"], partitions_def=partitions)
    def label_files(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        """The task labels as MEDS label files, one per task and horizon (survival: boolean_value = event observed,
        float_value = days to event or censoring), with subject_splits.parquet and manifest.json."""
        key = context.partition_key
        labels = _read(warehouse, "task_labels", key)
        subjects = _read(warehouse, "subjects", key, columns=["subject_id", "split"])
        dest = artifacts.path("label_files", key)
        with atomic_dir(dest) as tmp:
            manifest = exports.write_label_files(labels, kinds, tmp, subjects=subjects)
        return dg.MaterializeResult(
            metadata={
                "files": len(manifest),
                "manifest": _meta_table(manifest.drop(columns=["encoding"]), ("rows", "positives")),
                "survival_encoding": exports.SURVIVAL_ENCODING,
                "path": dg.MetadataValue.path(str(dest)),
            }
        )

    @dg.asset(group_name="exports", kinds={"parquet"}, deps=metric_assets, partitions_def=partitions)
    def prediction_files(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        """Held-out predictions of every recipe, the baseline and the oracles for binary tasks: MEDS label columns
        plus predicted_boolean_probability (meds-evaluation's PredictionSchema), one file per recipe and task."""
        key = context.partition_key
        preds = _read(warehouse, "probe_predictions", key)
        dest = artifacts.path("prediction_files", key)
        with atomic_dir(dest) as tmp:
            written = exports.write_prediction_files(preds, tmp)
        per = written.groupby("recipe").agg(files=("file", "size"), rows=("rows", "sum")).reset_index()
        return dg.MaterializeResult(
            metadata={"files": len(written), "by_recipe": _meta_table(per, ("rows",)),
                      "path": dg.MetadataValue.path(str(dest))}
        )

    return [label_files, prediction_files]


def build_summary_asset(
    project: Project, partitions: dg.PartitionsDefinition, metric_assets: list[str]
) -> dg.AssetsDefinition:
    @dg.asset(group_name="evaluation", kinds={"duckdb"}, deps=metric_assets, partitions_def=partitions, pool=POOL)
    def benchmark_summary(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Every recipe between the count baseline and the oracle: headline metric per task and horizon, the
        fraction of the baseline-to-oracle gap each recipe closes, and an AUROC-by-horizon plot."""
        key = context.partition_key
        metrics = _read(warehouse, "probe_metrics", key)
        gaps = bench.gap_table(metrics)
        n = _write(warehouse, "benchmark_summary", key, gaps.drop(columns=["cohort"]))
        summary = bench.gap_summary(gaps)
        wide = bench.benchmark_wide(metrics).drop(columns=["cohort"])
        reason = oracle_stage.oracle_unavailable(project, key)
        md = {
            "dagster/row_count": n,
            "auroc_by_horizon": _png_md(bench.auroc_by_horizon_png(metrics, key), f"{key}: AUROC by horizon"),
            "gap_closed": _meta_table(summary.drop(columns=["cohort"])),
            "table": _meta_table(wide),
            "oracle": reason or "available",
        }
        for r in summary.itertuples():
            md[f"gap_closed_long/{r.recipe}"] = float(getattr(r, f"gap_closed_h{bench.LONG_HORIZON_DAYS}plus"))
        return dg.MaterializeResult(metadata=md)

    return benchmark_summary


def build_benchmark_assets(
    project: Project, partitions: dg.PartitionsDefinition, recipe_metric_assets: list[str]
) -> list[dg.AssetsDefinition]:
    """``cohort_latent``, the oracle probes, the exports and ``benchmark_summary``. ``recipe_metric_assets`` are the
    recipes' and the baseline's metric assets; the oracle's are added here."""
    assets = [build_latent_asset(project, partitions)]
    assets += [build_oracle_asset(project, v, partitions) for v in oracle_stage.ORACLES]
    metric_assets = list(recipe_metric_assets) + oracle_metric_assets()
    assets += build_export_assets(project, partitions, metric_assets)
    assets.append(build_summary_asset(project, partitions, metric_assets))
    return assets


__all__ = [
    "LATENT_TABLE", "build_benchmark_assets", "build_latent_asset", "build_oracle_asset", "build_export_assets",
    "build_summary_asset", "oracle_metric_assets",
]
