"""Benchmark assets, per cohort partition: the evidence that compares recipes, and the summary that shows it.

* ``paired_differences`` -- every recipe minus the count baseline and minus ``sft`` per task and horizon, the gap
  closed, and their pooled values, with paired subject-bootstrap CIs (:mod:`ehr_assets.eval.paired`), from the
  held-out predictions of every ``*_probe_metrics`` asset;
* ``latent_dynamics`` -- ridge read-outs of the hidden state now and 180 / 365 days later from each recipe's node
  embeddings, the count baseline's features and the oracles' snapshot (:mod:`ehr_assets.eval.latent_probe`). It
  reads ``cohort_latent``: an evaluation asset, downstream of the embeddings -- no model asset reads the hidden
  state (a test checks the graph);
* ``benchmark_summary`` -- headline metrics, the gap closed (now with its CI), the AUROC-by-horizon plot, the pooled
  paired differences, the latent-dynamics table and plot, the spread across training seeds and the count of probe
  fallbacks (:mod:`ehr_assets.eval.fallbacks`).
"""

import time
import warnings

import dagster as dg
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource
from meds import held_out_split

from .. import keys
from ..eval import benchmark as bench
from ..eval import chance, latent_probe, paired, plots
from ..eval import oracle as oracle_stage
from ..eval.baseline import baseline_features
from ..eval.evidence import delta_wide, latent_wide, pooled_table
from ..eval.fallbacks import count_fallbacks
from ..eval.health import training_health
from ..eval.replicates import seed_summary
from ..eval.resample import subject_draws
from ..specs import Project
from ..versions import digest, frame_version
from ..warehouse import replace_partitions
from .io import clear_rows, load_embeddings, read_table, read_table_or_none, tag_partition, write_table
from .metadata import meta_table, png_md
from .resources import ArtifactStore, Compute
from .versioning import FOLLOWS_DECLARATIONS, code_version, data_version

BENCHMARK = {"code_version": code_version("benchmark"), "automation_condition": FOLLOWS_DECLARATIONS}


def benchmark_options(project: Project) -> dict:
    """:data:`BENCHMARK` for an asset that applies the project's small-sample minimum (``project.yaml``): its
    code version also covers that minimum."""
    minimum = project.settings.small_samples.model_dump(mode="json")
    return {**BENCHMARK, "code_version": code_version("benchmark", {"small_samples": minimum})}


CHANCE_CHECK = "recipes_beat_chance"


def _chance_check(scored, partition: str) -> dg.AssetCheckResult:
    """``recipes_beat_chance``: every trained recipe's mean headline metric over the tasks where the count baseline
    beats chance has its CI above 0.5 (:mod:`ehr_assets.eval.chance`); fails naming the recipes that do not."""
    table = chance.chance_table(scored)
    tasks = chance.learnable_tasks(scored)
    failed = table.loc[~table["passed"], "recipe"].tolist()
    return dg.AssetCheckResult(
        check_name=CHANCE_CHECK,
        passed=not failed,
        metadata={
            "partition": partition,
            "problems": dg.MetadataValue.md("\n".join(f"- {r} is not above chance" for r in failed) or "none"),
            "tasks": ", ".join(f"{g.task}@{g.horizon}d" for g in tasks) or "none: no task beats chance by counting",
            "recipes": meta_table(table),
        },
    )


def chance_check_spec(partitions: dg.PartitionsDefinition) -> dg.AssetCheckSpec:
    """The spec of ``recipes_beat_chance``, partitioned like its asset (each result tied to its cohort partition)."""
    with warnings.catch_warnings():  # partitioned checks are a preview feature of Dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            CHANCE_CHECK,
            asset=keys.PAIRED_DIFFERENCES,
            partitions_def=partitions,
            description="Every trained recipe beats chance (CI above 0.5) on the tasks where the count baseline does: "
            "a broken embedding path (wrong position, rows out of order) sits at chance.",
        )


def paired_differences_asset(
    project: Project, partitions: dg.PartitionsDefinition, metric_assets: list[str]
) -> dg.AssetsDefinition:
    minimum = project.settings.small_samples

    @dg.asset(
        name=keys.PAIRED_DIFFERENCES,
        group_name="evaluation",
        kinds={"duckdb"},
        deps=metric_assets,
        partitions_def=partitions,
        **benchmark_options(project),
        check_specs=[chance_check_spec(partitions)],
    )
    def paired_differences(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Each recipe minus the count baseline and minus sft (AUROC / Harrell's C), per task and horizon and pooled
        over the long horizons, and the gap closed: paired subject-bootstrap 95 % CIs (the same resampled held-out
        subjects for every recipe)."""
        key = context.partition_key
        preds = read_table(warehouse, "probe_predictions", key).drop(columns=["cohort"])
        t0 = time.perf_counter()
        scored = paired.score_tasks(preds, minimum=minimum)
        table = paired.paired_differences(preds, scored=scored, minimum=minimum)
        context.log.info(
            f"paired differences of {preds['recipe'].nunique()} recipes: {len(table)} rows, "
            f"{paired.N_BOOTSTRAP} resamples, {time.perf_counter() - t0:.1f} s"
        )
        n = write_table(warehouse, keys.PAIRED_DIFFERENCES, key, table)
        md = {
            "dagster/row_count": n,
            "pooled": meta_table(pooled_table(table)),
            "forest_plot": png_md(plots.paired_forest_png(table, key), f"{key}: paired differences"),
            "n_bootstrap": paired.N_BOOTSTRAP,
            "too_few_left_out": sum(g.too_few for g in scored),  # task x horizon pairs, see eval/small_samples
        }
        for ref in paired.REFERENCES:
            wide = delta_wide(table, ref)
            if len(wide):
                md[f"delta_vs_{ref}"] = meta_table(wide)
        return dg.MaterializeResult(
            data_version=data_version(frame_version(table)),
            metadata=md,
            check_results=[_chance_check([g for g in scored if not g.too_few], key)],
        )

    return paired_differences


def _aligned(emb: np.ndarray, index: pd.DataFrame, nodes: pd.DataFrame, name: str) -> np.ndarray:
    """The rows of ``emb`` (keyed by ``index``) in the order of ``nodes``; a node without a row is an error."""
    pos = pd.Series(np.arange(len(index)), index=pd.MultiIndex.from_frame(index[["subject_id", "prediction_time"]]))
    want = pd.MultiIndex.from_frame(nodes[["subject_id", "prediction_time"]])
    rows = pos.reindex(want)
    if rows.isna().any():
        raise ValueError(
            f"{keys.embeddings(name)}: {int(rows.isna().sum())} of {len(nodes)} decision nodes have no embedding; "
            f"materialize {keys.embeddings(name)} again"
        )
    return np.asarray(emb)[rows.to_numpy(dtype=np.int64)]


def _latent_features(project: Project, warehouse, artifacts: ArtifactStore, key: str, nodes, latent) -> dict:
    """Every feature set the latent probe reads, in report order: the count baseline, each recipe's embeddings,
    the oracle variants' latent snapshot."""
    events = read_table(warehouse, "cohort_table", key, columns=["subject_id", "time", "code"])
    events["time"] = events["time"].astype("datetime64[us]")
    subjects = read_table(warehouse, "subjects", key, columns=["subject_id", "split"])
    feats = {keys.COUNT_BASELINE: baseline_features(events, subjects, nodes)}
    for name in project.recipes:
        emb, index = load_embeddings(artifacts.path(keys.embeddings(name), key))
        feats[name] = _aligned(emb, index, nodes, name)
    snap = oracle_stage.latent_at_nodes(latent, nodes)
    for variant in oracle_stage.ORACLES:
        feats[variant] = oracle_stage.oracle_features(snap, variant)
    return feats


def latent_dynamics_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    deps = [keys.LATENT, "decision_nodes", "cohort_table", "subjects", *map(keys.embeddings, project.recipes)]

    @dg.asset(
        name=keys.LATENT_DYNAMICS,
        group_name="oracle",
        kinds={"duckdb", "sklearn"},
        deps=deps,
        partitions_def=partitions,
        **BENCHMARK,
    )
    def latent_dynamics(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore, compute: Compute
    ) -> dg.MaterializeResult:
        """Does a node embedding carry where the patient is and is going? Held-out R^2 of a ridge read-out of each
        latent variable at the node and 180 / 365 days later, from every recipe's embeddings, the count baseline and
        the oracles (synthetic cohorts only)."""
        key = context.partition_key
        reason = oracle_stage.oracle_unavailable(project, key)
        if reason:
            clear_rows(warehouse, keys.LATENT_DYNAMICS, {"cohort": key})
            clear_rows(warehouse, keys.LATENT_REPLICATES, {"cohort": key})
            context.log.info(reason)
            return dg.MaterializeResult(
                data_version=data_version(digest(reason)), metadata={"dagster/row_count": 0, "latent": reason}
            )
        nodes = read_table(warehouse, "decision_nodes", key, order_by=["subject_id", "prediction_time"])
        nodes["prediction_time"] = nodes["prediction_time"].astype("datetime64[us]")
        latent = read_table(warehouse, keys.LATENT, key)
        targets = latent_probe.latent_targets(latent, nodes)
        splits, subjects = nodes["split"].to_numpy(), nodes["subject_id"].to_numpy()
        draws = subject_draws(subjects[splits == held_out_split], 200, 0)
        frames, reps = [], []
        for name, X in _latent_features(project, warehouse, artifacts, key, nodes, latent).items():
            frames.append(latent_probe.latent_probe(name, X, splits, subjects, targets, draws=draws, replicates=reps))
            context.log.info(f"latent probe: {name}")
        table = pd.concat(frames, ignore_index=True)
        empty = pd.DataFrame(columns=latent_probe.REPLICATE_COLUMNS)
        replicates = pd.concat(reps, ignore_index=True) if reps else empty
        with warehouse.get_connection() as conn:  # the R^2 rows and their replicates: one transaction
            n, _ = replace_partitions(
                conn,
                [
                    (keys.LATENT_DYNAMICS, tag_partition(table, key), {"cohort": key}),
                    (keys.LATENT_REPLICATES, tag_partition(replicates, key), {"cohort": key}),
                ],
            )
        known = {f"nodes_with_state_at_+{o}d": int(t.notna().all(axis=1).sum()) for o, t in targets.items()}
        return dg.MaterializeResult(
            data_version=data_version(frame_version(table, replicates)),
            metadata={
                "dagster/row_count": n,
                **known,
                "r2": meta_table(latent_wide(table)),
                "plot": png_md(plots.latent_r2_png(table, key), f"{key}: latent dynamics"),
            },
        )

    return latent_dynamics


def _evidence_metadata(warehouse, key: str, metrics: pd.DataFrame) -> dict:
    """The summary's evidence sections: pooled paired differences, seeds, latent dynamics, probe fallbacks."""
    md: dict = {}
    diffs = read_table_or_none(warehouse, keys.PAIRED_DIFFERENCES, key)
    if diffs is not None:
        md["paired_pooled"] = meta_table(pooled_table(diffs.drop(columns=["cohort"])))
        md["paired_forest_plot"] = png_md(plots.paired_forest_png(diffs, key), f"{key}: paired differences")
        seeds = seed_summary(diffs)
        if len(seeds):
            md["seeds"] = meta_table(seeds.drop(columns=["cohort"]))
    latent = read_table_or_none(warehouse, keys.LATENT_DYNAMICS, key)
    if latent is not None:
        md["latent_dynamics"] = meta_table(latent_wide(latent.drop(columns=["cohort"])))
        md["latent_dynamics_plot"] = png_md(plots.latent_r2_png(latent, key), f"{key}: latent dynamics")
    fallbacks = count_fallbacks(metrics)
    md["probe_fallbacks"] = meta_table(fallbacks, ("probes",)) if len(fallbacks) else dg.MetadataValue.text("none")
    md["probe_fallbacks_total"] = int(fallbacks["probes"].sum()) if len(fallbacks) else 0
    return md


def summary_asset(project: Project, partitions: dg.PartitionsDefinition, metric_assets: list[str]):
    deps = [*metric_assets, keys.PAIRED_DIFFERENCES, keys.LATENT_DYNAMICS]

    @dg.asset(
        group_name="evaluation", kinds={"duckdb"}, deps=deps, partitions_def=partitions, **benchmark_options(project)
    )
    def benchmark_summary(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore
    ) -> dg.MaterializeResult:
        """Every recipe between the count baseline and the oracle: headline metric per task and horizon, the
        fraction of the baseline-to-oracle gap each recipe closes, an AUROC-by-horizon plot, the paired differences
        with their CIs, the latent-dynamics probe, the spread across seeds and the probe fallbacks."""
        key = context.partition_key
        metrics = read_table(warehouse, "probe_metrics", key)
        recipes = [a.removesuffix("_probe_metrics") for a in metric_assets]
        lacking = [r for r in recipes if r not in set(metrics["recipe"]) and r not in oracle_stage.ORACLES]
        if lacking:  # a declared recipe without metrics in this partition: say so, summarize the others
            context.log.warning(f"benchmark_summary[{key}]: no probe metrics yet for {', '.join(lacking)}")
        gaps = bench.gap_table(metrics)
        n = write_table(warehouse, "benchmark_summary", key, gaps.drop(columns=["cohort"]))
        summary = bench.gap_summary(gaps)
        wide = bench.benchmark_wide(metrics).drop(columns=["cohort"])
        reason = oracle_stage.oracle_unavailable(project, key)
        md = {
            "dagster/row_count": n,
            "auroc_by_horizon": png_md(bench.auroc_by_horizon_png(metrics, key), f"{key}: AUROC by horizon"),
            "gap_closed": meta_table(summary.drop(columns=["cohort"])),
            "table": meta_table(wide),
            "oracle": reason or "available",
            "missing_recipes": ", ".join(lacking) or "none",
        }
        for r in summary.itertuples():
            md[f"gap_closed_long/{r.recipe}"] = float(getattr(r, f"gap_closed_h{bench.LONG_HORIZON_DAYS}plus"))
        md.update(_evidence_metadata(warehouse, key, metrics))
        # did each JEPA objective learn (jepa_beats_mean_predictor) and do the embeddings clear the rank floor?
        md["training_health"] = meta_table(training_health(project, artifacts.root, [key]))
        return dg.MaterializeResult(data_version=data_version(frame_version(gaps)), metadata=md)

    return benchmark_summary
