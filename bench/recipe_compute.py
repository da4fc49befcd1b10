"""Compute per shipped recipe: the tokens each loss reads over a recipe's run (and with its ``init_from`` chain), and
the forward-token equivalents they cost, counted with the training's own batching on the cohorts' real token data.

    python bench/recipe_compute.py                          # materializes the data assets of every cohort into a
                                                            # temporary warehouse first (minutes)
    python bench/recipe_compute.py --warehouse dagster_home/warehouse.duckdb --artifacts dagster_home/artifacts
    python bench/recipe_compute.py --warehouse /tmp/b/w.duckdb  # not there yet: materialized there and kept

No model runs: for each recipe, :class:`ehr_assets.train.setup.Batches` (what ``train()`` feeds its steps) draws every
micro-batch of ``training.steps`` steps, continuing each data stream where the ``init_from`` recipe left it, and the
real (non-pad) tokens of each loss are summed, as ``train()`` records them in ``train_log.json`` (the same counts,
``tests/train/test_regimes.py``). Forward-token equivalents: :mod:`ehr_assets.compute`. Prints a table and writes
``bench/results/recipe_compute.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ehr_assets.compute import add_tokens, forward_equivalents  # noqa: E402
from ehr_assets.eval.report import markdown_table  # noqa: E402
from ehr_assets.specs import load_project  # noqa: E402
from ehr_assets.train.data import read_train_data  # noqa: E402
from ehr_assets.train.setup import Batches, Objective  # noqa: E402

DATA_ASSETS = ("tokenizer", "token_sequences", "node_contexts")


def materialize_data(project, warehouse: Path, artifacts: Path, cohorts: list[str]) -> None:
    """The cohort-to-token assets (and the recipe token assets) of ``cohorts``, unions last."""
    import dagster as dg

    from ehr_assets.definitions import build_definitions

    defs = build_definitions(project, warehouse_path=warehouse, artifact_root=artifacts)
    tokens = {project.tokens_asset(r) for r in project.recipes} - {None}
    sel = dg.AssetSelection.assets(*DATA_ASSETS, *tokens).upstream()
    job = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job("bench_data", selection=sel)]))
    job = job.resolve_job_def("bench_data")
    order = sorted(cohorts, key=lambda c: project.cohorts[c].is_union)
    with dg.instance_for_test() as instance:
        for c in order:
            t = time.perf_counter()
            res = job.execute_in_process(partition_key=c, instance=instance)
            print(f"materialized the data assets of {c} in {time.perf_counter() - t:.0f}s (success {res.success})")


def count(project, conn, artifacts: Path, cohort: str) -> list[dict]:
    """One row per recipe: tokens per loss of its own run and with its chain, and forward-token equivalents."""
    rows, ends, totals = [], {}, {}
    for r in project.recipes.values():
        if r.is_frozen:
            continue
        tokens_key = project.tokens_asset(r.name)
        data = read_train_data(conn, cohort, tokens_key, artifacts / (tokens_key or "tokenizer") / cohort)
        batches = Batches(r, data, Objective.of(r), 1, 0, ends.get(r.init_from))
        own = {"sft": 0, "jepa": 0}
        for step in range(r.training.steps):
            for micro in range(r.training.grad_accum):
                b = batches.get(step, micro, torch.device("cpu"))
                own = add_tokens(own, {"sft": b.sft_tokens, "jepa": b.jepa_tokens})
        ends[r.name] = batches.ends(r.training.steps)
        totals[r.name] = add_tokens(totals.get(r.init_from), own)
        t = totals[r.name]
        rows.append(
            {
                "cohort": cohort,
                "recipe": r.name,
                "objective": r.objective,
                "init_from": r.init_from or "",
                "finetune": r.finetune,
                "steps": r.training.steps,
                "sft_tokens": own["sft"],
                "jepa_tokens": own["jepa"],
                "sft_tokens_total": t["sft"],
                "jepa_tokens_total": t["jepa"],
                "fwd_equiv_total_M": round(forward_equivalents(t, r.finetune) / 1e6, 2),
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", type=Path, help="a warehouse with token_sequences (default: build one)")
    ap.add_argument("--artifacts", type=Path, help="its artifact root (tokenizers)")
    ap.add_argument("--cohorts", help="comma-separated partitions (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recipe_compute.json")
    args = ap.parse_args()
    project = load_project(ROOT)
    cohorts = args.cohorts.split(",") if args.cohorts else list(project.partition_keys)
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        wh = args.warehouse or Path(tmp) / "warehouse.duckdb"
        art = args.artifacts or wh.parent / "artifacts"
        if not wh.exists():
            materialize_data(project, wh, art, cohorts)
        with duckdb.connect(str(wh), read_only=True) as conn:
            rows = [row for c in cohorts for row in count(project, conn, Path(art), c)]
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown_table(df) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
