"""Sequence assets: what a model reads.

* ``tokenizer`` / ``token_sequences`` / ``node_contexts``: the shared default path (``delimited`` text, word-level
  tokenizer fitted on the train split), read by every recipe with a config-built backbone.
* ``smb_v1_text`` (when a recipe reads ``format: smb_v1``): each subject's SMB-v1 text with day blocks.
* ``<root>_tokens`` (one per ``init_from`` chain whose format or tokenizer is not the default): the text tokenized with
  the chain's local HF tokenizer plus added tokens; tables ``recipe_token_sequences`` and ``recipe_node_contexts``
  keyed by (``cohort``, ``tokens_asset``), and the tokenizer folder as an artifact (docs/how-to/backbones.md).
"""

import json
import time

import dagster as dg
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from ..specs import Project, RecipeSpec
from ..text import contexts, sequence_tables, smb_v1, timelines, tokenizers
from ..text.recipe_tokens import recipe_token_tables
from ..versions import digest, files_version, frame_version, recipe_declaration
from ..warehouse import atomic_dir, replace_partitions
from .io import POOL, read_table, tag_partition, write_table
from .resources import ArtifactStore, Compute
from .versioning import FOLLOWS_DECLARATIONS, code_version, data_version

TEXT = {"code_version": code_version("text"), "automation_condition": FOLLOWS_DECLARATIONS}

SERIALIZED_COLUMNS = ["subject_id", "time", "code", "numeric_value", "text_value", "table"]  # what the format reads


def text_table_of(fmt: str) -> str:
    """The warehouse table holding each subject's text in serialization format ``fmt``."""
    return "smb_v1_text" if fmt == "smb_v1" else "token_sequences"


def tokenizer_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        group_name="sequences",
        kinds={"huggingface"},
        deps=["subjects", "cohort_table"],
        partitions_def=partitions,
        pool=POOL,
        **TEXT,
    )
    def tokenizer(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore, compute: Compute
    ):
        """Offline word-level tokenizer: vocabulary and numeric-value bins fitted on the train split (the
        vocabulary is counted from the events' columns; nothing is serialized here)."""
        key = context.partition_key
        ev = read_table(warehouse, "cohort_table", key, columns=SERIALIZED_COLUMNS)
        subj = read_table(warehouse, "subjects", key)
        fast, edges = tokenizers.tokenizer_from_events(ev, subj)
        dest = artifacts.path("tokenizer", key)
        with atomic_dir(dest) as tmp:
            tokenizers.save_tokenizer(fast, edges, tmp)
        return dg.MaterializeResult(
            data_version=data_version(files_version(dest)),
            metadata={"vocab_size": len(fast), "binned_codes": len(edges), "path": dg.MetadataValue.path(str(dest))},
        )

    return tokenizer


def token_sequences_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        group_name="sequences",
        kinds={"duckdb"},
        deps=["tokenizer", "decision_nodes", "cohort_table", "subjects"],
        partitions_def=partitions,
        pool=POOL,
        **TEXT,
    )
    def token_sequences(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore
    ) -> dg.MaterializeResult:
        """Each subject's serialized timeline (delimited format; the block ending each decision node's context
        carries the age at the node), its token ids and its time-block offsets, for the whole cohort at once."""
        key = context.partition_key
        t0 = time.perf_counter()
        ev = read_table(warehouse, "cohort_table", key, columns=SERIALIZED_COLUMNS)
        nodes = read_table(warehouse, "decision_nodes", key, columns=["subject_id", "prediction_time"])
        subj = read_table(warehouse, "subjects", key, columns=["subject_id", "split", "source_cohort"])
        fast, edges = tokenizers.load_tokenizer(artifacts.path("tokenizer", key))
        context.log.info(f"serializing {len(ev):,} events of {len(subj):,} subjects ({time.perf_counter() - t0:.1f} s)")
        tl = timelines.build_timelines(ev, edges, nodes)
        del ev
        ser = sequence_tables.sequence_table(tl, fast.get_vocab(), fast.unk_token_id)
        ser = ser.merge(subj, on="subject_id", how="left")
        context.log.info(f"serialized {int(tl.n_words.sum()):,} tokens; writing ({time.perf_counter() - t0:.1f} s)")
        n = write_table(warehouse, "token_sequences", key, ser)
        lengths = ser["n_tokens"]
        return dg.MaterializeResult(
            data_version=data_version(frame_version(ser)),
            metadata={
                "dagster/row_count": n,
                "tokens": int(lengths.sum()),
                "tokens_per_subject_median": float(lengths.median()),
                "tokens_per_subject_p90": float(lengths.quantile(0.9)),
                "unk_rate": round(float(ser["n_unk"].sum() / max(lengths.sum(), 1)), 5),
                "wall_s": round(time.perf_counter() - t0, 2),
            },
        )

    return token_sequences


def node_contexts_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        group_name="sequences",
        kinds={"duckdb"},
        deps=["token_sequences", "decision_nodes"],
        partitions_def=partitions,
        pool=POOL,
        **TEXT,
    )
    def node_contexts(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Per decision node: where its context ends in the subject's tokens (everything at or before the node)."""
        key = context.partition_key
        seq = read_table(
            warehouse, "token_sequences", key, columns=["subject_id", "block_times", "block_ends", "n_tokens"]
        )
        nodes = read_table(warehouse, "decision_nodes", key)
        ctx = contexts.node_contexts(seq, nodes)
        n = write_table(warehouse, "node_contexts", key, ctx)
        return dg.MaterializeResult(
            data_version=data_version(frame_version(ctx)),
            metadata={
                "dagster/row_count": n,
                "context_tokens_median": float(ctx["context_end"].median()),
                "future_tokens_median": float((ctx["n_tokens"] - ctx["context_end"]).median()),
            },
        )

    return node_contexts


def smb_v1_text_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        group_name="sequences",
        kinds={"duckdb"},
        deps=["decision_nodes", "cohort_table", "subjects"],
        partitions_def=partitions,
        pool=POOL,
        **TEXT,
    )
    def smb_v1_text(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Each subject's timeline in the SMB-v1 text layout (what the released checkpoints read), with its day
        blocks as character offsets; days holding a decision node are split at the node (see ehr_assets.text.smb_v1)."""
        key = context.partition_key
        ev = read_table(warehouse, "cohort_table", key).drop(columns=["cohort"])
        ev["time"] = ev["time"].astype("datetime64[us]")
        nodes = read_table(warehouse, "decision_nodes", key, columns=["subject_id", "prediction_time"])
        nodes["prediction_time"] = nodes["prediction_time"].astype("datetime64[us]")
        subj = read_table(warehouse, "subjects", key, columns=["subject_id", "split", "source_cohort"])
        ser = smb_v1.smb_v1_cohort(ev, nodes, log=context.log.info)
        ser["block_times"] = [list(np.asarray(b, dtype="datetime64[us]")) for b in ser["block_times"]]
        ser["n_chars"] = ser["text"].str.len().astype("int64")
        ser = ser.merge(subj, on="subject_id", how="left")
        n = write_table(warehouse, "smb_v1_text", key, ser)
        return dg.MaterializeResult(
            data_version=data_version(frame_version(ser)),
            metadata={
                "dagster/row_count": n,
                "chars_per_subject_median": float(ser["n_chars"].median()),
                "see_a_subject": "python -m ehr_assets.serialize --format smb_v1 --meds-parquet FILE --subject ID"
                " (no patient text is published in metadata)",
            },
        )

    return smb_v1_text


def _tokens_metadata(tok, info: dict, seq: pd.DataFrame, ctx: pd.DataFrame, n: int) -> dict:
    unk = tok.unk_token_id
    n_tok = max(int(seq["n_tokens"].sum()), 1)
    return {
        "dagster/row_count": n,
        "vocab_size": len(tok),
        "added_tokens": len(info["added_tokens"]),
        "tokens": int(seq["n_tokens"].sum()),
        "tokens_per_subject_median": float(seq["n_tokens"].median()) if n else 0.0,
        "context_tokens_median": float(ctx["n_context_tokens"].median()) if len(ctx) else 0.0,
        "unk_rate": round(float(sum(int((np.asarray(x) == unk).sum()) for x in seq["input_ids"]) / n_tok), 5)
        if unk is not None
        else 0.0,
    }


def tokens_asset(project: Project, asset_key: str, recipe: RecipeSpec, partitions) -> dg.AssetsDefinition:
    """``<root>_tokens`` of the chain whose root is ``recipe``."""
    fmt = recipe.format
    text_table = text_table_of(fmt)
    users = [n for n in project.recipes if project.tokens_asset(n) == asset_key]

    @dg.asset(
        name=asset_key,
        group_name="sequences",
        kinds={"huggingface", "duckdb"},
        deps=[text_table, "decision_nodes"],
        partitions_def=partitions,
        pool=POOL,
        code_version=code_version("text", recipe_declaration(project, recipe.name, "tokens")),
        automation_condition=FOLLOWS_DECLARATIONS,
        description=f"{fmt} text tokenized with the tokenizer of {recipe.tokenizer_path} (plus added tokens), for "
        f"recipe(s) {', '.join(users)}: timelines and decision-node contexts (tables recipe_token_sequences, "
        "recipe_node_contexts) and the tokenizer folder.",
    )
    def tokens(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore, compute: Compute):

        key = context.partition_key
        t0 = time.perf_counter()
        texts = read_table(
            warehouse,
            text_table,
            key,
            columns=["subject_id", "text", "block_times", "block_ends", "split", "source_cohort"],
        )
        try:
            tok, info = tokenizers.prepare_tokenizer(recipe.tokenizer_path, fmt, trainable=not recipe.is_frozen)
        except tokenizers.TokenizerError as e:
            raise tokenizers.TokenizerError(
                f"recipe {recipe.name!r} (models/{recipe.name}.yaml, backbone): {e}"
            ) from None
        nodes = read_table(warehouse, "decision_nodes", key).drop(columns=["cohort"])
        seq, ctx = recipe_token_tables(texts, nodes, tok, fmt)
        dest = artifacts.path(asset_key, key)
        where = {"cohort": key, "tokens_asset": asset_key}
        with atomic_dir(dest) as tmp:  # the tokenizer folder is renamed into place only after both tables commit
            tok.save_pretrained(str(tmp))
            (tmp / "tokenization.json").write_text(json.dumps({"format": fmt, **info}, indent=2))
            with warehouse.get_connection() as conn:
                n, _ = replace_partitions(
                    conn,
                    [
                        ("recipe_token_sequences", tag_partition(seq, key, tokens_asset=asset_key), where),
                        ("recipe_node_contexts", tag_partition(ctx, key, tokens_asset=asset_key), where),
                    ],
                )
        md = _tokens_metadata(tok, info, seq, ctx, n)
        return dg.MaterializeResult(
            data_version=data_version(digest([frame_version(seq, ctx), files_version(dest)])),
            metadata={**md, "wall_s": round(time.perf_counter() - t0, 2), "path": dg.MetadataValue.path(str(dest))},
        )

    return tokens


def build_sequence_assets(project: Project, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The default path's three assets, ``smb_v1_text`` when a recipe reads that format, and one ``<root>_tokens``
    asset per recipe chain whose tokenization is not the default."""
    assets = [tokenizer_asset(partitions), token_sequences_asset(partitions), node_contexts_asset(partitions)]
    if project.uses_format("smb_v1"):
        assets.append(smb_v1_text_asset(partitions))
    owners: dict[str, RecipeSpec] = {}
    for name in project.recipes:  # dependency order: a chain's root comes first
        key = project.tokens_asset(name)
        if key is not None:
            owners.setdefault(key, project.recipes[name])
    return assets + [tokens_asset(project, key, recipe, partitions) for key, recipe in owners.items()]
