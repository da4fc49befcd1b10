"""Why does the JEPA phase after SFT stay near a normalized loss of 1? Curves of the normalized JEPA loss on the
tuning split for the shipped curriculum and the design choices of the JEPA literature (issue 26).

    python bench/jepa_diagnosis.py --cohorts msk --steps 600 --configs base,layer_norm,...   # the grid
    python bench/jepa_diagnosis.py --cohorts msk,inspect,combined --steps 100 --configs base,...  # the demo budget

Every run is the demo's ``jepa`` recipe (``models/jepa.yaml``: SFT + JEPA from the cohort's ``sft`` checkpoint,
batch 16 x 256 tokens, AdamW lr 0.002 cosine over the run's steps) with the overrides of one named config
(:data:`CONFIGS`), trained by the project's own step (:func:`ehr_assets.train.loop.optimizer_step`). Every
``--eval-every`` steps it records, on the *tuning* split's decision nodes (fixed masks, ``--eval-batches`` x 16
examples): the normalized JEPA loss (MSE / the targets' variance at the masked positions; 1 = predicting the
targets' mean) and the effective rank of the online encoder's node embeddings (last context token, the collapse
monitor's measure); the training batches' normalized loss and SFT loss are logged every step.

The data (cohort -> token sequences) and the ``sft`` checkpoints come from a scratch warehouse (``--work``; built
when missing: the data assets through Dagster as ``bench/recipe_compute.py`` does, then ``sft`` per cohort with
the training CLI's function). Each run prints one line (PASS: tuning loss under 0.9 and rank above the floor;
``--report`` applies the check's and the defaults' rules). Results: ``bench/results/jepa_diagnosis.json`` (appended
per run, keyed by recipe, config, cohort and steps) and a PNG of the tuning curves per step budget.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ehr_assets.model.batches import make_jepa_batch  # noqa: E402
from ehr_assets.model.losses import step_losses  # noqa: E402
from ehr_assets.specs import load_project  # noqa: E402
from ehr_assets.stats import JEPA_NORM_CEILING, effective_rank_floor  # noqa: E402
from ehr_assets.train import loop, train  # noqa: E402
from ehr_assets.train.checkpoint import stream_starts  # noqa: E402
from ehr_assets.train.data import TrainData, read_train_data  # noqa: E402
from ehr_assets.train.monitor import collapse_stats, monitor_contexts  # noqa: E402
from ehr_assets.train.setup import Batches, Objective, build_parts  # noqa: E402

# the rule the shipped defaults must meet (fixed before the runs on inspect and combined; no probe is ever read):
# tuning-split normalized JEPA loss at the end <= 0.8 (well under the check's 0.9) and effective rank above the floor,
# for the curriculum (100 phase-2 steps) and hybrid (250 steps) in every demo partition, keeping DESIGN.md's method
# contract (the predictor reads the masked positions)
RULE_CEILING = 0.8

# name -> (what it tests, overrides of the jepa recipe: {section: {key: value}}, special flags)
CONFIGS: dict[str, tuple[str, dict]] = {
    "base": ("the shipped curriculum (mask 0.5 single tokens, tau 0.996, 2-layer predictor)", {}),
    "frozen_encoder": ("only the predictor trains (encoder and targets fixed at the SFT checkpoint)", {"_frozen": 1}),
    "frozen_pred_lr10": (
        "only the predictor trains, at lr x10",
        {"_frozen": 1, "jepa": {"predictor_lr_scale": 10.0}},
    ),
    "pred_lr30": ("predictor lr x30", {"jepa": {"predictor_lr_scale": 30.0}}),
    "pred_lr3": ("predictor lr x3", {"jepa": {"predictor_lr_scale": 3.0}}),
    "pred_lr10_const": (
        "predictor lr x10, constant lr after warm-up",
        {"jepa": {"predictor_lr_scale": 10.0}, "optimizer": {"schedule": "constant"}},
    ),
    "lr_x5_const": ("lr 0.01 (x5), constant after warm-up", {"optimizer": {"lr": 0.01, "schedule": "constant"}}),
    "lr_x3_const_pred3": (
        "lr 0.006 constant, predictor lr x3",
        {"optimizer": {"lr": 0.006, "schedule": "constant"}, "jepa": {"predictor_lr_scale": 3.0}},
    ),
    "lr_x3_const_ln": (
        "lr 0.006 constant, layer-normed targets",
        {"optimizer": {"lr": 0.006, "schedule": "constant"}, "jepa": {"target_norm": "layer"}},
    ),
    "lr_x3_const_w4": (
        "lr 0.006 constant, JEPA loss weight 4",
        {"optimizer": {"lr": 0.006, "schedule": "constant"}, "loss_weights": {"jepa": 4.0}},
    ),
    "pred_lr3_const": (
        "predictor lr x3, constant lr after warm-up",
        {"jepa": {"predictor_lr_scale": 3.0}, "optimizer": {"schedule": "constant"}},
    ),
    "layer_norm": ("targets layer-normed (I-JEPA / data2vec)", {"jepa": {"target_norm": "layer"}}),
    "top2_ln": ("targets = mean of the top 2 layers, layer-normed (data2vec)", {"jepa": {"target_layers": 2}}),
    "pred_lr10": ("predictor lr x10", {"jepa": {"predictor_lr_scale": 10.0}}),
    "pred_wide": ("predictor width 256, depth 3", {"jepa": {"predictor_width": 256, "predictor_depth": 3}}),
    "span8": ("masked spans of 8 tokens", {"jepa": {"mask_span": 8}}),
    "from_context": ("predict every target from the last context position", {"jepa": {"predict_from": "context"}}),
    "from_previous": (
        "predict each target from the position before it (a causal LM's prediction)",
        {"jepa": {"predict_from": "previous"}},
    ),
    "frozen_from_previous": (
        "only the predictor trains, reading the position before each masked one",
        {"_frozen": 1, "jepa": {"predict_from": "previous"}},
    ),
    "tau99": ("tau 0.99 (a faster target for a short run)", {"jepa": {"ema_tau": 0.99}}),
    "lr_const": ("constant lr after warm-up (no cosine decay)", {"optimizer": {"schedule": "constant"}}),
    "jepa_only": ("JEPA alone from the base model (no SFT phase, no SFT loss)", {"_scratch": 1}),
    "no_sft_term": ("JEPA alone from the SFT checkpoint (SFT loss weight 0)", {"loss_weights": {"sft": 0.0}}),
    "jepa_w4": ("JEPA loss weight 4 (SFT 1)", {"loss_weights": {"jepa": 4.0}}),
    "lr_x3": ("lr 0.006 (x3) for encoder and predictor", {"optimizer": {"lr": 0.006}}),
    "lr_x3_const": ("lr 0.006, constant after warm-up", {"optimizer": {"lr": 0.006, "schedule": "constant"}}),
    "ln_pred_lr10": (
        "layer-normed targets and predictor lr x10",
        {"jepa": {"target_norm": "layer", "predictor_lr_scale": 10.0}},
    ),
    "ln_lr10_tau99": (
        "layer-normed targets, predictor lr x10, tau 0.99",
        {"jepa": {"target_norm": "layer", "predictor_lr_scale": 10.0, "ema_tau": 0.99}},
    ),
}
CONFIGS["top2_ln"][1]["jepa"]["target_norm"] = "layer"


def prepare(project, work: Path, cohorts: list[str]) -> tuple[Path, Path]:
    """(warehouse, artifact root) with the token data and an ``sft`` checkpoint of every cohort."""
    from recipe_compute import materialize_data

    wh, art = work / "warehouse.duckdb", work / "artifacts"
    if not wh.exists():
        materialize_data(project, wh, art, list(project.partition_keys))
    import duckdb

    for c in cohorts:
        out = art / "sft_checkpoint" / c
        if (out / "train_log.json").is_file():
            continue
        with duckdb.connect(str(wh), read_only=True) as conn:
            data = read_train_data(conn, c, None, art / "tokenizer" / c)
        train(project.recipes["sft"], data, out, tokenizer_dir=art / "tokenizer" / c, log=lambda m: None)
    return wh, art


def tuning_data(conn, cohort: str, tokenizer_dir: Path) -> TrainData:
    """The cohort's tuning-split decision-node examples (the train split's reader on the tuning rows)."""
    from ehr_assets.train.data import tokenizer_special_ids, train_data_from_tables
    from ehr_assets.warehouse import read_training_tables

    seqs, ctx = read_training_tables(conn, cohort, None)
    seqs, ctx = (
        seqs[seqs["split"] == "tuning"].assign(split="train"),
        ctx[ctx["split"] == "tuning"].assign(split="train"),
    )
    return train_data_from_tables(seqs, ctx, tokenizer_special_ids(tokenizer_dir))


def recipe_for(project, name: str, steps: int, recipe: str = "jepa"):
    """The ``recipe`` (default ``jepa``) with config ``name``'s overrides and ``steps`` steps (0: the recipe's own;
    no step checkpoints)."""
    over = CONFIGS[name][1]
    base = project.recipes[recipe]
    d = base.model_dump()
    for section, kv in over.items():
        if not section.startswith("_"):
            d[section] = {**d[section], **kv}
    d["training"] |= {"steps": steps or base.training.steps, "checkpoint_every": 0}
    if "_scratch" in over:
        d["init_from"] = None
        d["loss_weights"] = {"sft": 0.0, "jepa": 1.0}
    return type(base).model_validate(d)


@torch.no_grad()
def evaluate(parts, batches: list[dict], mon_ctx, pad_id: int) -> dict:
    """Normalized JEPA loss pooled over the fixed tuning batches (sum of MSE / sum of target variance) and the
    effective rank of the node embeddings of the tuning contexts."""
    parts.model.eval()
    parts.predictor.eval()
    mse = var = 0.0
    for b in batches:
        stats: dict = {}
        _, lj = step_losses(parts.model, parts.predictor, parts.momentum, b, sft=False, jepa=True, stats=stats)
        mse += float(lj)
        var += stats["jepa_target_var"]
    out = {"tuning_norm": mse / var}
    out |= collapse_stats(parts.model, mon_ctx, pad_id, torch.device("cpu"), contextlib.nullcontext)
    parts.model.train()
    parts.predictor.train()
    return out


def run(project, wh, art, cohort: str, name: str, steps: int, eval_every: int, n_eval: int, base="jepa") -> dict:
    import duckdb

    recipe = recipe_for(project, name, steps, base)
    steps = recipe.training.steps
    tok = art / "tokenizer" / cohort
    with duckdb.connect(str(wh), read_only=True) as conn:
        data = read_train_data(conn, cohort, None, tok)
        tune = tuning_data(conn, cohort, tok)
    init_dir = art / "sft_checkpoint" / cohort if recipe.init_from else None
    objective, device = Objective.of(recipe), torch.device("cpu")
    torch.manual_seed(recipe.training.seed)
    parts = build_parts(
        recipe, data, device, objective, init_dir=init_dir, save_base_to=None, use_bf16=False, log=lambda m: None
    )
    if "_frozen" in CONFIGS[name][1]:
        for p in parts.model.parameters():
            p.requires_grad_(False)
    batches = Batches(recipe, data, objective, 1, 0, stream_starts(init_dir, lambda m: None))
    rng = np.random.default_rng(12345)  # the same tuning examples and masks for every config of a cohort
    ex = tune.jepa_examples
    pick = rng.permutation(len(ex))[: 16 * n_eval]
    eval_b = [
        make_jepa_batch(
            [ex[i] for i in pick[k : k + 16]],
            recipe.training.seq_len,
            recipe.jepa,
            tune.mask_id,
            tune.pad_id,
            np.random.default_rng([12345, k]),
        ).tensors(device)
        for k in range(0, len(pick), 16)
    ]
    mon = monitor_contexts(tune, recipe.training.seq_len, 256)
    curve, t0 = [], time.perf_counter()
    rec = {"step": 0, **evaluate(parts, eval_b, mon, tune.pad_id)}
    curve.append(rec)
    train_norm, sft = [], []
    for step in range(steps):
        sums, _, _ = loop.optimizer_step(recipe, parts, batches, objective, step, device, 1, contextlib.nullcontext)
        train_norm.append(sums[3])
        sft.append(sums[1] if objective.sft else float("nan"))
        n = step + 1
        if n % eval_every == 0 or n == steps:
            k = max(1, eval_every // 5)
            rec = {"step": n, "train_norm": float(np.mean(train_norm[-k:])), "sft_loss": float(np.mean(sft[-k:]))}
            curve.append(rec | evaluate(parts, eval_b, mon, tune.pad_id))
    wall = time.perf_counter() - t0
    tail = max(1, int(np.ceil(0.2 * steps)))
    end = curve[-1]
    floor = effective_rank_floor(parts.model.config.hidden_size)
    return {
        "recipe": base,
        "config": name,
        "what": CONFIGS[name][0],
        "cohort": cohort,
        "steps": steps,
        "wall_s": round(wall, 1),
        "train_norm_end": float(np.mean(train_norm[-tail:])),  # what jepa_beats_mean_predictor reads
        "tuning_norm_end": end["tuning_norm"],
        "eff_rank_end": end["emb_eff_rank"],
        "rank_floor": floor,
        "passes": bool(end["tuning_norm"] < JEPA_NORM_CEILING and end["emb_eff_rank"] > floor),
        "check_passes": bool(float(np.mean(train_norm[-tail:])) < JEPA_NORM_CEILING),
        "sft_loss_end": end.get("sft_loss", float("nan")),
        "curve": curve,
        "overrides": CONFIGS[name][1],
    }


def markdown(results: list[dict]) -> str:
    """The stored runs as a markdown table (config ``hybrid:<name>`` for the hybrid recipe): normalized JEPA loss
    (``train``: training batches, the check's tail; ``@50`` / ``@100`` / ``end``: the tuning split at those
    steps and at the end), effective rank and SFT loss at the end (wall seconds are in the JSON); ``check``: what
    jepa_beats_mean_predictor says (training tail < 0.9); ``rule``: the defaults' rule (:data:`RULE_CEILING`)."""
    import pandas as pd

    from ehr_assets.eval.report import markdown_table

    def at(r, step):
        return next((p["tuning_norm"] for p in r["curve"] if p["step"] == step), float("nan"))

    rows = [
        {
            "cohort": r["cohort"],
            "config": r["config"] if r.get("recipe", "jepa") == "jepa" else f"{r['recipe']}:{r['config']}",
            "steps": r["steps"],
            "train": r["train_norm_end"],
            "@50": at(r, 50),
            "@100": at(r, 100),
            "end": r["tuning_norm_end"],
            "rank": f"{r['eff_rank_end']:.1f}",
            "sft": r["sft_loss_end"],
            "check": "ok" if r["train_norm_end"] < JEPA_NORM_CEILING else "FAIL",
            "rule": "ok" if r["tuning_norm_end"] <= RULE_CEILING and r["eff_rank_end"] > r["rank_floor"] else "-",
        }
        for r in results
    ]
    df = pd.DataFrame(rows).sort_values(["steps", "cohort"], kind="stable")
    return markdown_table(df, nan="")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r.get("recipe", "jepa"), r["cohort"], r["steps"]) for r in results})
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), dpi=90, squeeze=False)
    for ax, (recipe, cohort, steps) in zip(axes[0], groups):
        for r in results:
            if (r.get("recipe", "jepa"), r["cohort"], r["steps"]) != (recipe, cohort, steps):
                continue
            ax.plot([p["step"] for p in r["curve"]], [p["tuning_norm"] for p in r["curve"]], label=r["config"])
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.axhline(JEPA_NORM_CEILING, color="red", lw=0.8, ls="--")
        ax.set_title(f"{recipe} on {cohort}, {steps} steps: tuning normalized JEPA loss", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylim(0, 1.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohorts", default="msk")
    ap.add_argument("--configs", default="base")
    ap.add_argument("--steps", type=int, default=600, help="0: the recipe's own")
    ap.add_argument("--recipe", default="jepa", help="the shipped recipe the configs change (jepa or hybrid)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--report", action="store_true", help="only print the stored results as a markdown table")
    ap.add_argument("--work", type=Path, default=Path("/tmp/jepa_diagnosis"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "jepa_diagnosis.json")
    args = ap.parse_args()
    if args.report:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    project = load_project(ROOT)
    cohorts = args.cohorts.split(",")
    wh, art = prepare(project, args.work, cohorts)
    results = json.loads(args.out.read_text()) if args.out.is_file() else []
    for cohort in cohorts:
        for name in args.configs.split(","):
            r = run(project, wh, art, cohort, name, args.steps, args.eval_every, args.eval_batches, args.recipe)
            key = (args.recipe, name, cohort, r["steps"])
            results = [x for x in results if (x.get("recipe", "jepa"), x["config"], x["cohort"], x["steps"]) != key]
            results.append(r)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print(
                f"{args.recipe:6s} {cohort:8s} {name:16s} {r['steps']:4d} {r['wall_s']:5.0f}s"
                f" train {r['train_norm_end']:.3f} tune {r['tuning_norm_end']:.3f}"
                f" rank {r['eff_rank_end']:4.1f} sft {r['sft_loss_end']:.3f} {'PASS' if r['passes'] else 'fail'}",
                flush=True,
            )
    for steps in sorted({r["steps"] for r in results}):
        plot([r for r in results if r["steps"] == steps], args.out.with_name(f"jepa_diagnosis_{steps}.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
