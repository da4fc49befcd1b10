"""The embedding pass at real size: the decision-node contexts of a materialized cohort through a recipe's checkpoint,
with the pass before issue 14 (kept here as the reference: row-count batches, padding mask, no shared prefixes) and
the current :func:`ehr_assets.embed.embed`, each with one thread and with torch's default threads.

    python -m ehr_assets.synthetic msk --subjects 25000 --out /tmp/msk25k      # a MEDS folder, then a project whose
    # cohorts/msk.yaml reads it (source: {kind: meds, path: /tmp/msk25k}) materialized up to sft_checkpoint, then:
    python bench/embed_pass.py --home /tmp/home25k --cohort msk --recipe sft [--subjects 5000] [--threads 1,0]

Reads ``<home>/warehouse.duckdb`` (token_sequences, node_contexts) and the checkpoint
``<home>/artifacts/<recipe>_checkpoint/<cohort>``.
``--subjects N`` takes the decision nodes of N random subjects (all of them: 0), so shared prefixes stay as common as
in the whole cohort; the seconds for every node are extrapolated by tokens. Checks that both passes give the same
embeddings (max abs difference) and prints a table; writes ``bench/results/embed_pass.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ehr_assets.embed import embed, load_encoder, pool_hidden  # noqa: E402
from ehr_assets.model.backbone import decoder_of  # noqa: E402
from ehr_assets.text.tokenizers import load_tokenizer  # noqa: E402
from ehr_assets.threads import limited, usable_cores  # noqa: E402


@torch.no_grad()
def reference_embed(ckpt: Path, ctxs: list[np.ndarray], pool: str, batch_size: int, pad_id: int) -> np.ndarray:
    """The pass as it was before issue 14: ``batch_size`` rows per batch by length, padding mask, every context run."""
    model, _ = load_encoder(ckpt)
    dec, _ = decoder_of(model)
    out = np.zeros((len(ctxs), model.get_base_model().config.hidden_size), dtype=np.float32)
    lengths = np.array([len(c) for c in ctxs])
    order = np.argsort(-lengths, kind="stable")
    for b in range(0, len(ctxs), batch_size):
        idx = order[b : b + batch_size]
        L = int(lengths[idx].max())
        inp = np.full((len(idx), L), pad_id, dtype=np.int64)
        am = np.zeros((len(idx), L), dtype=np.int64)
        for r, i in enumerate(idx):
            inp[r, : lengths[i]] = ctxs[i]
            am[r, : lengths[i]] = 1
        am_t = torch.from_numpy(am)
        h = dec(input_ids=torch.from_numpy(inp), attention_mask=am_t, use_cache=False).last_hidden_state
        out[idx] = pool_hidden(h.float(), am_t, pool).numpy()
    return out


def load(home: Path, cohort: str, recipe: str, subjects: int, seed: int):
    """(contexts, pad id, checkpoint, recipe dict, total nodes, total context tokens): every decision node's context
    (its last ``embed_tokens`` tokens, as the embeddings asset crops it) of ``subjects`` random subjects (0: all)."""
    import duckdb

    ckpt = home / "artifacts" / f"{recipe}_checkpoint" / cohort
    spec = json.loads((ckpt / "recipe.json").read_text())
    seq_len = spec["embedding"].get("max_tokens") or spec["training"]["seq_len"]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        seq = con.execute("SELECT subject_id, input_ids FROM token_sequences WHERE cohort = ?", [cohort]).fetch_df()
        ctx = con.execute(
            "SELECT subject_id, context_end FROM node_contexts WHERE cohort = ? ORDER BY subject_id, prediction_time",
            [cohort],
        ).fetch_df()
    n_nodes, n_tokens = len(ctx), int(np.minimum(ctx["context_end"].to_numpy(), seq_len).sum())
    if subjects:
        pick = np.random.default_rng(seed).choice(ctx["subject_id"].unique(), size=subjects, replace=False)
        ctx = ctx[ctx["subject_id"].isin(pick)]
    ids = dict(zip(seq["subject_id"], seq["input_ids"]))
    ends = zip(ctx["subject_id"], ctx["context_end"])
    contexts = [np.asarray(ids[s][max(0, e - seq_len) : e], dtype=np.int64) for s, e in ends]
    fast, _ = load_tokenizer(home / "artifacts" / "tokenizer" / cohort)
    return contexts, fast.pad_token_id, ckpt, spec, n_nodes, n_tokens


def time_pass(fn, n: int) -> tuple[np.ndarray, float, float]:
    """(embeddings, wall s, CPU s) of ``fn()`` with ``n`` threads."""
    with limited(n):
        t0, c0 = time.perf_counter(), time.process_time()
        emb = fn()
        return emb, time.perf_counter() - t0, time.process_time() - c0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True, help="folder with warehouse.duckdb and artifacts/")
    ap.add_argument("--cohort", default="msk")
    ap.add_argument("--recipe", default="sft")
    ap.add_argument("--subjects", type=int, default=5000, help="subjects sampled (0: every decision node)")
    ap.add_argument("--threads", default="1,0", help="thread counts to time (0: torch's default, one per core)")
    ap.add_argument("--skip-reference", action="store_true", help="time only the current pass")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embed_pass.json")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    contexts, pad_id, ckpt, spec, n_nodes, n_tokens = load(
        args.home, args.cohort, args.recipe, args.subjects, args.seed
    )
    pool, bs = spec["embedding"]["pool"], spec["embedding"]["batch_size"]
    sample_tokens = int(sum(len(c) for c in contexts))
    embed(ckpt, contexts[:64], pool=pool, batch_size=bs, pad_id=pad_id)  # warm-up: imports, first allocations
    default_threads = torch.get_num_threads()
    rows, results = [], {}
    for n in [int(x) or default_threads for x in args.threads.split(",")]:
        passes = {"current": lambda: embed(ckpt, contexts, pool=pool, batch_size=bs, pad_id=pad_id)}
        if not args.skip_reference:
            passes["reference"] = lambda: reference_embed(ckpt, contexts, pool, bs, pad_id)
        for name, fn in passes.items():
            results[(name, n)], s, cpu = time_pass(fn, n)
            row = {"pass": name, "threads": n, "seconds": s, "cpu_seconds": cpu, "tokens_per_s": sample_tokens / s}
            row["seconds_all_nodes"], row["cpu_seconds_all_nodes"] = (
                s * n_tokens / sample_tokens,
                cpu * n_tokens / sample_tokens,
            )
            rows.append(row)
            print(
                f"{name:<10} threads {n}: {s:7.1f} s (CPU {cpu:.1f} s), {sample_tokens / s:,.0f} tokens/s", flush=True
            )
    diffs = {
        f"{a[0]}@{a[1]} vs {b[0]}@{b[1]}": float(np.abs(results[a] - results[b]).max())
        for a in results
        for b in results
        if a < b
    }
    load_avg = os.getloadavg()[0]
    print(
        f"\n{len(contexts):,} of {n_nodes:,} nodes, {sample_tokens:,} of {n_tokens:,} context tokens; "
        f"{usable_cores()} usable cores, load {load_avg:.1f} (seconds for all nodes extrapolated by tokens)"
    )
    print(f"{'pass':<10} {'threads':>7} {'seconds':>8} {'CPU s':>6} {'tok/s':>8} {'all nodes s':>11} {'CPU s':>6}")
    for r in rows:
        print(
            f"{r['pass']:<10} {r['threads']:>7} {r['seconds']:>8.1f} {r['cpu_seconds']:>6.1f} "
            f"{r['tokens_per_s']:>8,.0f} {r['seconds_all_nodes']:>11.0f} {r['cpu_seconds_all_nodes']:>6.0f}"
        )
    print("max |difference|:", json.dumps(diffs))
    meta = {"cohort": args.cohort, "recipe": args.recipe, "pool": pool, "batch_size": bs}
    meta.update(nodes_sampled=len(contexts), nodes_total=n_nodes, context_tokens_sampled=sample_tokens)
    meta.update(context_tokens_total=n_tokens, usable_cores=usable_cores(), load_avg_1min_at_end=load_avg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({**meta, "rows": rows, "max_abs_difference": diffs, "torch": torch.__version__}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
