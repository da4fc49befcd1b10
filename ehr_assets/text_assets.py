"""Dagster assets for recipe-dependent text and tokens (see README "How token ids are keyed"), and frozen recipes.

* ``smb_v1_text`` (per cohort, when a recipe reads ``format: smb_v1``): each subject's SMB-v1 text with day blocks.
* ``<root>_tokens`` (per cohort, one per ``init_from`` chain whose format or tokenizer is not the default): the text
  tokenized with the chain's local HF tokenizer plus added tokens; tables ``recipe_token_sequences`` and
  ``recipe_node_contexts`` keyed by (``cohort``, ``tokens_asset``), and the tokenizer folder as an artifact.
* ``objective: frozen`` recipes: ``<recipe>_embeddings`` from the model folder as it is, then probes.

The default recipes (delimited text, config-built backbone) do not use this module: they read ``token_sequences``.
"""

import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from . import sequences as seq_stage
from .assets import POOL, ArtifactStore, _probe_metrics_asset, _read, _save_embeddings, _tag, _write
from .specs import Project, RecipeSpec
from .warehouse import atomic_dir, read_recipe_tokens, replace_partitions


def recipe_special_ids(tokens_dir: Path) -> dict:
    """pad/mask/bos/eos ids and vocabulary size of a ``<recipe>_tokens`` tokenizer folder."""
    from .tokenization import load_tokenizer_folder, special_ids

    tok = load_tokenizer_folder(tokens_dir)
    return {**special_ids(tok), "vocab_size": len(tok)}


def _read_recipe(warehouse: DuckDBResource, table: str, cohort: str, tokens_key: str, **kw) -> pd.DataFrame:
    with warehouse.get_connection() as conn:
        return read_recipe_tokens(conn, table, cohort, tokens_key, **kw)


def load_recipe_train_data(warehouse: DuckDBResource, cohort: str, tokens_key: str, tokens_dir: Path):
    """:class:`TrainData` from a ``<recipe>_tokens`` asset (see :func:`training.recipe_train_data_from_warehouse`)."""
    from .training import recipe_train_data_from_warehouse

    with warehouse.get_connection() as conn:
        return recipe_train_data_from_warehouse(conn, cohort, tokens_key, tokens_dir)


def load_recipe_contexts(warehouse: DuckDBResource, cohort: str, tokens_key: str, max_tokens: int):
    """Every decision node's context tokens from a ``<recipe>_tokens`` asset (the last ``max_tokens``)."""
    ctx = _read_recipe(warehouse, "recipe_node_contexts", cohort, tokens_key,
                       order_by=["subject_id", "prediction_time"])
    contexts = [np.asarray(c, dtype=np.int64)[-max_tokens:] for c in ctx["context_ids"]]
    index = ctx.drop(columns=["cohort", "tokens_asset", "context_ids"])
    return contexts, index


def build_frozen_assets(
    project: Project, recipe: RecipeSpec, partitions: dg.PartitionsDefinition, tokens_key: str
) -> list[dg.AssetsDefinition]:
    """``objective: frozen``: no checkpoint; embeddings straight from the backbone folder, then probes."""
    name = recipe.name
    emb_key = f"{name}_embeddings"

    @dg.asset(
        name=emb_key,
        group_name="embeddings",
        kinds={"pytorch"},
        deps=[tokens_key],
        partitions_def=partitions,
        description=f"Embeddings of the frozen model {recipe.backbone.path} ({recipe.format} text, "
        f"{recipe.embedding.pool} pooling) at every decision node; nothing is trained. {recipe.description}",
        metadata={"recipe": json.dumps(recipe.model_dump(mode="json"))},
    )
    def embeddings(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        from .embeddings import embed_frozen

        key = context.partition_key
        t0 = time.perf_counter()
        contexts, index = load_recipe_contexts(warehouse, key, tokens_key, recipe.embed_tokens)
        sp = recipe_special_ids(artifacts.path(tokens_key, key))
        emb = embed_frozen(
            Path(recipe.backbone.path),
            contexts,
            vocab_size=sp["vocab_size"],
            pool=recipe.embedding.pool,
            batch_size=recipe.embedding.batch_size,
            pad_id=sp["pad_id"],
            bf16=recipe.training.precision == "bf16",
            seed=recipe.training.seed,
            log=context.log.info,
        )
        return _save_embeddings(artifacts.path(emb_key, key), emb, index, t0)

    return [embeddings, _probe_metrics_asset(project, name, partitions)]


def build_text_assets(project: Project, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """``smb_v1_text`` when a recipe reads that format (the ``delimited`` text lives in ``token_sequences``)."""
    if not project.uses_format("smb_v1"):
        return []

    @dg.asset(group_name="sequences", kinds={"duckdb"}, deps=["decision_nodes"], partitions_def=partitions, pool=POOL)
    def smb_v1_text(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Each subject's timeline in the SMB-v1 text layout (what the released checkpoints read), with its day
        blocks as character offsets; days holding a decision node are split at the node (see ehr_assets.serialize)."""
        from .serialize import smb_v1_cohort

        key = context.partition_key
        ev = _read(warehouse, "cohort_table", key).drop(columns=["cohort"])
        ev["time"] = ev["time"].astype("datetime64[us]")
        nodes = _read(warehouse, "decision_nodes", key, columns=["subject_id", "prediction_time"])
        nodes["prediction_time"] = nodes["prediction_time"].astype("datetime64[us]")
        subj = _read(warehouse, "subjects", key, columns=["subject_id", "split", "source_cohort"])
        ser = smb_v1_cohort(ev, nodes, log=context.log.info)
        ser["block_times"] = [list(np.asarray(b, dtype="datetime64[us]")) for b in ser["block_times"]]
        ser["n_chars"] = ser["text"].str.len().astype("int64")
        ser = ser.merge(subj, on="subject_id", how="left")
        n = _write(warehouse, "smb_v1_text", key, ser)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": n,
                "chars_per_subject_median": float(ser["n_chars"].median()),
                "see_a_subject": "python -m ehr_assets.serialize --format smb_v1 --meds-parquet FILE --subject ID"
                                 " (no patient text is published in metadata)",
            }
        )

    return [smb_v1_text]


def build_tokens_assets(project: Project, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """One ``<recipe>_tokens`` asset per recipe chain whose tokenization is not the default (module README)."""
    owners: dict[str, RecipeSpec] = {}
    for name in project.recipes:  # dependency order: a chain's root comes first
        key = project.tokens_asset(name)
        if key is not None:
            owners.setdefault(key, project.recipes[name])
    return [_tokens_asset(project, key, recipe, partitions) for key, recipe in owners.items()]


def text_table_of(fmt: str) -> str:
    """The warehouse table holding each subject's text in serialization format ``fmt``."""
    return "smb_v1_text" if fmt == "smb_v1" else "token_sequences"


def _tokens_asset(project: Project, asset_key: str, recipe: RecipeSpec, partitions) -> dg.AssetsDefinition:
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
        description=f"{fmt} text tokenized with the tokenizer of {recipe.tokenizer_path} (plus added tokens), for "
        f"recipe(s) {', '.join(users)}: timelines and decision-node contexts (tables recipe_token_sequences, "
        "recipe_node_contexts) and the tokenizer folder.",
    )
    def tokens(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        from . import tokenization as tk
        from .serialize import delimited_char_ends

        key = context.partition_key
        t0 = time.perf_counter()
        texts = _read(warehouse, text_table, key,
                      columns=["subject_id", "text", "block_times", "block_ends", "split", "source_cohort"])
        char_ends = [list(map(int, e)) for e in texts["block_ends"]]
        if fmt == "delimited":  # token_sequences holds word offsets
            char_ends = [delimited_char_ends(t, e) for t, e in zip(texts["text"], char_ends)]
        try:
            tok, info = tk.prepare_tokenizer(recipe.tokenizer_path, fmt, trainable=not recipe.is_frozen)
        except tk.TokenizerError as e:
            raise tk.TokenizerError(f"recipe {recipe.name!r} (models/{recipe.name}.yaml, backbone): {e}") from None
        enc = tk.encode_with_offsets(tok, texts["text"].tolist(), fmt)
        seq = texts[["subject_id", "split", "source_cohort"]].copy()
        seq["input_ids"] = [ids.tolist() for ids, _, _ in enc]
        seq["n_tokens"] = np.asarray([len(ids) for ids, _, _ in enc], dtype=np.int64)
        seq["block_times"] = [list(np.asarray(b, dtype="datetime64[us]")) for b in texts["block_times"]]
        seq["block_char_ends"] = char_ends
        seq["block_ends"] = [tk.token_ends(ce, ends) for ce, (_, ends, _) in zip(char_ends, enc)]

        nodes = _read(warehouse, "decision_nodes", key).drop(columns=["cohort"])
        by_chars = pd.DataFrame({"subject_id": texts["subject_id"], "block_times": seq["block_times"],
                                 "block_ends": char_ends, "n_tokens": texts["text"].str.len()})
        ctx = seq_stage.node_contexts(by_chars, nodes).rename(
            columns={"context_end": "context_char_end", "n_tokens": "n_chars"})
        text_of = dict(zip(texts["subject_id"], texts["text"]))
        starts_of = {s: st for s, (_, _, st) in zip(texts["subject_id"], enc)}
        n_of = dict(zip(seq["subject_id"], seq["n_tokens"]))
        cuts = list(zip(ctx["subject_id"], ctx["context_char_end"]))
        ctx_ids = tk.encode(tok, [text_of[s][:c] for s, c in cuts], fmt)
        ctx["context_ids"] = [x.tolist() for x in ctx_ids]
        ctx["n_context_tokens"] = np.asarray([len(x) for x in ctx_ids], dtype=np.int64)
        ctx["future_start"] = np.asarray([tk.first_token_at(starts_of[s], c) for s, c in cuts], dtype=np.int64)
        ctx["n_tokens"] = np.asarray([n_of[s] for s, _ in cuts], dtype=np.int64)

        dest = artifacts.path(asset_key, key)
        where = {"cohort": key, "tokens_asset": asset_key}
        with atomic_dir(dest) as tmp:  # the tokenizer folder is renamed into place only after both tables commit
            tok.save_pretrained(str(tmp))
            (tmp / "tokenization.json").write_text(json.dumps({"format": fmt, **info}, indent=2))
            with warehouse.get_connection() as conn:
                n, _ = replace_partitions(conn, [
                    ("recipe_token_sequences", _tag(seq, key, tokens_asset=asset_key), where),
                    ("recipe_node_contexts", _tag(ctx, key, tokens_asset=asset_key), where),
                ])
        unk = tok.unk_token_id
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": n,
                "vocab_size": len(tok),
                "added_tokens": len(info["added_tokens"]),
                "tokens": int(seq["n_tokens"].sum()),
                "tokens_per_subject_median": float(seq["n_tokens"].median()) if n else 0.0,
                "context_tokens_median": float(ctx["n_context_tokens"].median()) if len(ctx) else 0.0,
                "unk_rate": round(float(sum(int((np.asarray(x) == unk).sum()) for x in seq["input_ids"])
                                        / max(int(seq["n_tokens"].sum()), 1)), 5) if unk is not None else 0.0,
                "wall_s": round(time.perf_counter() - t0, 2),
                "path": dg.MetadataValue.path(str(dest)),
            }
        )

    return tokens
