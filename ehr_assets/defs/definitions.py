"""The Dagster definitions (``ehr_assets.definitions`` forwards here: ``dagster dev -m ehr_assets.definitions``).

Everything is generated from the project's YAML declarations (``cohorts/``, ``models/``, ``probes/``): the cohort
partitions, the data assets, one checkpoint / embeddings / probe-metrics asset per recipe, and the checks.
"""

import os
from pathlib import Path

import dagster as dg

from .. import keys
from ..eval.oracle import ORACLES
from ..specs import Project, default_project_dir, load_project
from ..threads import orchestrator_steps
from ..warehouse import default_artifact_root, default_warehouse
from .aces import aces_contexts_asset, aces_labels_asset, has_aces
from .aces_checks import build_aces_checks
from .benchmark import latent_dynamics_asset, paired_differences_asset, summary_asset
from .checks import build_checks
from .cohort import build_cohort_assets
from .evaluation import count_baseline_asset, latent_asset, oracle_asset, oracle_metric_assets
from .health_checks import health_checks
from .recipes import build_recipe_assets
from .recovery import dead_runs_sensor, guarded
from .reporting import cross_disease_report_asset, label_files_asset, prediction_files_asset
from .resources import ArtifactStore, Compute, Trainer, Warehouse
from .sequences import build_sequence_assets
from .study import study_report_asset
from .versioning import DECLARATIONS, automation_sensor, declaration_assets, declarations_sensor

PIPELINE_JOB = "smb_pipeline"

# One process per step (isolation; parallel steps), started from a forkserver that has already imported the project:
# a step then skips re-importing Dagster, pandas and torch (steps started ~3 s apart before, ~1.4 s after, 2 cores).
# At most orchestrator_steps() steps at once (EHR_CONCURRENT_STEPS, else one per usable core): the same figure the
# `compute` resource divides the cores by, so the steps running at once never start more threads than there are cores.
# Wrapped (.recovery.guarded): each run records its process in its tags, recovers runs whose process died before it
# starts, and says at WARNING who holds a pool slot one of its steps waits for.
EXECUTOR = guarded(dg.multiprocess_executor).configured(
    {
        "max_concurrent": orchestrator_steps(),
        "start_method": {"forkserver": {"preload_modules": ["ehr_assets.definitions"]}},
    }
)
REPORT_JOB = "cross_disease_report_job"


def pick_executor():
    """``EHR_EXECUTOR=k8s``: dagster-k8s's ``k8s_job_executor`` (each step in its own pod; README "Scaling out");
    ``in_process``: every step of a run in the run's process, one after another (no process start per step: for
    small machines, tests and runs of many short steps); else the local forkserver multiprocess executor."""
    choice = os.environ.get("EHR_EXECUTOR", "multiprocess")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if choice == "in_process":
        return guarded(dg.in_process_executor)
    if choice != "multiprocess":
        raise ValueError(f"EHR_EXECUTOR must be 'multiprocess', 'in_process' or 'k8s', got {choice!r}")
    return EXECUTOR


def pick_sensors(project: Project, declared: tuple[str, ...]) -> list:
    """The project's sensors; none with ``EHR_SENSORS=off`` (the daemon ``python -m ehr_assets.backfill`` starts
    runs the backfill's runs only, no automation)."""
    if os.environ.get("EHR_SENSORS", "on") == "off":
        return []
    return [declarations_sensor(project, declared), automation_sensor(), dead_runs_sensor()]


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
    assets = build_cohort_assets(project, partitions) + build_sequence_assets(project, partitions)
    if has_aces(project):  # ACES tasks: their labels and the contexts at their own prediction times
        assets += [aces_labels_asset(project, partitions), aces_contexts_asset(project, partitions)]
    for recipe in project.recipes.values():
        assets += build_recipe_assets(project, recipe, partitions)
    assets.append(count_baseline_asset(project, partitions))
    metric_assets = [keys.probe_metrics(r) for r in [*project.recipes, keys.COUNT_BASELINE]]
    # the benchmark: latent table, oracle probes, MEDS exports and the per-cohort summary
    assets.append(latent_asset(project, partitions))
    assets += [oracle_asset(project, v, partitions) for v in ORACLES]
    metric_assets += oracle_metric_assets()
    assets += [label_files_asset(project, partitions), prediction_files_asset(partitions, metric_assets)]
    assets += [paired_differences_asset(project, partitions, metric_assets), latent_dynamics_asset(project, partitions)]
    assets.append(summary_asset(project, partitions, metric_assets))
    reports = [cross_disease_report_asset(project, metric_assets), study_report_asset(project, metric_assets)]
    reports = [a for a in reports if a is not None]

    partitioned = dg.AssetSelection.assets(*assets)
    jobs = [
        dg.define_asset_job(
            PIPELINE_JOB,
            selection=partitioned,
            partitions_def=partitions,
            description="Every cohort-partitioned asset: data, training, embeddings, probes.",
        ),
    ]
    if reports:  # over all partitions: the cross-disease table (a union cohort), the study (study.yaml)
        assets += reports
        jobs.append(dg.define_asset_job(REPORT_JOB, selection=dg.AssetSelection.assets(*reports)))
    declared = declared_parts(project)
    return dg.Definitions(
        assets=[*declaration_assets(project, partitions, declared), *assets],
        sensors=pick_sensors(project, declared),
        asset_checks=[
            *build_checks(project),
            *health_checks(project),
            *(build_aces_checks(project) if has_aces(project) else []),
        ],
        jobs=jobs,
        executor=pick_executor(),
        resources={
            "warehouse": Warehouse(database=str(warehouse_path)),
            "artifacts": ArtifactStore(root=str(artifact_root)),
            "trainer": trainer or Trainer(launcher=os.environ.get("EHR_TRAINER_LAUNCHER", "in_process")),
            "compute": Compute(),
        },
    )


def declared_parts(project: Project) -> tuple[str, ...]:
    """The declared parts of a cohort partition that some asset of this project reads (ACES tasks only with one)."""
    return tuple(d for d in DECLARATIONS if d != "cohort_aces_tasks" or has_aces(project))


defs = build_definitions()
