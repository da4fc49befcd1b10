"""Asset checks: the project's data tests, run after each materialization and on demand from the UI.

Blocking checks stop downstream assets in the same run. Each check reads only the partition being checked.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
from dagster_duckdb import DuckDBResource

from . import cohort as cohort_stage
from . import sequences as seq_stage
from .assets import ArtifactStore, _read, load_embeddings
from .specs import Project

EMBEDDING_STD_FLOOR = 1e-4


def _result(problems: list[str], **metadata) -> dg.AssetCheckResult:
    md = {"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"), **metadata}
    return dg.AssetCheckResult(passed=not problems, metadata=md)


def build_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset="cohort_events", blocking=True, description="Events conform to the MEDS DataSchema (meds package).")
    def meds_schema(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        ev = _read(warehouse, "cohort_events", context.partition_key)
        return _result(cohort_stage.meds_violations(ev), rows=len(ev))

    @dg.asset_check(asset="subjects", blocking=True, description="Every subject is in exactly one split.")
    def split_disjointness(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        subj = _read(warehouse, "subjects", context.partition_key)
        return _result(cohort_stage.split_violations(subj), subjects=int(subj["subject_id"].nunique()))

    @dg.asset_check(
        asset="node_contexts",
        blocking=True,
        description="No token a model reads for a decision node comes from an event after its prediction time.",
    )
    def no_future_in_context(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        key = context.partition_key
        ctx = _read(warehouse, "node_contexts", key)
        seq = _read(warehouse, "token_sequences", key, columns=["subject_id", "block_times", "block_ends"])
        bad = seq_stage.context_violations(ctx, seq)
        problems = [f"{len(bad)} of {len(ctx)} decision nodes read events after their prediction time"] if len(bad) else []
        return _result(problems, nodes_checked=len(ctx))

    @dg.asset_check(
        asset="task_labels",
        blocking=True,
        description="Every outcome that sets a label lies strictly after the prediction time (never in the context).",
    )
    def labels_after_prediction_time(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        lab = _read(warehouse, "task_labels", context.partition_key)
        bad = lab["outcome_time"].notna() & (lab["outcome_time"] <= lab["prediction_time"]) & lab["boolean_value"]
        problems = [f"{int(bad.sum())} labels set by an outcome at or before the prediction time"] if bad.any() else []
        return _result(problems, labels_checked=len(lab))

    checks = [meds_schema, split_disjointness, no_future_in_context, labels_after_prediction_time]
    for recipe in project.recipes:
        checks.append(_collapse_check(recipe))
    return checks


def _collapse_check(recipe: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=f"{recipe}_embeddings",
        name="not_collapsed",
        blocking=True,
        description=f"Every embedding dimension varies across decision nodes (std > {EMBEDDING_STD_FLOOR}).",
    )
    def not_collapsed(context: dg.AssetCheckExecutionContext, artifacts: ArtifactStore) -> dg.AssetCheckResult:
        emb, _ = load_embeddings(artifacts.path(f"{recipe}_embeddings", context.partition_key))
        return collapse_result(emb)

    return not_collapsed


def collapse_result(emb: np.ndarray, floor: float = EMBEDDING_STD_FLOOR) -> dg.AssetCheckResult:
    std = emb.std(axis=0)
    n_low = int((std <= floor).sum())
    finite = bool(np.isfinite(emb).all())
    problems = []
    if not finite:
        problems.append("embeddings contain NaN or inf")
    if n_low:
        problems.append(f"{n_low} of {emb.shape[1]} dimensions have std <= {floor}")
    # effective rank of the centered embeddings (exp of the entropy of normalized singular values)
    s = np.linalg.svd(emb - emb.mean(0), compute_uv=False) if finite and len(emb) > 1 else np.zeros(1)
    p = s / s.sum() if s.sum() > 0 else np.ones_like(s) / len(s)
    eff_rank = float(np.exp(-(p * np.log(p + 1e-12)).sum()))
    return _result(problems, min_std=float(std.min()), effective_rank=round(eff_rank, 2), dims=int(emb.shape[1]))


