"""Software-defined assets, generated from a :class:`~ehr_assets.specs.Project`.

Each asset is a thin wrapper: it reads its inputs from the warehouse or the artifact store for *its* cohort partition,
calls the stage module that does the work, writes one partition atomically and records metadata. Recipe assets
(``<recipe>_checkpoint``, ``<recipe>_embeddings``, ``<recipe>_probe_metrics``) come from one factory per recipe.
"""


import base64
import io
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from dagster import AssetExecutionContext
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource
from meds import train_split

from . import cohort as cohort_stage
from . import decision_nodes as nodes_stage
from . import labels as labels_stage
from . import sequences as seq_stage
from .evaluation import evaluate, markdown_table
from .specs import Project, RecipeSpec
from .warehouse import (
    artifact_dir,
    atomic_dir,
    read_partition,
    replace_partition,
    replace_partitions,
    resume_dir,
    table_exists,
)

POOL = "duckdb"  # steps that write the warehouse; dagster.yaml limits this pool


class ArtifactStore(dg.ConfigurableResource):
    """Folder root for large artifacts: ``<root>/<asset>/<partition>/``."""

    root: str

    def path(self, asset: str, partition: str) -> Path:
        return artifact_dir(self.root, asset, partition)


class Trainer(dg.ConfigurableResource):
    """Where ``<recipe>_checkpoint`` assets train.

    ``in_process`` (default): in the step's own process. ``subprocess``: ``command`` (default ``python -m
    ehr_assets.training``; e.g. ``["accelerate", "launch", "--num_processes", "8", "-m", "ehr_assets.training"]``) is
    launched through Dagster Pipes with a training-data bundle, so training can move to a GPU node (or a cluster
    launcher) while logs stream back into the run. Either way a killed attempt resumes from its last step checkpoint.
    """

    launcher: str = "in_process"
    command: list[str] = []
    env: dict[str, str] = {}

    def model_post_init(self, __context) -> None:
        if self.launcher not in ("in_process", "subprocess"):
            raise ValueError(f"trainer.launcher must be 'in_process' or 'subprocess', got {self.launcher!r}")

    def run_subprocess(self, context, project_root: Path, recipe: str, data, tokenizer_dir: Path,
                       init_dir: Path | None, dest: Path, rdir: Path) -> None:
        import sys
        import tempfile

        cmd = list(self.command) or [sys.executable, "-m", "ehr_assets.training"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.data-", dir=dest.parent) as bundle:
            data.save(Path(bundle))
            # the recipe by name in its project, so relative paths (backbones) resolve as the asset resolved them
            cmd += ["--recipe", recipe, "--project", str(project_root), "--data", bundle,
                    "--tokenizer", str(tokenizer_dir), "--out", str(dest), "--resume-dir", str(rdir)]
            if init_dir is not None:
                cmd += ["--init-dir", str(init_dir)]
            dg.PipesSubprocessClient(env=dict(self.env)).run(command=cmd, context=context).get_results()
        if not (dest / "train_log.json").is_file():
            raise RuntimeError(f"training subprocess exited without writing {dest}")


def min_published_count() -> int:
    """Counts below this are shown as "<N" in asset metadata (small-cell suppression, as disclosure rules for
    clinical data require). ``EHR_MIN_PUBLISHED_COUNT``, default 11; 0 or 1 turns it off."""
    import os

    raw = os.environ.get("EHR_MIN_PUBLISHED_COUNT", "11")
    try:
        return max(int(raw), 0)
    except ValueError:
        raise ValueError(f"EHR_MIN_PUBLISHED_COUNT must be an integer, got {raw!r}") from None


def published_count(n) -> int | str:
    """``n`` as published in metadata: ``"<11"`` when 0 < n < the threshold (0 stays 0: nothing to hide)."""
    k = min_published_count()
    n = int(n)
    return f"<{k}" if 0 < n < k else n


def _meta_table(df: pd.DataFrame, counts: tuple[str, ...] = (), hides: dict[str, str] | None = None) -> dg.MetadataValue:
    """A markdown table for asset metadata; ``counts`` columns go through :func:`published_count`, and a column of
    ``hides`` (e.g. a rate) is blanked where the count it derives from (its value) was suppressed."""
    df = df.copy()
    for col, src in (hides or {}).items():
        small = df[src].map(lambda n: isinstance(published_count(n), str))
        df[col] = df[col].astype(object).where(~small, "")
    for c in counts:
        df[c] = df[c].map(published_count)
    return dg.MetadataValue.md(markdown_table(df))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _png_md(fig, title: str) -> dg.MetadataValue:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})")


def _plot_md(curve: list[dict], title: str) -> dg.MetadataValue:
    """Loss curves and, when recorded, the collapse monitor (embedding std, effective rank) as a markdown image
    (Dagster 1.13 has no image metadata type)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mon = [r for r in curve if "emb_eff_rank" in r]
    fig, axes = plt.subplots(1, 2 if mon else 1, figsize=(9 if mon else 5, 3), dpi=90, squeeze=False)
    ax = axes[0][0]
    steps = [r["step"] for r in curve]
    for key in ("loss", "sft_loss", "jepa_loss"):
        ys = [r.get(key, float("nan")) for r in curve]
        if any(y == y for y in ys):
            ax.plot(steps, ys, label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    if mon:
        ax = axes[0][1]
        ms = [r["step"] for r in mon]
        ax.plot(ms, [r["emb_eff_rank"] for r in mon], color="tab:purple", label="effective rank")
        ax.set_xlabel("step")
        ax.set_ylabel("effective rank")
        ax2 = ax.twinx()
        ax2.plot(ms, [r["emb_mean_std"] for r in mon], color="tab:gray", ls="--", label="mean dim std")
        ax2.set_ylabel("mean per-dim std")
        ax.set_title("collapse monitor (node embeddings)")
    fig.tight_layout()
    return _png_md(fig, title)


def _read(warehouse: DuckDBResource, table: str, cohort: str, **kw) -> pd.DataFrame:
    with warehouse.get_connection() as conn:
        return read_partition(conn, table, {"cohort": cohort}, **kw)


def _write(warehouse: DuckDBResource, table: str, cohort: str, df: pd.DataFrame, **extra) -> int:
    with warehouse.get_connection() as conn:
        return replace_partition(conn, table, _tag(df, cohort, **extra), {"cohort": cohort, **extra})


def _tag(df: pd.DataFrame, cohort: str, **extra) -> pd.DataFrame:
    """``df`` with the partition columns first (``cohort``, then ``extra``), as the warehouse tables store it."""
    df = df.copy()
    df.insert(0, "cohort", cohort)
    for k, v in extra.items():
        df.insert(1, k, v)
    return df


def _source_names(project: Project, cohort: str) -> str:
    parts = []
    for m in project.members(cohort):
        src = project.cohorts[m].source
        parts.append(f"{m}: {src.kind}" + (f" {getattr(src, 'path', '')}" if getattr(src, "path", None) else ""))
    return "; ".join(parts)


def _subject_count(df: pd.DataFrame) -> int:
    return int(df["subject_id"].nunique()) if len(df) else 0


def source_metadata(reports: dict[str, dict]) -> dict:
    """Asset metadata from the source readers' reports: one JSON per member, malformed rows as a table."""
    md: dict = {}
    for member, rep in reports.items():
        if rep.get("kind") == "synthetic":
            continue
        prefix = f"source[{member}]"
        md[prefix] = dg.MetadataValue.json({k: v for k, v in rep.items() if k not in ("malformed_rows", "timeline_files")})
        if "timeline_files" in rep:
            md[f"{prefix} timeline files"] = _meta_table(pd.DataFrame(rep["timeline_files"]))
        if "malformed_rows" in rep:
            bad = pd.DataFrame(rep["malformed_rows"], columns=["file", "reason", "rows", "first_line"])
            md[f"{prefix} malformed rows"] = _meta_table(bad) if len(bad) else dg.MetadataValue.text("none")
            md[f"{prefix} malformed_rows_total"] = int(rep.get("malformed_rows_total", 0))
    return md


# ============================================================================================== data assets
def build_data_assets(project: Project, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    common = dict(partitions_def=partitions, pool=POOL)

    @dg.asset(group_name="cohort", kinds={"duckdb"}, **common)
    def cohort_events(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """MEDS events of the cohort as its source delivers them (a union concatenates its members)."""
        t0 = time.perf_counter()
        key = context.partition_key
        ev, shipped_splits, reports = cohort_stage.cohort_source(project, key)  # raises before anything is written
        if ev.empty:
            raise cohort_stage.CohortDataError(
                f"cohort {key!r}: the source yielded no events ({_source_names(project, key)}); nothing was written"
            )
        cohort_stage.validate_events(ev, key)  # every rule, before writing: a bad delivery never replaces a good one
        with warehouse.get_connection() as conn:  # both tables in one transaction
            n, _ = replace_partitions(conn, [("cohort_events", _tag(ev, key), {"cohort": key}),
                                             ("source_splits", _tag(shipped_splits, key), {"cohort": key})])
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": n,
                "subjects": published_count(_subject_count(ev)),
                "codes": int(ev["code"].nunique()),
                "members": ", ".join(project.members(key)),
                "wall_s": round(time.perf_counter() - t0, 2),
                **source_metadata(reports),
            }
        )

    @dg.asset(group_name="cohort", kinds={"duckdb"}, deps=[cohort_events], **common)
    def cohort_table(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Validated events (pandera): typed columns, no event after death, no duplicate rows. Fails on bad rows."""
        key = context.partition_key
        ev = _read(warehouse, "cohort_events", key).drop(columns=["cohort"])
        valid = cohort_stage.validate_events(ev, key)  # raises CohortDataError listing every failed rule
        n = _write(warehouse, "cohort_table", key, valid)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": n, "subjects": published_count(_subject_count(valid)), "pandera": "passed"}
        )

    @dg.asset(group_name="cohort", kinds={"duckdb"}, deps=[cohort_table], **common)
    def subjects(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """One row per subject: split (train / tuning / held_out), member cohort, follow-up window."""
        key = context.partition_key
        ev = _read(warehouse, "cohort_table", key, columns=["subject_id", "time", "code", "source_cohort"])
        with warehouse.get_connection() as conn:  # splits shipped by the source (e.g. MEDS subject_splits.parquet)
            shipped = read_partition(conn, "source_splits", {"cohort": key}) if table_exists(conn, "source_splits") else None
        subj = cohort_stage.subjects_table(project, key, ev, shipped)
        n = _write(warehouse, "subjects", key, subj)
        counts = subj.groupby(["source_cohort", "split"]).size().rename("subjects").reset_index()
        return dg.MaterializeResult(metadata={"dagster/row_count": n, "splits": _meta_table(counts, ("subjects",))})

    @dg.asset(group_name="cohort", kinds={"duckdb"}, deps=[subjects], **common)
    def decision_nodes(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Decision nodes (prediction times) from each member cohort's declared rule."""
        key = context.partition_key
        ev = _read(warehouse, "cohort_table", key, columns=["subject_id", "time", "code", "source_cohort"])
        subj = _read(warehouse, "subjects", key)
        nodes = nodes_stage.decision_nodes(project, key, ev, subj)
        if nodes.empty:
            raise ValueError(f"cohort {key!r}: no decision node matches the declared codes")
        n = _write(warehouse, "decision_nodes", key, nodes)
        per = nodes.groupby("node_code").size().rename("nodes").reset_index().sort_values("nodes", ascending=False)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": n,
                "subjects": published_count(_subject_count(nodes)),
                "nodes_per_subject": round(n / max(_subject_count(nodes), 1), 2),
                "by_code": _meta_table(per.head(15), ("nodes",)),
            }
        )

    @dg.asset(group_name="cohort", kinds={"duckdb"}, deps=[decision_nodes], **common)
    def task_labels(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Task labels at decision nodes in the MEDS label schema (+ task, horizon_days, split columns)."""
        key = context.partition_key
        ev = _read(warehouse, "cohort_table", key, columns=["subject_id", "time", "code", "source_cohort"])
        subj = _read(warehouse, "subjects", key)
        nodes = _read(warehouse, "decision_nodes", key).drop(columns=["cohort"])
        lab = labels_stage.cohort_labels(project, key, nodes, ev, subj)
        n = _write(warehouse, "task_labels", key, lab)
        summary = (
            lab.groupby(["task", "horizon_days"])
            .agg(rows=("boolean_value", "size"), positives=("boolean_value", "sum"))
            .reset_index()
        )
        summary["rate"] = (summary["positives"] / summary["rows"]).round(3)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": n,
            "tasks": _meta_table(summary, ("rows", "positives"), hides={"rate": "positives"}),
        })

    @dg.asset(group_name="sequences", kinds={"huggingface"}, deps=[subjects], **common)
    def tokenizer(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        """Offline word-level tokenizer: vocabulary and numeric-value bins fitted on the train split."""
        key = context.partition_key
        ev = _read(warehouse, "cohort_table", key).drop(columns=["cohort"])
        subj = _read(warehouse, "subjects", key)
        fast, edges = seq_stage.tokenizer_from_events(ev, subj)
        dest = artifacts.path("tokenizer", key)
        with atomic_dir(dest) as tmp:
            seq_stage.save_tokenizer(fast, edges, tmp)
        return dg.MaterializeResult(
            metadata={"vocab_size": len(fast), "binned_codes": len(edges), "path": dg.MetadataValue.path(str(dest))}
        )

    @dg.asset(group_name="sequences", kinds={"duckdb"}, deps=[tokenizer], **common)
    def token_sequences(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore
    ) -> dg.MaterializeResult:
        """Each subject's serialized timeline (delimited format), its token ids and its time-block offsets."""
        key = context.partition_key
        ev = _read(warehouse, "cohort_table", key).drop(columns=["cohort"])
        subj = _read(warehouse, "subjects", key, columns=["subject_id", "split", "source_cohort"])
        fast, edges = seq_stage.load_tokenizer(artifacts.path("tokenizer", key))
        ser = seq_stage.serialize_cohort(ev, edges, log=context.log.info)
        ids = seq_stage.encode(fast, ser["text"].tolist())
        ser["input_ids"] = [x.tolist() for x in ids]
        ser["n_tokens"] = np.asarray([len(x) for x in ids], dtype=np.int64)
        ser["n_unk"] = np.asarray([(x == fast.unk_token_id).sum() for x in ids], dtype=np.int64)
        ser["block_times"] = [list(np.asarray(b, dtype="datetime64[us]")) for b in ser["block_times"]]
        ser = ser.merge(subj, on="subject_id", how="left")
        n = _write(warehouse, "token_sequences", key, ser)
        lengths = ser["n_tokens"]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": n,
                "tokens": int(lengths.sum()),
                "tokens_per_subject_median": float(lengths.median()),
                "tokens_per_subject_p90": float(lengths.quantile(0.9)),
                "unk_rate": round(float(ser["n_unk"].sum() / max(lengths.sum(), 1)), 5),
            }
        )

    @dg.asset(group_name="sequences", kinds={"duckdb"}, deps=[token_sequences, decision_nodes], **common)
    def node_contexts(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """Per decision node: where its context ends in the subject's tokens (everything at or before the node)."""
        key = context.partition_key
        seq = _read(warehouse, "token_sequences", key, columns=["subject_id", "block_times", "block_ends", "n_tokens"])
        nodes = _read(warehouse, "decision_nodes", key)
        ctx = seq_stage.node_contexts(seq, nodes)
        n = _write(warehouse, "node_contexts", key, ctx)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": n,
                "context_tokens_median": float(ctx["context_end"].median()),
                "future_tokens_median": float((ctx["n_tokens"] - ctx["context_end"]).median()),
            }
        )

    return [cohort_events, cohort_table, subjects, decision_nodes, task_labels, tokenizer, token_sequences, node_contexts]


# ============================================================================================ recipe assets
def load_train_data(warehouse: DuckDBResource, cohort: str, tokenizer_dir: Path):
    """The train split's timelines and decision-node (context, future) examples, as :class:`TrainData`."""
    from .training import train_data_from_warehouse

    with warehouse.get_connection() as conn:
        return train_data_from_warehouse(conn, cohort, tokenizer_dir)


def load_contexts(warehouse: DuckDBResource, cohort: str, seq_len: int):
    """Every decision node's context tokens (the last ``seq_len`` at or before the node) and the node index."""
    seq = _read(warehouse, "token_sequences", cohort, columns=["subject_id", "input_ids"])
    ids = dict(zip(seq["subject_id"], seq["input_ids"]))
    ctx = _read(warehouse, "node_contexts", cohort, order_by=["subject_id", "prediction_time"])
    contexts = [
        np.asarray(ids[s][max(0, e - seq_len) : e], dtype=np.int64) for s, e in zip(ctx["subject_id"], ctx["context_end"])
    ]
    return contexts, ctx.drop(columns=["cohort"])


def _save_embeddings(dest: Path, emb: np.ndarray, index: pd.DataFrame, t0: float) -> dg.MaterializeResult:
    from safetensors.numpy import save_file

    with atomic_dir(dest) as tmp:
        save_file({"embeddings": np.ascontiguousarray(emb, dtype=np.float32)}, str(tmp / "embeddings.safetensors"))
        index.to_parquet(tmp / "index.parquet", index=False)
    std = emb.std(axis=0)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(emb.shape[0]),
            "dim": int(emb.shape[1]),
            "min_dim_std": float(std.min()),
            "mean_dim_std": float(std.mean()),
            "wall_s": round(time.perf_counter() - t0, 2),
            "path": dg.MetadataValue.path(str(dest)),
        }
    )


def build_recipe_assets(
    project: Project, recipe: RecipeSpec, partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    name = recipe.name
    ckpt_key, emb_key = f"{name}_checkpoint", f"{name}_embeddings"
    tokens_key = project.tokens_asset(name)  # None: the shared default tokenization (token_sequences)
    deps = [tokens_key] if tokens_key else ["token_sequences", "node_contexts", "tokenizer"]
    if recipe.init_from:
        deps.append(f"{recipe.init_from}_checkpoint")
    if recipe.is_frozen:
        from .text_assets import build_frozen_assets

        return build_frozen_assets(project, recipe, partitions, tokens_key)
    from .text_assets import load_recipe_contexts, load_recipe_train_data, recipe_special_ids

    @dg.asset(
        name=ckpt_key,
        group_name="training",
        kinds={"pytorch"},
        deps=deps,
        partitions_def=partitions,
        description=f"PEFT/LoRA checkpoint of recipe '{name}' ({recipe.objective}"
        + (f", from {recipe.init_from}" if recipe.init_from else "")
        + f"). {recipe.description}",
        metadata={"recipe": json.dumps(recipe.model_dump(mode="json"))},
    )
    def checkpoint(
        context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore, trainer: Trainer
    ):
        key = context.partition_key
        if tokens_key:
            tok_dir = artifacts.path(tokens_key, key)
            data = load_recipe_train_data(warehouse, key, tokens_key, tok_dir)
        else:
            tok_dir = artifacts.path("tokenizer", key)
            data = load_train_data(warehouse, key, tok_dir)
        init_dir = artifacts.path(f"{recipe.init_from}_checkpoint", key) if recipe.init_from else None
        if init_dir is not None and not init_dir.exists():
            raise FileNotFoundError(f"{ckpt_key}[{key}]: init_from checkpoint {init_dir} is missing; materialize it")
        context.log.info(
            f"training {name} on {key} ({trainer.launcher}): {len(data.sft_sequences)} train timelines, "
            f"{len(data.jepa_examples)} decision-node examples"
        )
        dest = artifacts.path(ckpt_key, key)
        rdir = resume_dir(artifacts.root, ckpt_key, key)
        if trainer.launcher == "subprocess":
            trainer.run_subprocess(context, project.root, name, data, tok_dir, init_dir, dest, rdir)
        else:
            from .training import train

            with atomic_dir(dest) as tmp:
                train(recipe, data, tmp, init_dir=init_dir, tokenizer_dir=tok_dir, resume_dir=rdir,
                      log=context.log.info)
            shutil.rmtree(rdir, ignore_errors=True)  # published: nothing left to resume
        res = json.loads((dest / "train_log.json").read_text())
        curve = res["loss_curve"]
        last = curve[-1] if curve else {}
        return dg.MaterializeResult(
            metadata={
                "steps": res["steps"],
                "wall_s": round(res["wall_s"], 2),
                "tokens_per_s": round(res["tokens_per_s"], 1),
                "peak_mem_mb": round(res["peak_mem_mb"], 1),
                "trainable_params": res["trainable_params"],
                "total_params": res["total_params"],
                "final_loss": float(last.get("loss", float("nan"))),
                "final_emb_eff_rank": float(last.get("emb_eff_rank", float("nan"))),
                "final_emb_mean_std": float(last.get("emb_mean_std", float("nan"))),
                "launcher": trainer.launcher,
                "loss_curve": _plot_md(curve, f"{name} [{key}]"),
                "path": dg.MetadataValue.path(str(dest)),
            }
        )

    @dg.asset(
        name=emb_key,
        group_name="embeddings",
        kinds={"pytorch"},
        deps=[ckpt_key, tokens_key or "node_contexts"],
        partitions_def=partitions,
        description=f"Frozen '{name}' embeddings at every decision node ({recipe.embedding.pool} pooling of the context).",
    )
    def embeddings(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        from .embeddings import embed

        key = context.partition_key
        t0 = time.perf_counter()
        if tokens_key:
            contexts, index = load_recipe_contexts(warehouse, key, tokens_key, recipe.embed_tokens)
            pad_id = recipe_special_ids(artifacts.path(tokens_key, key))["pad_id"]
        else:
            contexts, index = load_contexts(warehouse, key, recipe.embed_tokens)
            fast, _ = seq_stage.load_tokenizer(artifacts.path("tokenizer", key))
            pad_id = fast.pad_token_id
        emb = embed(
            artifacts.path(ckpt_key, key),
            contexts,
            pool=recipe.embedding.pool,
            batch_size=recipe.embedding.batch_size,
            pad_id=pad_id,
            log=context.log.info,
        )
        return _save_embeddings(artifacts.path(emb_key, key), emb, index, t0)

    return [checkpoint, embeddings, _probe_metrics_asset(project, name, partitions)]


def _probe_metrics_asset(project: Project, name: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    emb_key, metrics_key = f"{name}_embeddings", f"{name}_probe_metrics"

    @dg.asset(
        name=metrics_key,
        group_name="evaluation",
        kinds={"duckdb", "sklearn"},
        deps=[emb_key, "task_labels"],
        partitions_def=partitions,
        pool=POOL,
        description=f"Linear probes on '{name}' embeddings: logistic AUROC/AUPRC, Cox C-index, on held_out.",
    )
    def probe_metrics(context: AssetExecutionContext, warehouse: DuckDBResource, artifacts: ArtifactStore):
        key = context.partition_key
        emb, index = load_embeddings(artifacts.path(emb_key, key))
        return _probe_and_write(context, warehouse, project, key, name, emb, index)

    return probe_metrics


def load_embeddings(folder: Path) -> tuple[np.ndarray, pd.DataFrame]:
    from safetensors.numpy import load_file

    emb = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
    index = pd.read_parquet(folder / "index.parquet")
    index["prediction_time"] = index["prediction_time"].astype("datetime64[us]")
    return emb, index


def _probe_and_write(context, warehouse, project: Project, key: str, recipe: str, features, nodes):
    labels = _read(warehouse, "task_labels", key)
    labels["prediction_time"] = labels["prediction_time"].astype("datetime64[us]")
    nodes = nodes.assign(prediction_time=nodes["prediction_time"].astype("datetime64[us]"))
    kinds = {p.name: p.kind for p in project.probes.values()}
    metrics, preds = evaluate(key, recipe, features, nodes, labels, kinds, log=context.log.info)
    stamp = _now()
    metrics["materialized_at"] = stamp
    with warehouse.get_connection() as conn:  # metrics and the predictions they come from: one transaction
        replace_partitions(conn, [("probe_metrics", metrics, {"cohort": key, "recipe": recipe}),
                                  ("probe_predictions", preds, {"cohort": key, "recipe": recipe})])
    main = metrics[metrics["metric"].isin(["auroc", "c_index"])][["task", "horizon_days", "metric", "value", "ci_low", "ci_high", "n"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(metrics),
            "metrics": _meta_table(main, ("n",)),
            "mean_auroc": float(metrics.loc[metrics["metric"] == "auroc", "value"].mean()),
        }
    )


def build_baseline_asset(project: Project, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="count_baseline_probe_metrics",
        group_name="evaluation",
        kinds={"duckdb", "sklearn"},
        deps=["task_labels", "decision_nodes"],
        partitions_def=partitions,
        pool=POOL,
    )
    def count_baseline_probe_metrics(context: AssetExecutionContext, warehouse: DuckDBResource):
        """The count-feature baseline: log counts of the most frequent codes in the context, plus age."""
        from .probes import count_features, select_count_vocab

        key = context.partition_key
        ev = _read(warehouse, "cohort_table", key, columns=["subject_id", "time", "code"])
        ev["time"] = ev["time"].astype("datetime64[us]")
        subj = _read(warehouse, "subjects", key)
        nodes = _read(warehouse, "decision_nodes", key, order_by=["subject_id", "prediction_time"])
        nodes["prediction_time"] = nodes["prediction_time"].astype("datetime64[us]")
        vocab = select_count_vocab(ev, subj.loc[subj["split"] == train_split, "subject_id"].to_numpy())
        feats = count_features(ev, nodes, vocab)
        return _probe_and_write(context, warehouse, project, key, "count_baseline", feats, nodes.drop(columns=["cohort"]))

    return count_baseline_probe_metrics


# ============================================================================================ cross-disease
def build_report_asset(project: Project, metric_assets: list[str]) -> dg.AssetsDefinition | None:
    unions = [c for c, s in project.cohorts.items() if s.is_union]
    if not unions:
        return None

    @dg.asset(group_name="reports", kinds={"duckdb"}, deps=metric_assets, pool=POOL)
    def cross_disease_report(context: AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        """For each member cohort and task: held-out AUROC of a probe whose encoder (and probe) was trained on the
        member alone vs. on the union, scored on the same member's held-out subjects."""
        from sklearn.metrics import roc_auc_score

        with warehouse.get_connection() as conn:
            preds = conn.execute("SELECT * FROM probe_predictions WHERE predicted_boolean_probability IS NOT NULL").df()
        rows = []
        for union in unions:
            for member in project.members(union):
                alone = preds[preds["cohort"] == member]
                pooled = preds[(preds["cohort"] == union) & (preds["source_cohort"] == member)]
                for (recipe, task, h), a in alone.groupby(["recipe", "task", "horizon_days"]):
                    p = pooled[(pooled["recipe"] == recipe) & (pooled["task"] == task) & (pooled["horizon_days"] == h)]

                    def auc(df):
                        y = df["boolean_value"].astype(int)
                        return float(roc_auc_score(y, df["predicted_boolean_probability"])) if y.nunique() == 2 else np.nan

                    rows.append((member, union, recipe, task, int(h), auc(a), auc(p) if len(p) else np.nan, len(a)))
        report = pd.DataFrame(
            rows,
            columns=["member", "union", "recipe", "task", "horizon_days", "auroc_member", "auroc_union", "n"],
        )
        report["delta"] = report["auroc_union"] - report["auroc_member"]
        with warehouse.get_connection() as conn:
            conn.register("__report", report)
            conn.execute("CREATE OR REPLACE TABLE cross_disease_report AS SELECT * FROM __report")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(report),
                "report": _meta_table(report, ("n",)),
                "mean_delta_by_recipe": _meta_table(report.groupby("recipe")["delta"].mean().reset_index()),
            }
        )

    return cross_disease_report
