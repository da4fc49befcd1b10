"""The training-health checks (WARN, never blocking): ``jepa_beats_mean_predictor`` on each JEPA recipe's checkpoint
and ``effective_rank_floor`` on each recipe's embeddings (rules in :mod:`ehr_assets.stats`). A failure shows in the UI
and the run's events, per cohort partition, and stops nothing."""

import json

import dagster as dg
from dagster import AssetCheckExecutionContext

from .. import keys
from ..specs import Project
from ..stats import JEPA_NORM_CEILING, effective_rank_problems, jepa_mean_predictor_problems
from .checks import NOT_MATERIALIZED, cohort_check, run_partition_check
from .io import load_embeddings
from .resources import ArtifactStore


def health_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    """Every training-health check of the project."""
    checks = [_rank_floor_check(project, r) for r in project.recipes.values()]
    return checks + [_jepa_learning_check(project, r.name) for r in project.recipes.values() if r.uses_jepa]


def _warn(result: dg.AssetCheckResult) -> dg.AssetCheckResult:
    """``result`` at WARN severity: a failure shows in the UI and the run's events but stops nothing."""
    return dg.AssetCheckResult(passed=result.passed, severity=dg.AssetCheckSeverity.WARN, metadata=result.metadata)


def _rank_floor_check(project: Project, recipe) -> dg.AssetChecksDefinition:
    floor = recipe.embedding.min_effective_rank
    rule = f"{floor}" if floor is not None else "max(2, dims / 32)"

    @cohort_check(
        project,
        asset=keys.embeddings(recipe.name),
        name="effective_rank_floor",
        blocking=False,
        description=f"WARN when the effective rank of the node embeddings is under {rule} "
        "(embedding.min_effective_rank): they span too few directions to carry much of the patient state.",
    )
    def effective_rank_floor_check(context: AssetCheckExecutionContext, artifacts: ArtifactStore):
        def one(key):
            folder = artifacts.path(keys.embeddings(recipe.name), key)
            if not (folder / "embeddings.safetensors").exists():
                return [NOT_MATERIALIZED], {}
            emb, _ = load_embeddings(folder)
            return effective_rank_problems(emb, floor)

        return _warn(run_partition_check(context, project, one))

    return effective_rank_floor_check


def _jepa_learning_check(project: Project, recipe: str) -> dg.AssetChecksDefinition:
    @cohort_check(
        project,
        asset=keys.checkpoint(recipe),
        name="jepa_beats_mean_predictor",
        blocking=False,
        description=f"WARN when the normalized JEPA loss (MSE / the targets' variance at masked positions) ends at or "
        f"above {JEPA_NORM_CEILING}: 1.0 is what predicting the targets' mean scores, so the predictor learned little "
        "about the masked future.",
    )
    def jepa_beats_mean_predictor(context: AssetCheckExecutionContext, artifacts: ArtifactStore):
        def one(key):
            log = artifacts.path(keys.checkpoint(recipe), key) / "train_log.json"
            if not log.is_file():
                return [NOT_MATERIALIZED], {}
            return jepa_mean_predictor_problems(json.loads(log.read_text()).get("loss_curve", []))

        return _warn(run_partition_check(context, project, one))

    return jepa_beats_mean_predictor
