"""Dagster entry point: ``dagster dev -m ehr_assets.definitions`` / ``dagster asset materialize -m ehr_assets.definitions``.

Everything is generated from the project's YAML declarations (``cohorts/``, ``models/``, ``probes/``): the cohort
partitions, the data assets, one checkpoint / embeddings / probe-metrics asset per recipe, and the checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from .assets import ArtifactStore, Trainer, build_baseline_asset, build_data_assets, build_recipe_assets, build_report_asset
from .text_assets import build_text_assets, build_tokens_assets
from .benchmark_assets import build_benchmark_assets, oracle_metric_assets
from .checks import build_checks
from .specs import Project, default_project_dir, load_project
from .warehouse import default_artifact_root, default_warehouse

PIPELINE_JOB = "smb_pipeline"

# One process per step (isolation; parallel steps), started from a forkserver that has already imported the project:
# a step then skips re-importing Dagster, pandas and torch (steps started ~3 s apart before, ~1.4 s after, 2 cores).
EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["ehr_assets.definitions"]}}}
)
REPORT_JOB = "cross_disease_report_job"


def build_definitions(
    project: Project | str | Path | None = None,
    *,
    warehouse_path: str | Path | None = None,
    artifact_root: str | Path | None = None,
    trainer: Trainer | None = None,
) -> dg.Definitions:
    if not isinstance(project, Project):
        project = load_project(project or default_project_dir())
    warehouse_path = Path(warehouse_path or default_warehouse(project.root))
    artifact_root = Path(artifact_root or default_artifact_root(project.root))
    warehouse_path.parent.mkdir(parents=True, exist_ok=True)

    partitions = dg.StaticPartitionsDefinition(project.partition_keys)
    assets = build_data_assets(project, partitions)
    assets += build_text_assets(project, partitions) + build_tokens_assets(project, partitions)
    for recipe in project.recipes.values():
        assets += build_recipe_assets(project, recipe, partitions)
    assets.append(build_baseline_asset(project, partitions))
    metric_assets = [f"{r}_probe_metrics" for r in project.recipes] + ["count_baseline_probe_metrics"]
    # latent table, oracle probes, MEDS exports and the per-cohort benchmark summary
    assets += build_benchmark_assets(project, partitions, metric_assets)
    report = build_report_asset(project, metric_assets + oracle_metric_assets())

    partitioned = dg.AssetSelection.assets(*assets)
    jobs = [
        dg.define_asset_job(PIPELINE_JOB, selection=partitioned, partitions_def=partitions,
                            description="Every cohort-partitioned asset: data, training, embeddings, probes."),
    ]
    if report is not None:
        assets.append(report)
        jobs.append(dg.define_asset_job(REPORT_JOB, selection=dg.AssetSelection.assets(report)))
    return dg.Definitions(
        assets=assets,
        asset_checks=build_checks(project),
        jobs=jobs,
        executor=EXECUTOR,
        resources={
            "warehouse": DuckDBResource(database=str(warehouse_path)),
            "artifacts": ArtifactStore(root=str(artifact_root)),
            "trainer": trainer or Trainer(launcher=os.environ.get("EHR_TRAINER_LAUNCHER", "in_process")),
        },
    )


defs = build_definitions()
