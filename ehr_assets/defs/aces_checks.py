"""Blocking checks of the ACES-task assets (:mod:`ehr_assets.defs.aces`): labels never come from data the model may
read, label rows carry their subjects' splits, and no context of an ACES prediction time reads past it."""

import dagster as dg
from dagster import AssetCheckExecutionContext
from dagster_duckdb import DuckDBResource

from ..data.aces_tasks import label_window_violations
from ..specs import Project
from ..text.contexts import context_violations
from .aces import CONTEXTS, LABELS, RECIPE_CONTEXTS, aces_rows, tokens_assets
from .checks import NOT_MATERIALIZED, cohort_check, run_partition_check
from .io import read_table_or_none


def aces_label_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    @cohort_check(
        project,
        asset=LABELS,
        blocking=True,
        description="Every ACES label window starts after its prediction time (an event the model may read never "
        "sets a label).",
    )
    def label_window_after_prediction_time(context: AssetCheckExecutionContext, warehouse: DuckDBResource):
        def one(key):
            lab = aces_rows(warehouse, LABELS, key)
            if lab is None:
                return [NOT_MATERIALIZED], {}
            bad = label_window_violations(lab)
            problems = (
                [
                    f"{len(bad)} of {len(lab)} ACES labels come from a window that starts at or before the "
                    f"prediction time (tasks {sorted(bad['task'].unique())})"
                ]
                if len(bad)
                else []
            )
            return problems, {"labels_checked": len(lab)}

        return run_partition_check(context, project, one)

    @cohort_check(project, asset=LABELS, blocking=True, description="Every ACES label row carries its subject's split.")
    def aces_label_splits_match_subjects(context: AssetCheckExecutionContext, warehouse: DuckDBResource):
        def one(key):
            lab = aces_rows(warehouse, LABELS, key)
            subj = read_table_or_none(warehouse, "subjects", key, columns=["subject_id", "split"])
            if lab is None or subj is None:
                return [NOT_MATERIALIZED], {}
            m = lab.merge(subj, on="subject_id", how="left", suffixes=("", "_subject"))
            wrong = int((m["split"] != m["split_subject"]).sum())
            return ([f"{wrong} ACES label rows whose split is not their subject's"] if wrong else []), {
                "labels_checked": len(lab)
            }

        return run_partition_check(context, project, one)

    return [label_window_after_prediction_time, aces_label_splits_match_subjects]


def aces_context_check(project: Project) -> dg.AssetChecksDefinition:
    recipe_tokens = tokens_assets(project)

    @cohort_check(
        project,
        asset=CONTEXTS,
        name="no_future_in_context",
        blocking=True,
        description="No token a model reads for an ACES prediction time comes from an event after it (every "
        "tokenization).",
    )
    def no_future_in_aces_context(context: AssetCheckExecutionContext, warehouse: DuckDBResource):
        def one(key):
            ctx = aces_rows(warehouse, CONTEXTS, key)
            if ctx is None:
                return [NOT_MATERIALIZED], {}
            seq = read_table_or_none(
                warehouse, "token_sequences", key, columns=["subject_id", "block_times", "block_ends"]
            )
            bad = len(context_violations(ctx, seq))
            for tk in recipe_tokens:
                rctx = aces_rows(warehouse, RECIPE_CONTEXTS, key, tokens_asset=tk)
                rseq = aces_rows(warehouse, "recipe_token_sequences", key, order_by=None, tokens_asset=tk)
                if rctx is not None and rseq is not None:
                    bad += len(
                        context_violations(
                            rctx.rename(columns={"context_char_end": "context_end"}),
                            rseq[["subject_id", "block_times", "block_char_ends"]].rename(
                                columns={"block_char_ends": "block_ends"}
                            ),
                        )
                    )
            problems = [f"{bad} ACES prediction-time contexts read events after their prediction time"] if bad else []
            return problems, {"nodes_checked": len(ctx)}

        return run_partition_check(context, project, one)

    return no_future_in_aces_context


def build_aces_checks(project: Project) -> list[dg.AssetChecksDefinition]:
    return [*aces_label_checks(project), aces_context_check(project)]
