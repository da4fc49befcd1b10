"""The training loop against the step bench (``bench/gpu_step.py``) on the same shape, and where the difference goes.

    python bench/train_loop.py                       # demo recipes sft and jepa, 1 thread and torch's default
    python bench/train_loop.py --recipes jepa --threads 1 --steps 100

For each recipe (the demo's ``models/<recipe>.yaml``, ``init_from`` dropped) and thread count, in the same minute:

* **bench**: :func:`gpu_step.step_fn` on one fixed full batch (``batch_size x seq_len`` real tokens), the optimized
  step of :func:`ehr_assets.model.losses.step_losses` -- what ``gpu_step.py --shape demo`` reports as ``sft`` / ``smb``;
* **loop**: :func:`ehr_assets.train.train` for ``--steps`` steps on random timelines long enough that every batch is
  full (so both count the same tokens), with the recipe's logging, collapse monitor and step checkpoints; its time is
  split into batch building (``Batches.get``), the collapse monitor, step checkpoints and the rest (the optimizer steps
  and their log lines), by timing those calls from outside.

The bench is timed before and after the loop; the ratio is loop tokens/s over their mean. Wall seconds and process CPU
seconds are both reported: with one thread, CPU seconds are what an idle core would take (the machine may be loaded).
Prints a table and writes ``bench/results/train_loop.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import gpu_step  # noqa: E402
import torch  # noqa: E402

from ehr_assets.model.batches import make_jepa_batch  # noqa: E402
from ehr_assets.specs import RecipeSpec, load_project  # noqa: E402
from ehr_assets.threads import limited, usable_cores  # noqa: E402
from ehr_assets.train import TrainData, loop, train  # noqa: E402
from ehr_assets.train import setup as train_setup  # noqa: E402

VOCAB, PAD, BOS, EOS, MASK = 2000, 0, 1, 2, 3
gpu_step.load_project_modules()  # the step bench imports the project's model code lazily (GPU images)


class Clock:
    """Wall and CPU seconds of a block, accumulated."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.calls = 0

    @contextlib.contextmanager
    def time(self):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - w
            self.cpu += time.process_time() - c
            self.calls += 1


def timed_calls(module, name: str, clock: Clock):
    """Replace ``module.name`` by a wrapper that times every call on ``clock``; returns the undo function."""
    fn = getattr(module, name)

    def wrapper(*a, **kw):
        with clock.time():
            return fn(*a, **kw)

    setattr(module, name, wrapper)
    return lambda: setattr(module, name, fn)


def recipe_of(name: str, steps: int) -> RecipeSpec:
    d = load_project(ROOT).recipes[name].model_dump()
    d.update(name=f"bench_{name}", init_from=None)
    d["training"].update(steps=steps)
    return RecipeSpec.model_validate(d)


def full_data(recipe: RecipeSpec, n: int = 512, seed: int = 0) -> TrainData:
    """Random timelines of ``2 x seq_len`` tokens, a decision node in the middle: every window and every cropped
    decision-node example fills ``seq_len``, as the bench's batch does."""
    L = recipe.training.seq_len
    rng = np.random.default_rng(seed)
    seqs = [np.concatenate([[BOS], rng.integers(5, VOCAB, size=2 * L - 1)]).astype(np.int64) for _ in range(n)]
    return TrainData(seqs, [(s, L) for s in seqs], VOCAB, PAD, MASK, BOS, EOS)


def bench_step(recipe: RecipeSpec, jepa: bool, steps: int) -> tuple[float, float]:
    """(tokens/s wall, tokens/s CPU) of the step bench: 2 warm-up steps, then ``steps`` timed."""
    tr = recipe.training
    parts = gpu_step.build(recipe, VOCAB, torch.device("cpu"), False)
    rng = np.random.default_rng(0)
    L, B = tr.seq_len, tr.batch_size
    ex = [(rng.integers(5, VOCAB, size=L).astype(np.int64), L // 2) for _ in range(B)]
    jb = make_jepa_batch(ex, L, recipe.jepa.model_copy(update={"max_future_tokens": L // 2}), MASK, PAD, rng)
    fn = gpu_step.step_fn(*parts, jb.tensors("cpu"), contextlib.nullcontext, True, jepa)
    for _ in range(2):
        fn()
    clock = Clock()
    with clock.time():
        for _ in range(steps):
            fn()
    return B * L * steps / clock.wall, B * L * steps / clock.cpu


def loop_run(recipe: RecipeSpec, data: TrainData) -> dict:
    """Train ``recipe`` once with its parts timed; the loop's tokens/s and the split of its seconds."""
    clocks = {k: Clock() for k in ("batches", "monitor", "checkpoint")}
    undo = [
        timed_calls(train_setup.Batches, "get", clocks["batches"]),
        timed_calls(loop, "collapse_stats", clocks["monitor"]),
        timed_calls(loop, "step_checkpoint", clocks["checkpoint"]),
    ]
    lines: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            c0 = time.process_time()
            res = train(recipe, data, Path(d) / "ckpt", log=lines.append)
            cpu_total = time.process_time() - c0
    finally:
        for u in undo:
            u()
    tokens = recipe.training.steps * recipe.training.batch_size * recipe.training.seq_len
    loop_wall = tokens / res.tokens_per_s
    out = {"tokens_per_s": res.tokens_per_s, "loop_s": loop_wall, "cpu_s_whole_call": cpu_total}
    for k, c in clocks.items():
        out[f"{k}_s"], out[f"{k}_cpu_s"], out[f"{k}_calls"] = c.wall, c.cpu, c.calls
    out["steps_and_logging_s"] = loop_wall - sum(c.wall for c in clocks.values())
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="sft,jepa")
    ap.add_argument("--threads", default="1,0", help="thread counts (0: torch's default, one per core)")
    ap.add_argument("--steps", type=int, default=60, help="loop steps (the recipe's logging and checkpoints apply)")
    ap.add_argument("--bench-steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_loop.json")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    default_threads = torch.get_num_threads()
    rows = []
    for name in args.recipes.split(","):
        recipe = recipe_of(name, args.steps)
        data = full_data(recipe)
        jepa = recipe.objective != "sft"
        for t in [int(x) for x in args.threads.split(",")]:
            n = t or default_threads
            with limited(n):
                b1 = bench_step(recipe, jepa, args.bench_steps)
                lr = loop_run(recipe, data)
                b2 = bench_step(recipe, jepa, args.bench_steps)
            bench = (b1[0] + b2[0]) / 2
            row = {"recipe": name, "threads": n, "bench_tok_s": bench, "bench_tok_s_cpu": (b1[1] + b2[1]) / 2, **lr}
            row["loop_over_bench"] = lr["tokens_per_s"] / bench
            rows.append(row)
            print(
                f"{name} threads {n}: bench {bench:,.0f} tok/s, loop {lr['tokens_per_s']:,.0f} tok/s "
                f"({row['loop_over_bench']:.2f}x)",
                flush=True,
            )
    print(f"\n{usable_cores()} usable cores, load {os.getloadavg()[0]:.1f}; loop seconds split (wall):")
    head = f"{'recipe':<6} {'thr':>3} {'bench tok/s':>11} {'loop tok/s':>10} {'ratio':>5} "
    print(head + f"{'loop s':>7} {'batches':>7} {'monitor':>7} {'ckpt':>6} {'steps+log':>9}")
    for r in rows:
        print(
            f"{r['recipe']:<6} {r['threads']:>3} {r['bench_tok_s']:>11,.0f} {r['tokens_per_s']:>10,.0f} "
            f"{r['loop_over_bench']:>5.2f} {r['loop_s']:>7.1f} {r['batches_s']:>7.2f} {r['monitor_s']:>7.2f} "
            f"{r['checkpoint_s']:>6.2f} {r['steps_and_logging_s']:>9.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"usable_cores": usable_cores(), "load_avg_1min_at_end": os.getloadavg()[0], "torch": torch.__version__}
    args.out.write_text(json.dumps({**meta, "steps": args.steps, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
