"""Asset checks: the project's data tests, run after each materialization of their asset.

Blocking checks stop downstream assets in the same run. The training-health checks only warn (severity WARN, not
blocking; :mod:`.health_checks`). In a partitioned run a check reads only the partition being
materialized; in a check-only run without a partition (Dagster 1.13 runs no check-only run for one partition) it
checks every cohort partition present in the warehouse and names the failing ones.

Every check is partitioned like its asset (Dagster's partitioned asset checks): each result is recorded for the
cohort partition it checked (the UI's checks tab: a partition column, a Partitions view), the result's metadata names
it (``partition``), and its numbers carry it in their keys (``rows [msk]``), so each metadata plot shows one
partition.
"""

import warnings
from collections.abc import Callable

import dagster as dg
import numpy as np
from dagster import AssetCheckExecutionContext
from dagster_duckdb import DuckDBResource

from .. import keys
from ..data import cohort as cohort_stage
from ..eval.oracle import ORACLES
from ..specs import Project
from ..stats import (
    effective_rank,
)
from ..text import tokenizers
from ..text.contexts import context_violations
from ..warehouse import read_partition, table_exists
from .io import load_embeddings, read_table_or_none
from .resources import ArtifactStore, Compute
from .sequences import text_table_of

EMBEDDING_STD_FLOOR = 1e-4

# (problems, metadata) of one partition
PartitionCheck = Callable[[str], tuple[list[str], dict]]


def cohort_check(project: Project, **kw):
    """``dg.asset_check(**kw)`` partitioned by the project's cohorts, like the asset it checks: each result is tied to
    the partition it checked (partitioned checks are a preview feature of Dagster 1.13; its warning is silenced)."""
    partitions = dg.StaticPartitionsDefinition(project.partition_keys)

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(partitions_def=partitions, **kw)(fn)

    return decorate


def per_partition(metadata: dict, partition: str) -> dict:
    """``metadata`` with every number under ``<key> [<partition>]``: the UI plots each numeric key of a check over
    time, whatever partition a result belongs to, so a plot per partition keeps cohorts of different sizes apart."""
    numeric = (int, float, np.integer, np.floating)
    return {
        f"{k} [{partition}]" if isinstance(v, numeric) and not isinstance(v, bool) else k: v
        for k, v in metadata.items()
    }


def _result(problems: list[str], partition: str | None = None, **metadata) -> dg.AssetCheckResult:
    if partition is not None:
        metadata = {"partition": partition, **per_partition(metadata, partition)}
    md = {"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"), **metadata}
    return dg.AssetCheckResult(passed=not problems, metadata=md)


def _keys(context: AssetCheckExecutionContext, project: Project) -> list[str]:
    return [context.partition_key] if context.has_partition_key else list(project.partition_keys)


NOT_MATERIALIZED = "not materialized"


def _run(context: AssetCheckExecutionContext, project: Project, one: PartitionCheck) -> dg.AssetCheckResult:
    """Apply ``one`` to the run's partition, or to every partition when the check runs without one.

    In a partitioned run the check follows its asset's materialization, so a partition with no rows is a valid
    (empty) result, not a failure. Run alone, a check skips partitions never materialized and warns when there was
    nothing at all to check."""
    keys = _keys(context, project)
    if len(keys) == 1 and context.has_partition_key:
        problems, md = one(keys[0])
        if problems == [NOT_MATERIALIZED]:
            return _result([], partition=keys[0], note=f"partition {keys[0]!r} has no rows to check")
        return _result(problems, partition=keys[0], **md)
    problems, checked = [], []
    for key in keys:
        p, _ = one(key)
        if p == [NOT_MATERIALIZED]:
            continue
        checked.append(key)
        problems += [f"[{key}] {x}" for x in p]
    if not checked:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "problems": dg.MetadataValue.md("- nothing materialized to check yet"),
                "partitions_checked": "none",
            },
        )
    return _result(problems, partitions_checked=", ".join(checked))


run_partition_check = _run  # public name for the checks of other modules (ehr_assets.defs.aces_checks)


def cohort_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    """The MEDS schema of ``cohort_events`` and the disjoint splits of ``subjects``."""

    @cohort_check(
        project,
        asset="cohort_events",
        blocking=True,
        description="Events conform to the MEDS DataSchema (meds package).",
    )
    def meds_schema(context: AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        def one(key):
            ev = read_table_or_none(warehouse, "cohort_events", key)
            if ev is None:
                return [NOT_MATERIALIZED], {}
            return cohort_stage.meds_violations(ev), {"rows": len(ev)}

        return _run(context, project, one)

    @cohort_check(project, asset="subjects", blocking=True, description="Every subject is in exactly one split.")
    def split_disjointness(context: AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        def one(key):
            subj = read_table_or_none(warehouse, "subjects", key)
            if subj is None:
                return [NOT_MATERIALIZED], {}
            return cohort_stage.split_violations(subj), {"subjects": int(subj["subject_id"].nunique())}

        return _run(context, project, one)

    return [meds_schema, split_disjointness]


def context_check(project: Project) -> dg.AssetChecksDefinition:
    """The leakage check of the shared default tokenization (``node_contexts``)."""

    @cohort_check(
        project,
        asset="node_contexts",
        blocking=True,
        description="No token a model reads for a decision node comes from an event after its prediction time.",
    )
    def no_future_in_context(context: AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        def one(key):
            ctx = read_table_or_none(warehouse, "node_contexts", key)
            if ctx is None:
                return [NOT_MATERIALIZED], {}
            seq = read_table_or_none(
                warehouse, "token_sequences", key, columns=["subject_id", "block_times", "block_ends"]
            )
            if seq is None:
                return [f"node_contexts exist but token_sequences of {key!r} do not"], {}
            bad = context_violations(ctx, seq)
            problems = (
                [f"{len(bad)} of {len(ctx)} decision nodes read events after their prediction time"] if len(bad) else []
            )
            return problems, {"nodes_checked": len(ctx)}

        return _run(context, project, one)

    return no_future_in_context


def label_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    """Labels never come from the context, and every label row carries its subject's split."""

    @cohort_check(
        project,
        asset="task_labels",
        blocking=True,
        description="Every outcome that sets a label lies strictly after the prediction time (never in the context).",
    )
    def labels_after_prediction_time(context: AssetCheckExecutionContext, warehouse: DuckDBResource):
        def one(key):
            lab = read_table_or_none(warehouse, "task_labels", key)
            if lab is None:
                return [NOT_MATERIALIZED], {}
            bad = lab["outcome_time"].notna() & (lab["outcome_time"] <= lab["prediction_time"]) & lab["boolean_value"]
            problems = (
                [f"{int(bad.sum())} labels set by an outcome at or before the prediction time"] if bad.any() else []
            )
            return problems, {"labels_checked": len(lab)}

        return _run(context, project, one)

    @cohort_check(
        project,
        asset="task_labels",
        blocking=True,
        description="Every label row carries its subject's split (so a probe fit on 'train' rows sees train subjects "
        "only, and one scored on 'held_out' rows held-out subjects only).",
    )
    def label_splits_match_subjects(context: AssetCheckExecutionContext, warehouse: DuckDBResource):
        def one(key):
            lab = read_table_or_none(warehouse, "task_labels", key, columns=["subject_id", "split"])
            subj = read_table_or_none(warehouse, "subjects", key, columns=["subject_id", "split"])
            if lab is None or subj is None:
                return [NOT_MATERIALIZED], {}
            m = lab.merge(subj, on="subject_id", how="left", suffixes=("", "_subject"))
            unknown = int(m["split_subject"].isna().sum())
            wrong = int((m["split_subject"].notna() & (m["split"] != m["split_subject"])).sum())
            problems = []
            if unknown:
                problems.append(f"{unknown} label rows of subjects missing from the subjects table")
            if wrong:
                problems.append(f"{wrong} label rows whose split differs from their subject's split")
            return problems, {"labels_checked": len(lab)}

        return _run(context, project, one)

    return [labels_after_prediction_time, label_splits_match_subjects]


def build_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    """Every check of the project: data, labels, each tokenization's leakage, each recipe's embeddings, and
    held-out-only scoring for every probe-metrics asset."""
    checks = [*cohort_checks(project), context_check(project), *label_checks(project)]
    checks += [_collapse_check(project, recipe) for recipe in project.recipes]
    tokens_assets = dict.fromkeys(k for k in map(project.tokens_asset, project.recipes) if k)
    checks += [_recipe_context_check(project, tokens_key) for tokens_key in tokens_assets]
    checks += [_held_out_check(project, name) for name in [*project.recipes, keys.COUNT_BASELINE, *ORACLES]]
    return checks


def _held_out_check(project: Project, recipe: str) -> dg.AssetChecksDefinition:
    @cohort_check(
        project,
        asset=keys.probe_metrics(recipe),
        name="scored_on_held_out_only",
        blocking=True,
        description="Every prediction the metrics were computed from belongs to a held-out subject.",
    )
    def scored_on_held_out_only(context: AssetCheckExecutionContext, warehouse: DuckDBResource):
        def one(key):
            with warehouse.get_connection() as conn:
                if not table_exists(conn, "probe_predictions"):
                    return [NOT_MATERIALIZED], {}
                preds = read_partition(
                    conn, "probe_predictions", {"cohort": key, "recipe": recipe}, columns=["subject_id"]
                )
            if preds.empty:  # e.g. an oracle on a real cohort: nothing was scored, nothing can leak
                return [NOT_MATERIALIZED], {}
            subj = read_table_or_none(warehouse, "subjects", key, columns=["subject_id", "split"])
            if subj is None:
                return ["predictions exist but the subjects table has no rows for this cohort"], {}
            held = set(subj.loc[subj["split"] == "held_out", "subject_id"])
            bad = int((~preds["subject_id"].isin(held)).sum())
            problems = [f"{bad} of {len(preds)} predictions are for subjects outside held_out"] if bad else []
            return problems, {"predictions_checked": len(preds)}

        return _run(context, project, one)

    return scored_on_held_out_only


def _recipe_context_check(project: Project, tokens_key: str) -> dg.AssetChecksDefinition:
    """The leakage check of a ``<recipe>_tokens`` asset: a node's context text ``text[:context_char_end]`` must
    contain no block (day) whose events are after the prediction time, and its ``context_ids`` must be exactly that
    text tokenized."""
    root = project.recipes[keys.parse(tokens_key)[0]]
    text_table = text_table_of(root.format)

    @cohort_check(
        project,
        asset=tokens_key,
        name="no_future_in_context",
        blocking=True,
        description="No character of a decision node's context text comes from an event after its prediction time, "
        "and the token ids a model reads for the node are exactly that text tokenized.",
    )
    def no_future_in_recipe_context(
        context: AssetCheckExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore
    ):
        def one(key):
            with warehouse.get_connection() as conn:
                if not table_exists(conn, "recipe_node_contexts"):
                    return [NOT_MATERIALIZED], {}
                where = {"cohort": key, "tokens_asset": tokens_key}
                ctx = read_partition(
                    conn,
                    "recipe_node_contexts",
                    where,
                    columns=["subject_id", "prediction_time", "context_char_end", "context_last_time", "context_ids"],
                )
                if not len(ctx):
                    return [NOT_MATERIALIZED], {}
                seq = read_partition(
                    conn, "recipe_token_sequences", where, columns=["subject_id", "block_times", "block_char_ends"]
                )
                texts = read_partition(conn, text_table, {"cohort": key}, columns=["subject_id", "text"])
            # 1. the context text ends before any block (day) later than the node
            bad = context_violations(
                ctx.rename(columns={"context_char_end": "context_end"}),
                seq.rename(columns={"block_char_ends": "block_ends"}),
            )
            problems = (
                [f"{len(bad)} of {len(ctx)} decision nodes read events after their prediction time"] if len(bad) else []
            )
            # 2. the token ids a model reads for the node are exactly that context text, tokenized
            tok = tokenizers.load_tokenizer_folder(artifacts.path(tokens_key, key))
            text_of = dict(zip(texts["subject_id"], texts["text"]))
            expect = tokenizers.encode(
                tok, [text_of[s][:c] for s, c in zip(ctx["subject_id"], ctx["context_char_end"])], root.format
            )
            differ = sum(list(map(int, a)) != list(map(int, b)) for a, b in zip(ctx["context_ids"], expect))
            if differ:
                problems.append(
                    f"{differ} of {len(ctx)} decision nodes' context_ids are not their context text's "
                    "tokens (they may hold tokens of later events)"
                )
            return problems, {"nodes_checked": len(ctx)}

        return _run(context, project, one)

    return no_future_in_recipe_context


def _collapse_check(project: Project, recipe: str) -> dg.AssetChecksDefinition:
    @cohort_check(
        project,
        asset=keys.embeddings(recipe),
        name="not_collapsed",
        blocking=True,
        description=f"Every embedding dimension varies across decision nodes (std > {EMBEDDING_STD_FLOOR}).",
    )
    def not_collapsed(
        context: AssetCheckExecutionContext, artifacts: ArtifactStore, compute: Compute
    ) -> dg.AssetCheckResult:
        def one(key):
            folder = artifacts.path(keys.embeddings(recipe), key)
            if not (folder / "embeddings.safetensors").exists():
                return [NOT_MATERIALIZED], {}
            emb, _ = load_embeddings(folder)
            return collapse_problems(emb)

        return _run(context, project, one)

    return not_collapsed


def collapse_problems(emb: np.ndarray, floor: float = EMBEDDING_STD_FLOOR) -> tuple[list[str], dict]:
    """Problems (NaN/inf, dimensions with std <= floor) and metadata (min std, effective rank) of embeddings."""
    std = emb.std(axis=0)
    n_low = int((std <= floor).sum())
    finite = bool(np.isfinite(emb).all())
    problems = []
    if not finite:
        problems.append("embeddings contain NaN or inf")
    if n_low:
        problems.append(f"{n_low} of {emb.shape[1]} dimensions have std <= {floor}")
    return problems, {
        "min_std": float(std.min()),
        "effective_rank": round(effective_rank(emb), 2) if finite else float("nan"),
        "dims": int(emb.shape[1]),
    }
