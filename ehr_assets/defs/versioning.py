"""Versions in Dagster's terms (what :mod:`ehr_assets.versions` computes, wired into the asset graph).

* **Code versions.** Every asset's ``code_version`` is ``<stage>@<version>`` of its stage's code, plus the digest of
  the declaration that holds for all its partitions: a recipe (resolved, with its ``init_from`` chain) for that
  recipe's assets, ``study.yaml`` for the study report. Dagster marks every partition of an asset whose code
  version changed "unsynced (code version)".
* **Declarations per partition.** Dagster keeps one code version per asset, not per partition, so what a cohort
  partition declares (its source, splits, decision-node rule and tasks) is an observable source asset in group
  ``declarations``, partitioned like the rest, whose data version per partition is the digest of that part. The
  stage that reads a part depends on it: after an edit, the next observation gives the touched partitions a new data
  version and Dagster marks exactly those partitions of the reading asset unsynced. Observations are recorded by
  the build command before it plans (:func:`observe_declarations`) and, while the daemon runs, by the sensor
  ``declarations_sensor`` every 30 s (no run is launched; only changed digests are recorded).
* **Data versions.** Every asset reports a content digest of what it wrote (:func:`data_version`), so a rebuild
  that wrote the same rows leaves everything below it up to date.
* **Automation.** Assets other than checkpoints and embeddings carry :data:`FOLLOWS_DECLARATIONS`: with the daemon
  running they are materialized when missing, when a parent has new data or when their code version changes.
  Checkpoints and embeddings are opt-in (they train or run the backbone: minutes to hours on real hardware), so an
  edit to a recipe is built on request (the build command, or "Materialize unsynced" in the UI).
"""

from __future__ import annotations

import warnings

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG, extract_data_version_from_entry

from .. import versions
from ..specs import Project, SpecError, load_project

GROUP = "declarations"
DECLARATIONS = versions.PARTITION_DECLARATIONS

# the automation condition of every asset that is cheap to rebuild (not checkpoints, not embeddings)
FOLLOWS_DECLARATIONS = dg.AutomationCondition.eager() | (
    dg.AutomationCondition.code_version_changed()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.in_progress()
)


def declaration_key(name: str) -> dg.AssetKey:
    """``declarations/<name>``: the observable source asset of one declared part of a cohort partition."""
    if name not in DECLARATIONS:
        raise KeyError(f"{name!r} is not a partition declaration ({', '.join(DECLARATIONS)})")
    return dg.AssetKey([GROUP, name])


def code_version(stage: str, declaration=None) -> str:
    """``<stage>@<version>`` of the stage's code, ``+<digest>`` of ``declaration`` when the asset reads one that
    holds for every partition."""
    v = f"{stage}@{versions.stage_version(stage)}"
    return v if declaration is None else f"{v}+{versions.digest(declaration)}"


def data_version(value: str) -> dg.DataVersion:
    return dg.DataVersion(value)


def declaration_assets(project: Project, partitions: dg.PartitionsDefinition, names=DECLARATIONS):
    """One observable source asset per declared part (``names``), data version per partition = its digest."""
    out = []
    for name in names:

        def observe(context, _name=name) -> dg.DataVersionsByPartition:
            digests = versions.partition_declarations(project)[_name]
            return dg.DataVersionsByPartition({p: dg.DataVersion(d) for p, d in digests.items()})

        with warnings.catch_warnings():  # observable source assets are "beta" in Dagster 1.13; this use is stable
            warnings.simplefilter("ignore", dg.BetaWarning)
            out.append(
                dg.observable_source_asset(
                    key=declaration_key(name),
                    group_name=GROUP,
                    partitions_def=partitions,
                    description=f"What each cohort partition declares for {name.replace('cohort_', '')} (digest)",
                )(observe)
            )
    return out


def _observed(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str | None:
    rec = instance.get_latest_data_version_record(key, True, partition)
    if rec is None:
        return None
    v = extract_data_version_from_entry(rec.event_log_entry)
    return v.value if v is not None else None


def changed_declarations(instance: dg.DagsterInstance, project: Project, names=DECLARATIONS):
    """``[(name, partition, recorded digest or None, current digest)]`` of every declared part whose digest differs
    from the one last observed in ``instance``."""
    digests = versions.partition_declarations(project)
    out = []
    for name in names:
        key = declaration_key(name)
        for partition, now in digests[name].items():
            was = _observed(instance, key, partition)
            if was != now:
                out.append((name, partition, was, now))
    return out


def observation(name: str, partition: str, value: str) -> dg.AssetObservation:
    return dg.AssetObservation(asset_key=declaration_key(name), partition=partition, tags={DATA_VERSION_TAG: value})


def observe_declarations(instance: dg.DagsterInstance, project: Project, names=DECLARATIONS):
    """Record an observation for every declared part whose digest changed; returns what changed (as
    :func:`changed_declarations`)."""
    changed = changed_declarations(instance, project, names)
    for name, partition, _, now in changed:
        instance.report_runless_asset_event(observation(name, partition, now))
    return changed


def declarations_sensor(project: Project, names=DECLARATIONS) -> dg.SensorDefinition:
    """Every 30 s, re-read the project's YAML from disk and record the changed declaration digests (no run)."""

    @dg.sensor(
        name="declarations_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Observes cohort and task declarations; an edit marks the partitions it touches unsynced.",
    )
    def sensor(context: dg.SensorEvaluationContext):
        try:
            current = load_project(project.root)
        except SpecError as e:  # the YAML as it is on disk now is invalid: say so, record nothing
            return dg.SkipReason(f"declarations not observed: {e}")
        changed = changed_declarations(context.instance, current, names)
        if not changed:
            return dg.SkipReason("no declaration changed")
        return dg.SensorResult(asset_events=[observation(n, p, v) for n, p, _, v in changed])

    return sensor


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates :data:`FOLLOWS_DECLARATIONS` while the daemon runs (``dagster dev``)."""
    return dg.AutomationConditionSensorDefinition(
        "follow_declarations",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
    )
