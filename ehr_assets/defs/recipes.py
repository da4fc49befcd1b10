"""Recipe assets, one set per ``models/<recipe>.yaml``: ``<recipe>_checkpoint`` (training, :mod:`ehr_assets.train`)
-> ``<recipe>_embeddings`` (:mod:`ehr_assets.embed`) -> ``<recipe>_probe_metrics`` (:mod:`.evaluation`).
An ``objective: frozen`` recipe has no checkpoint: its embeddings come from the model folder as it is.

A recipe on the default tokenization reads ``token_sequences`` / ``node_contexts`` / ``tokenizer``; any other reads its
chain's ``<root>_tokens`` asset (:meth:`ehr_assets.specs.Project.tokens_asset`).
"""

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from .. import keys
from ..compute import COMPUTE_KEYS, compute_record
from ..specs import Project, RecipeSpec
from ..stats import curve_tail_mean
from ..text.contexts import crop_context
from ..text.tokenizers import load_tokenizer, load_tokenizer_folder, special_ids
from ..versions import files_version, recipe_declaration
from ..warehouse import atomic_dir, resume_dir
from .aces import CONTEXTS as ACES_CONTEXTS
from .aces import RECIPE_CONTEXTS as ACES_RECIPE_CONTEXTS
from .aces import aces_deps, aces_rows, union_nodes
from .evaluation import probe_metrics_asset
from .io import read_table, read_tokens_table, save_embeddings
from .k8s import op_tags
from .metadata import loss_curve_md
from .resources import ArtifactStore, Compute, Trainer
from .versioning import code_version, data_version

# what a checkpoint folder holds besides the weights that says how the run went, not what it made
RUN_RECORD_FILES = ("train_log.json",)


# ------------------------------------------------------------------------------------------------ reading the inputs
def load_train_data(warehouse: DuckDBResource, cohort: str, tokens_key: str | None, tokenizer_dir: Path):
    """The train split's timelines and decision-node (context, future) examples, as ``TrainData``: from the shared
    default tables (``tokens_key`` None) or from a ``<root>_tokens`` asset."""
    from ..train.data import read_train_data

    with warehouse.get_connection() as conn:
        return read_train_data(conn, cohort, tokens_key, tokenizer_dir)


def load_contexts(warehouse: DuckDBResource, cohort: str, seq_len: int) -> tuple[list[np.ndarray], pd.DataFrame]:
    """Every decision node's context tokens, at most ``seq_len`` (:func:`ehr_assets.text.contexts.crop_context`:
    the header, then the most recent tokens up to the node), and the node index."""
    seq = read_table(warehouse, "token_sequences", cohort, columns=["subject_id", "input_ids"])
    ids = dict(zip(seq["subject_id"], seq["input_ids"]))
    ctx = read_table(warehouse, "node_contexts", cohort, order_by=["subject_id", "prediction_time"])
    ctx = union_nodes(ctx.drop(columns=["cohort"]), aces_rows(warehouse, ACES_CONTEXTS, cohort))  # + ACES times
    header = ctx["header_end"].fillna(0) if "header_end" in ctx else np.zeros(len(ctx))  # older tables: no header
    contexts = [
        crop_context(ids[s], e, seq_len, h).astype(np.int64)
        for s, e, h in zip(ctx["subject_id"], ctx["context_end"], header)
    ]
    return contexts, ctx


def load_recipe_contexts(warehouse: DuckDBResource, cohort: str, tokens_key: str, max_tokens: int):
    """Every decision node's context tokens from a ``<recipe>_tokens`` asset, at most ``max_tokens`` (the header,
    then the most recent tokens: :func:`ehr_assets.text.contexts.crop_context`)."""
    ctx = read_tokens_table(
        warehouse, "recipe_node_contexts", cohort, tokens_key, order_by=["subject_id", "prediction_time"]
    ).drop(columns=["cohort", "tokens_asset"])
    ctx = union_nodes(ctx, aces_rows(warehouse, ACES_RECIPE_CONTEXTS, cohort, tokens_asset=tokens_key))
    header = ctx["n_header_tokens"].fillna(0) if "n_header_tokens" in ctx else np.zeros(len(ctx))
    contexts = [crop_context(c, len(c), max_tokens, h).astype(np.int64) for c, h in zip(ctx["context_ids"], header)]
    index = ctx.drop(columns=["context_ids"])
    return contexts, index


def recipe_special_ids(tokens_dir: Path) -> dict:
    """pad/mask/bos/eos ids and vocabulary size of a ``<recipe>_tokens`` tokenizer folder."""
    tok = load_tokenizer_folder(tokens_dir)
    return {**special_ids(tok), "vocab_size": len(tok)}


def embeddings_metadata(dest: Path, emb: np.ndarray, t0: float) -> dict:
    std = emb.std(axis=0)
    return {
        "dagster/row_count": int(emb.shape[0]),
        "dim": int(emb.shape[1]),
        "min_dim_std": float(std.min()),
        "mean_dim_std": float(std.mean()),
        "wall_s": round(time.perf_counter() - t0, 2),
        "path": dg.MetadataValue.path(str(dest)),
    }


# ------------------------------------------------------------------------------------------------------- training
def train_checkpoint(
    context,
    project: Project,
    recipe: RecipeSpec,
    key: str,
    warehouse: DuckDBResource,
    artifacts: ArtifactStore,
    trainer: Trainer,
) -> Path:
    """Train ``recipe`` on cohort ``key`` where the trainer resource says; returns the published checkpoint folder."""
    tokens_key = project.tokens_asset(recipe.name)
    tok_dir = artifacts.path(tokens_key or "tokenizer", key)
    data = load_train_data(warehouse, key, tokens_key, tok_dir)
    init_dir = artifacts.path(keys.checkpoint(recipe.init_from), key) if recipe.init_from else None
    ckpt_key = keys.checkpoint(recipe.name)
    if init_dir is not None and not init_dir.exists():
        raise FileNotFoundError(f"{ckpt_key}[{key}]: init_from checkpoint {init_dir} is missing; materialize it")
    context.log.info(
        f"training {recipe.name} on {key} ({trainer.launcher}): {len(data.sft_sequences)} train timelines, "
        f"{len(data.jepa_examples)} decision-node examples"
    )
    dest = artifacts.path(ckpt_key, key)
    rdir = resume_dir(artifacts.root, ckpt_key, key)
    if trainer.launcher == "subprocess":
        trainer.run_subprocess(context, project.root, recipe.name, data, tok_dir, init_dir, dest, rdir)
    elif trainer.launcher == "k8s":
        trainer.run_k8s(context, project.root, recipe, data, tok_dir, init_dir, dest, rdir, artifacts.root)
    else:
        from ..train import train

        with atomic_dir(dest) as tmp:
            train(recipe, data, tmp, init_dir=init_dir, tokenizer_dir=tok_dir, resume_dir=rdir, log=context.log.info)
        shutil.rmtree(rdir, ignore_errors=True)  # published: nothing left to resume
    return dest


def checkpoint_metadata(dest: Path, name: str, key: str, launcher: str) -> dict:
    res = json.loads((dest / "train_log.json").read_text())
    curve = res["loss_curve"]
    last = curve[-1] if curve else {}
    cost = compute_record(res)  # tokens seen per loss (this run, and with its init_from chain)
    return {
        "steps": res["steps"],
        "wall_s": round(res["wall_s"], 2),
        "tokens_per_s": round(res["tokens_per_s"], 1),
        "peak_mem_mb": round(res["peak_mem_mb"], 1),
        "finetune": cost["finetune"],
        "trainable_params": res["trainable_params"],
        "total_params": res["total_params"],
        "final_loss": float(last.get("loss", float("nan"))),
        "final_jepa_loss_norm": curve_tail_mean(curve, "jepa_loss_norm"),
        "final_emb_eff_rank": float(last.get("emb_eff_rank", float("nan"))),
        "final_emb_mean_std": float(last.get("emb_mean_std", float("nan"))),
        **{k: cost[k] for k in COMPUTE_KEYS},
        "launcher": launcher,
        "loss_curve": loss_curve_md(curve, f"{name} [{key}]"),
        "path": dg.MetadataValue.path(str(dest)),
    }


def checkpoint_asset(project: Project, recipe: RecipeSpec, partitions: dg.PartitionsDefinition):
    name = recipe.name
    tokens_key = project.tokens_asset(name)  # None: the shared default tokenization (token_sequences)
    deps = [tokens_key] if tokens_key else ["token_sequences", "node_contexts", "tokenizer"]
    if recipe.init_from:
        deps.append(keys.checkpoint(recipe.init_from))

    @dg.asset(
        name=keys.checkpoint(name),
        group_name="training",
        kinds={"pytorch"},
        deps=deps,
        partitions_def=partitions,
        description=f"PEFT/LoRA checkpoint of recipe '{name}' ({recipe.objective}"
        + (f", from {recipe.init_from}" if recipe.init_from else "")
        + f"). {recipe.description}",
        metadata={"recipe": json.dumps(recipe.model_dump(mode="json"))},
        code_version=code_version("train", recipe_declaration(project, name, keys.CHECKPOINT)),
        op_tags=op_tags(recipe),  # dagster-k8s/config from the recipe's compute: block (ehr_assets.defs.k8s)
    )
    def checkpoint(
        context: AssetExecutionContext,
        warehouse: DuckDBResource,
        artifacts: ArtifactStore,
        trainer: Trainer,
        compute: Compute,
    ):
        key = context.partition_key
        dest = train_checkpoint(context, project, recipe, key, warehouse, artifacts, trainer)
        return dg.MaterializeResult(
            data_version=data_version(files_version(dest, exclude=RUN_RECORD_FILES)),
            metadata=checkpoint_metadata(dest, name, key, trainer.launcher),
        )

    return checkpoint


# ----------------------------------------------------------------------------------------------------- embeddings
def embeddings_asset(project: Project, recipe: RecipeSpec, partitions: dg.PartitionsDefinition):
    name = recipe.name
    tokens_key = project.tokens_asset(name)
    ckpt_key, emb_key = keys.checkpoint(name), keys.embeddings(name)

    @dg.asset(
        name=emb_key,
        group_name="embeddings",
        kinds={"pytorch"},
        deps=[
            ckpt_key,
            *([tokens_key] if tokens_key else ["node_contexts", "token_sequences", "tokenizer"]),
            *aces_deps(project, ACES_CONTEXTS),
        ],
        partitions_def=partitions,
        code_version=code_version("embed", recipe_declaration(project, name, keys.EMBEDDINGS)),
        description=f"Frozen '{name}' embeddings at every decision node "
        f"({recipe.embedding.pool} pooling of the context).",
    )
    def embeddings(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore, compute: Compute
    ):
        from ..embed import embed

        key = context.partition_key
        t0 = time.perf_counter()
        if tokens_key:
            contexts, index = load_recipe_contexts(warehouse, key, tokens_key, recipe.embed_tokens)
            pad_id = recipe_special_ids(artifacts.path(tokens_key, key))["pad_id"]
        else:
            contexts, index = load_contexts(warehouse, key, recipe.embed_tokens)
            fast, _ = load_tokenizer(artifacts.path("tokenizer", key))
            pad_id = fast.pad_token_id
        emb = embed(
            artifacts.path(ckpt_key, key),
            contexts,
            pool=recipe.embedding.pool,
            batch_size=recipe.embedding.batch_size,
            pad_id=pad_id,
            log=context.log.info,
        )
        dest = artifacts.path(emb_key, key)
        save_embeddings(dest, emb, index)
        return dg.MaterializeResult(
            data_version=data_version(files_version(dest)), metadata=embeddings_metadata(dest, emb, t0)
        )

    return embeddings


def frozen_embeddings_asset(project: Project, recipe: RecipeSpec, partitions: dg.PartitionsDefinition):
    """``objective: frozen``: embeddings straight from the backbone folder; nothing is trained."""
    name = recipe.name
    tokens_key = project.tokens_asset(name)
    emb_key = keys.embeddings(name)

    @dg.asset(
        name=emb_key,
        group_name="embeddings",
        kinds={"pytorch"},
        deps=[tokens_key, *aces_deps(project, ACES_CONTEXTS)],
        partitions_def=partitions,
        description=f"Embeddings of the frozen model {recipe.backbone.path} ({recipe.format} text, "
        f"{recipe.embedding.pool} pooling) at every decision node; nothing is trained. {recipe.description}",
        metadata={"recipe": json.dumps(recipe.model_dump(mode="json"))},
        code_version=code_version("embed", recipe_declaration(project, name, keys.EMBEDDINGS)),
    )
    def embeddings(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore, compute: Compute
    ):
        from ..embed import embed_frozen

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
        dest = artifacts.path(emb_key, key)
        save_embeddings(dest, emb, index)
        return dg.MaterializeResult(
            data_version=data_version(files_version(dest)), metadata=embeddings_metadata(dest, emb, t0)
        )

    return embeddings


def build_recipe_assets(project: Project, recipe: RecipeSpec, partitions: dg.PartitionsDefinition):
    """The recipe's checkpoint (unless frozen), embeddings and probe metrics, tagged with the training seed (and, for
    a seed replicate, the recipe it replicates: the UI filters ``tag:replicate_of=sft``)."""
    probes = probe_metrics_asset(project, recipe.name, partitions)
    if recipe.is_frozen:
        assets = [frozen_embeddings_asset(project, recipe, partitions), probes]
    else:
        assets = [checkpoint_asset(project, recipe, partitions), embeddings_asset(project, recipe, partitions), probes]
    return dg.map_asset_specs(lambda spec: spec.merge_attributes(tags=seed_tags(recipe)), assets)


def seed_tags(recipe: RecipeSpec) -> dict[str, str]:
    """``seed`` (the training seed) and, for a replicate ``<r>_seed<k>``, ``replicate_of: <r>``."""
    base, seed = keys.parse_replicate(recipe.name)
    tags = {} if recipe.is_frozen else {"seed": str(recipe.training.seed)}
    return tags | ({"replicate_of": base} if seed is not None else {})
