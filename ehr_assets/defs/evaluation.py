"""Evaluation assets: linear probes on node features, the floor and the ceiling, and the per-cohort summary.

* ``<recipe>_probe_metrics`` for every recipe (:func:`probe_metrics_asset`, shared by trained and frozen recipes),
  ``count_baseline_probe_metrics`` (code counts + age) and one ``<variant>_probe_metrics`` per oracle variant of
  :data:`ehr_assets.eval.oracle.ORACLES`: all write their rows to ``probe_metrics`` / ``probe_predictions``.
* ``cohort_latent``: the synthetic cohorts' hidden state, read by the oracle probes only (no model asset depends on
  it); a cohort with a non-synthetic member stores no rows and says why.
* ``benchmark_summary``, ``paired_differences`` and ``latent_dynamics`` live in :mod:`.benchmark`.
"""

import dagster as dg
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource
from meds import train_split

from .. import keys
from ..eval import oracle as oracle_stage
from ..eval.baseline import count_features, select_count_vocab
from ..eval.probe_metrics import evaluate
from ..specs import Project
from ..versions import digest, frame_version, recipe_declaration
from ..warehouse import replace_partitions
from .aces import aces_deps, all_labels, prediction_nodes
from .io import clear_rows, load_embeddings, read_table, write_table
from .metadata import meta_table, utc_now
from .resources import ArtifactStore, Compute
from .versioning import FOLLOWS_DECLARATIONS, code_version, data_version, declaration_key

LATENT_TABLE = "cohort_latent"


def probe_and_write(context, warehouse: DuckDBResource, project: Project, key: str, recipe: str, features, nodes):
    """Probe every task of cohort ``key`` on ``features`` (one row per row of ``nodes``) and replace ``recipe``'s rows
    of ``probe_metrics`` and ``probe_predictions`` in one transaction."""
    labels = all_labels(warehouse, key)  # task_labels, plus the ACES tasks' labels when the project has some
    labels["prediction_time"] = labels["prediction_time"].astype("datetime64[us]")
    nodes = nodes.assign(prediction_time=nodes["prediction_time"].astype("datetime64[us]"))
    kinds = {p.name: p.probe_kind for p in project.probes.values()}
    minimum = project.settings.small_samples
    metrics, preds = evaluate(key, recipe, features, nodes, labels, kinds, log=context.log.info, minimum=minimum)
    metrics["materialized_at"] = utc_now()
    with warehouse.get_connection() as conn:  # metrics and the predictions they come from: one transaction
        replace_partitions(
            conn,
            [
                ("probe_metrics", metrics, {"cohort": key, "recipe": recipe}),
                ("probe_predictions", preds, {"cohort": key, "recipe": recipe}),
            ],
        )
    main = metrics[metrics["metric"].isin(["auroc", "c_index"])][
        ["task", "horizon_days", "metric", "value", "ci_low", "ci_high", "n", "n_pos", "too_few"]
    ]
    return dg.MaterializeResult(
        data_version=data_version(frame_version(metrics, preds)),
        metadata={
            "dagster/row_count": len(metrics),
            "metrics": meta_table(main, ("n", "n_pos")),
            # below project.yaml's small_samples minimum: flagged, never a point estimate in the human tables
            "too_few_to_score": int(main["too_few"].sum()),
            "mean_auroc": float(metrics.loc[metrics["metric"] == "auroc", "value"].mean()),
        },
    )


def probe_metrics_asset(project: Project, name: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """``<name>_probe_metrics``: probes on the ``<name>_embeddings`` artifact."""
    emb_key = keys.embeddings(name)

    @dg.asset(
        name=keys.probe_metrics(name),
        group_name="evaluation",
        kinds={"duckdb", "sklearn"},
        deps=[emb_key, "task_labels", *aces_deps(project)],
        partitions_def=partitions,
        code_version=code_version(
            "probes", probe_declaration(project, recipe_declaration(project, name, keys.PROBE_METRICS))
        ),
        automation_condition=FOLLOWS_DECLARATIONS,
        description=f"Linear probes on '{name}' embeddings: logistic AUROC/AUPRC, Cox C-index, on held_out.",
    )
    def probe_metrics(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore, compute: Compute
    ):
        key = context.partition_key
        emb, index = load_embeddings(artifacts.path(emb_key, key))
        return probe_and_write(context, warehouse, project, key, name, emb, index)

    return probe_metrics


def probe_declaration(project: Project, recipe: dict | None = None) -> dict:
    """What a probe-metrics asset reads besides its stage code: the recipe (of a recipe's probes) and the
    project's small-sample minimum (``project.yaml``), which decides the ``too_few`` flags it writes."""
    return {"recipe": recipe, "small_samples": project.settings.small_samples.model_dump(mode="json")}


def count_baseline_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=keys.probe_metrics(keys.COUNT_BASELINE),
        group_name="evaluation",
        kinds={"duckdb", "sklearn"},
        deps=["task_labels", "decision_nodes", "cohort_table", "subjects", *aces_deps(project)],
        partitions_def=partitions,
        code_version=code_version("probes", probe_declaration(project)),
        automation_condition=FOLLOWS_DECLARATIONS,
    )
    def count_baseline_probe_metrics(context: AssetExecutionContext, warehouse: DuckDBResource, compute: Compute):
        """The count-feature baseline: log counts of the most frequent codes in the context, plus age."""
        key = context.partition_key
        ev = read_table(warehouse, "cohort_table", key, columns=["subject_id", "time", "code"])
        ev["time"] = ev["time"].astype("datetime64[us]")
        subj = read_table(warehouse, "subjects", key)
        nodes = prediction_nodes(warehouse, key)  # decision nodes, plus ACES prediction times
        vocab = select_count_vocab(ev, subj.loc[subj["split"] == train_split, "subject_id"].to_numpy())
        feats = count_features(ev, nodes, vocab)
        return probe_and_write(context, warehouse, project, key, keys.COUNT_BASELINE, feats, nodes)

    return count_baseline_probe_metrics


def latent_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=LATENT_TABLE,
        group_name="oracle",
        kinds={"duckdb"},
        deps=[declaration_key("cohort_source")],  # the simulator's declared profile, size and seed
        partitions_def=partitions,
        code_version=code_version("probes"),
        automation_condition=FOLLOWS_DECLARATIONS,
    )
    def cohort_latent(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """The hidden state of a synthetic cohort's simulator, one row per visit / time step. Read by the oracle
        probes only; a cohort with a non-synthetic member has none (no rows, the reason in the metadata)."""
        key = context.partition_key
        reason = oracle_stage.oracle_unavailable(project, key)
        if reason:
            clear_rows(warehouse, LATENT_TABLE, {"cohort": key})
            context.log.info(reason)
            return dg.MaterializeResult(
                data_version=data_version(digest(reason)), metadata={"dagster/row_count": 0, "oracle": reason}
            )
        lat = oracle_stage.cohort_latent(project, key)
        n = write_table(warehouse, LATENT_TABLE, key, lat)
        return dg.MaterializeResult(
            data_version=data_version(frame_version(lat)),
            metadata={
                "dagster/row_count": n,
                "subjects": int(lat["subject_id"].nunique()),
                "columns": ", ".join(oracle_stage.LATENT_TABLE_COLUMNS),
                "oracle": "available",
            },
        )

    return cohort_latent


def oracle_asset(project: Project, variant: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    columns = oracle_stage.ORACLES[variant]

    @dg.asset(
        name=keys.probe_metrics(variant),
        group_name="oracle",
        kinds={"duckdb", "sklearn"},
        deps=[LATENT_TABLE, "decision_nodes", "task_labels", *aces_deps(project)],
        partitions_def=partitions,
        code_version=code_version("probes", probe_declaration(project)),
        automation_condition=FOLLOWS_DECLARATIONS,
        description=f"The recipes' probes on the true latent state at each decision node ({', '.join(columns)}): "
        "the ceiling of the benchmark. Synthetic cohorts only.",
    )
    def oracle_probe_metrics(
        context: AssetExecutionContext, warehouse: DuckDBResource, compute: Compute
    ) -> dg.MaterializeResult:
        key = context.partition_key
        reason = oracle_stage.oracle_unavailable(project, key)
        if reason:
            for table in ("probe_metrics", "probe_predictions"):
                clear_rows(warehouse, table, {"cohort": key, "recipe": variant})
            context.log.info(reason)
            return dg.MaterializeResult(
                data_version=data_version(digest(reason)), metadata={"dagster/row_count": 0, "oracle": reason}
            )
        nodes = prediction_nodes(warehouse, key)  # decision nodes, plus ACES prediction times
        latent = read_table(warehouse, LATENT_TABLE, key)
        snap = oracle_stage.latent_at_nodes(latent, nodes)
        feats = oracle_stage.oracle_features(snap, variant)
        return probe_and_write(context, warehouse, project, key, variant, feats, nodes)

    return oracle_probe_metrics


def oracle_metric_assets() -> list[str]:
    """The oracle variants' metric asset names."""
    return [keys.probe_metrics(v) for v in oracle_stage.ORACLES]
