"""ACES-task assets (present when some ``probes/*.yaml`` has ``kind: aces`` or ``kind: meds_labels``, a MEDS label
file: :mod:`ehr_assets.data.label_files`; both are tasks with their own prediction times and share these assets):
the task's own prediction times enter the graph beside the cohort's decision nodes.

* ``aces_labels`` (after ``subjects``): ACES run on the cohort's events for every ACES task of the cohort
  (:mod:`ehr_assets.data.aces_tasks`); table ``aces_labels`` with the columns of ``task_labels``. Blocking checks: every
  label window starts after its prediction time, every row carries its subject's split.
* ``aces_node_contexts`` (after ``token_sequences`` and every ``<root>_tokens``): the context of each ACES
  prediction time in every tokenization a recipe reads -- table ``aces_node_contexts`` (the shared default, columns of
  ``node_contexts``) and ``aces_recipe_node_contexts`` (keyed by ``tokens_asset``, ids of the context text). Blocking
  check: no context reads an event after its prediction time (the validator of ``node_contexts``).
* Downstream, :func:`prediction_nodes` (decision nodes plus ACES prediction times, one row per subject and time) is
  where every recipe's embeddings, the count baseline and the oracles take their features, and
  :func:`all_labels` is what ``<recipe>_probe_metrics`` probes; training never sees the ACES times.
"""

import dagster as dg
import pandas as pd
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from .. import keys
from ..data import aces_tasks as aces_stage
from ..specs import Project
from ..text import contexts, tokenizers
from ..text.recipe_tokens import contexts_at
from ..versions import frame_version
from ..warehouse import read_partition, replace_partitions, table_exists
from .io import POOL, read_table, tag_partition
from .metadata import meta_table, published_count
from .resources import ArtifactStore
from .sequences import text_table_of
from .versioning import FOLLOWS_DECLARATIONS, code_version, data_version, declaration_key

LABELS = "aces_labels"
CONTEXTS = "aces_node_contexts"
RECIPE_CONTEXTS = "aces_recipe_node_contexts"
NODE_KEY = ["subject_id", "prediction_time"]


def has_aces(project: Project) -> bool:
    """The project declares a task with its own prediction times (an ACES config or a MEDS label file)."""
    return any(p.own_times for p in project.probes.values())


def aces_deps(project: Project, asset: str = LABELS) -> list[str]:
    """``[asset]`` when the project declares an ACES task, else nothing (for the ``deps`` of consumers)."""
    return [asset] if has_aces(project) else []


def tokens_assets(project: Project) -> list[str]:
    """Every ``<root>_tokens`` asset of the project (the tokenizations besides the shared default)."""
    return list(dict.fromkeys(k for k in map(project.tokens_asset, project.recipes) if k))


# ------------------------------------------------------------------------------------------ what consumers read
def aces_rows(warehouse: DuckDBResource, table: str, key: str, order_by=NODE_KEY, **where) -> pd.DataFrame | None:
    """The cohort's rows of a table (``where``: extra partition columns), or None when there are none."""
    with warehouse.get_connection() as conn:
        if not table_exists(conn, table):
            return None
        df = read_partition(conn, table, {"cohort": key, **where}, order_by=order_by)
    return df.drop(columns=["cohort", *where]) if len(df) else None


def union_nodes(nodes: pd.DataFrame, extra: pd.DataFrame | None) -> pd.DataFrame:
    """``nodes`` plus the rows of ``extra`` at a (subject, time) not in ``nodes``, sorted by subject and time."""
    if extra is None or extra.empty:
        return nodes
    both = pd.concat([nodes, extra], ignore_index=True)
    both["prediction_time"] = both["prediction_time"].astype("datetime64[us]")
    both = both.drop_duplicates(NODE_KEY, keep="first")
    return both.sort_values(NODE_KEY, kind="stable").reset_index(drop=True)


def prediction_nodes(warehouse: DuckDBResource, key: str) -> pd.DataFrame:
    """Where features are taken: the decision nodes, plus every ACES prediction time."""
    nodes = read_table(warehouse, "decision_nodes", key, order_by=NODE_KEY).drop(columns=["cohort"])
    nodes["prediction_time"] = nodes["prediction_time"].astype("datetime64[us]")
    lab = aces_rows(warehouse, LABELS, key)
    return union_nodes(nodes, aces_stage.aces_nodes(lab) if lab is not None else None)


def all_labels(warehouse: DuckDBResource, key: str) -> pd.DataFrame:
    """``task_labels`` plus ``aces_labels`` of the cohort."""
    labels = read_table(warehouse, "task_labels", key)
    lab = aces_rows(warehouse, LABELS, key)
    return labels if lab is None else pd.concat([labels, lab.assign(cohort=key)[labels.columns]], ignore_index=True)


# ---------------------------------------------------------------------------------------------------------- assets
def aces_labels_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=LABELS,
        group_name="cohort",
        kinds={"duckdb"},
        deps=["subjects", "cohort_table", declaration_key("cohort_aces_tasks")],
        partitions_def=partitions,
        pool=POOL,
        code_version=code_version("labels"),
        automation_condition=FOLLOWS_DECLARATIONS,
    )
    def aces_labels(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Labels and prediction times of the tasks with their own times: ACES tasks (probes with kind: aces),
        extracted by ACES from the cohort's events, and MEDS label files (kind: meds_labels); MEDS label columns
        plus task, horizon_days (0), split, source_cohort, outcome_time (the label window's start)."""
        key = context.partition_key
        ev = read_table(warehouse, "cohort_table", key, columns=[*aces_stage.ACES_INPUT_COLUMNS, "source_cohort"])
        subj = read_table(
            warehouse, "subjects", key, columns=["subject_id", "split", "source_cohort", "first_time", "death_time"]
        )
        lab = aces_stage.cohort_aces_labels(project, key, ev, subj, log=context.log.info)
        with warehouse.get_connection() as conn:
            (n,) = replace_partitions(conn, [(LABELS, tag_partition(lab, key), {"cohort": key})])
        per = lab.groupby("task").agg(rows=("boolean_value", "size"), positives=("boolean_value", "sum")).reset_index()
        return dg.MaterializeResult(
            data_version=data_version(frame_version(lab)),
            metadata={
                "dagster/row_count": n,
                "prediction_times": published_count(len(aces_stage.aces_nodes(lab))),
                "tasks": meta_table(per, ("rows", "positives")),
            },
        )

    return aces_labels


def aces_contexts_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    recipe_tokens = tokens_assets(project)

    @dg.asset(
        name=CONTEXTS,
        group_name="sequences",
        kinds={"duckdb"},
        deps=["token_sequences", LABELS, *recipe_tokens, *(["smb_v1_text"] if project.uses_format("smb_v1") else [])],
        partitions_def=partitions,
        pool=POOL,
        code_version=code_version("text"),
        automation_condition=FOLLOWS_DECLARATIONS,
    )
    def aces_node_contexts(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        """Per ACES prediction time: its context in the shared tokenization and in every <root>_tokens one."""
        key = context.partition_key
        lab = aces_rows(warehouse, LABELS, key)
        nodes = aces_stage.aces_nodes(lab) if lab is not None else pd.DataFrame(columns=NODE_KEY)
        seq = read_table(
            warehouse, "token_sequences", key, columns=["subject_id", "block_times", "block_ends", "n_tokens"]
        )
        writes = [(CONTEXTS, tag_partition(contexts.node_contexts(seq, nodes), key), {"cohort": key})]
        for tk in recipe_tokens:
            writes.append(
                (
                    RECIPE_CONTEXTS,
                    tag_partition(recipe_contexts(warehouse, artifacts, project, key, tk, nodes), key, tokens_asset=tk),
                    {"cohort": key, "tokens_asset": tk},
                )
            )
        with warehouse.get_connection() as conn:
            n = replace_partitions(conn, writes)[0]
        return dg.MaterializeResult(
            data_version=data_version(frame_version(*(w[1] for w in writes))),
            metadata={"dagster/row_count": n, "tokenizations": 1 + len(recipe_tokens)},
        )

    return aces_node_contexts


def recipe_contexts(warehouse, artifacts, project: Project, key: str, tokens_key: str, nodes: pd.DataFrame):
    """ACES contexts in one ``<root>_tokens`` tokenization (:func:`ehr_assets.text.recipe_tokens.contexts_at`)."""
    fmt = project.recipes[keys.parse(tokens_key)[0]].format
    with warehouse.get_connection() as conn:
        where = {"cohort": key, "tokens_asset": tokens_key}
        seq = read_partition(
            conn, "recipe_token_sequences", where, columns=["subject_id", "block_times", "block_char_ends"]
        )
        texts = read_partition(conn, text_table_of(fmt), {"cohort": key}, columns=["subject_id", "text"])
    tok = tokenizers.load_tokenizer_folder(artifacts.path(tokens_key, key))
    return contexts_at(texts, seq, nodes, tok, fmt)
