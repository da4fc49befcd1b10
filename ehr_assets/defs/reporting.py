"""Reporting assets: MEDS ``label_files`` and ``prediction_files`` under the artifact root (for other MEDS tools,
:mod:`ehr_assets.eval.exports`), and the unpartitioned ``cross_disease_report`` over all partitions."""

import dagster as dg
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from ..eval import exports
from ..eval.benchmark import cross_disease_table
from ..eval.oracle import ORACLES
from ..specs import Project
from ..versions import files_version, frame_version
from ..warehouse import atomic_dir
from .io import describe_missing, missing_metrics, read_table
from .metadata import meta_table
from .resources import ArtifactStore
from .versioning import FOLLOWS_DECLARATIONS, code_version, data_version

EXPORTS = {"code_version": code_version("exports"), "automation_condition": FOLLOWS_DECLARATIONS}


def label_files_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    kinds = {p.name: p.probe_kind for p in project.probes.values()}

    @dg.asset(
        group_name="exports", kinds={"parquet"}, deps=["task_labels", "subjects"], partitions_def=partitions, **EXPORTS
    )
    def label_files(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        """The task labels as MEDS label files, one per task and horizon (survival: boolean_value = event observed,
        float_value = days to event or censoring), with subject_splits.parquet and manifest.json."""
        key = context.partition_key
        labels = read_table(warehouse, "task_labels", key)
        subjects = read_table(warehouse, "subjects", key, columns=["subject_id", "split"])
        dest = artifacts.path("label_files", key)
        with atomic_dir(dest) as tmp:
            manifest = exports.write_label_files(labels, kinds, tmp, subjects=subjects)
        return dg.MaterializeResult(
            data_version=data_version(files_version(dest)),
            metadata={
                "files": len(manifest),
                "manifest": meta_table(manifest.drop(columns=["encoding"]), ("rows", "positives")),
                "survival_encoding": exports.SURVIVAL_ENCODING,
                "path": dg.MetadataValue.path(str(dest)),
            },
        )

    return label_files


def prediction_files_asset(partitions: dg.PartitionsDefinition, metric_assets: list[str]) -> dg.AssetsDefinition:
    @dg.asset(group_name="exports", kinds={"parquet"}, deps=metric_assets, partitions_def=partitions, **EXPORTS)
    def prediction_files(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        """Held-out predictions of every recipe, the baseline and the oracles for binary tasks: MEDS label columns
        plus predicted_boolean_probability (meds-evaluation's PredictionSchema), one file per recipe and task."""
        key = context.partition_key
        preds = read_table(warehouse, "probe_predictions", key)
        dest = artifacts.path("prediction_files", key)
        with atomic_dir(dest) as tmp:
            written = exports.write_prediction_files(preds, tmp)
        per = written.groupby("recipe").agg(files=("file", "size"), rows=("rows", "sum")).reset_index()
        return dg.MaterializeResult(
            data_version=data_version(files_version(dest)),
            metadata={
                "files": len(written),
                "by_recipe": meta_table(per, ("rows",)),
                "path": dg.MetadataValue.path(str(dest)),
            },
        )

    return prediction_files


def require_metrics(project: Project, warehouse, metric_assets: list[str], asset: str) -> None:
    """Fail, naming what to build first, when some partition has no probe metrics of some recipe yet."""
    recipes = [a.removesuffix("_probe_metrics") for a in metric_assets]
    recipes = [r for r in recipes if r not in ORACLES]  # an oracle writes no rows where there is no hidden state
    missing = missing_metrics(warehouse, project.partition_keys, recipes)
    if missing:
        raise dg.Failure(
            f"{asset} reads every partition's probe metrics; missing: {describe_missing(missing, recipes)}. "
            f"Build them first: python -m ehr_assets.build (or the UI: materialize the missing partitions)",
            metadata={"missing": dg.MetadataValue.json(missing)},
        )


def cross_disease_report_asset(project: Project, metric_assets: list[str]) -> dg.AssetsDefinition | None:
    """None when the project declares no union cohort."""
    if not any(s.is_union for s in project.cohorts.values()):
        return None

    unions = {n: list(s.union) for n, s in project.cohorts.items() if s.is_union}  # what the report pairs up

    @dg.asset(
        group_name="reports",
        kinds={"duckdb"},
        deps=metric_assets,
        code_version=code_version("reports", unions),
        automation_condition=FOLLOWS_DECLARATIONS,
    )
    def cross_disease_report(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """For each member cohort and task: held-out AUROC of a probe whose encoder (and probe) was trained on the
        member alone vs. on the union, scored on the same member's held-out subjects."""
        require_metrics(project, warehouse, metric_assets, "cross_disease_report")
        with warehouse.get_connection() as conn:
            preds = conn.execute("SELECT * FROM probe_predictions WHERE predicted_boolean_probability IS NOT NULL").df()
        report = cross_disease_table(project, preds)
        with warehouse.get_connection() as conn:
            conn.register("__report", report)
            conn.execute("CREATE OR REPLACE TABLE cross_disease_report AS SELECT * FROM __report")
        return dg.MaterializeResult(
            data_version=data_version(frame_version(report)),
            metadata={
                "dagster/row_count": len(report),
                "report": meta_table(report, ("n",)),
                "mean_delta_by_recipe": meta_table(report.groupby("recipe")["delta"].mean().reset_index()),
            },
        )

    return cross_disease_report
