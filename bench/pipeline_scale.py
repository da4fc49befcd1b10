"""How the lineage scales with the number of subjects: every asset of one cohort partition materialized on a fresh
Dagster instance, a fresh DuckDB warehouse and a fresh artifact root, at two (or more) cohort sizes.

    python bench/pipeline_scale.py                                  # msk at 2,500 and 25,000 subjects, recipe sft
    python bench/pipeline_scale.py --sizes 100000 --no-recipe --out bench/results/pipeline_scale_100k.json
    python bench/pipeline_scale.py --sizes 2500 --keep /tmp/scale   # keep the warehouses (compare_probe_metrics.py)

What runs, in lineage order, for the cohort partition (synthetic, the cohort's declared profile and seed, ``subjects``
set to each size): ``cohort_events``, ``cohort_table``, ``subjects``, ``decision_nodes``, ``task_labels``,
``tokenizer``, ``token_sequences``, ``node_contexts`` (the data lineage), ``count_baseline_probe_metrics``,
``cohort_latent`` and ``oracle_probe_metrics``, then one recipe's ``<recipe>_checkpoint`` (``--steps`` to change its
training length, which does not grow with the cohort), ``<recipe>_embeddings`` and ``<recipe>_probe_metrics``.

Each asset runs in its own Python process (``--child``), together with its blocking checks, with the in-process
executor: the seconds are the job's wall time without the imports, the step seconds come from the instance's step
stats (asset step, then its checks), and the peak RSS is the child's maximum resident set (imports included; the RSS
after the imports is reported beside it). Data pass between processes through the warehouse and the artifact root,
as they do between the steps of a run. The parent prints one table and writes JSON (sizes, per-asset seconds, RSS,
ratios between the largest and smallest size, the machine's load average before and after each asset).

This is a measurement, not a test: it is not collected by pytest. Threads follow the environment (e.g. set
``OMP_NUM_THREADS``); the JSON records the variables that matter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA_LINEAGE = [
    "cohort_events",
    "cohort_table",
    "subjects",
    "decision_nodes",
    "task_labels",
    "tokenizer",
    "token_sequences",
    "node_contexts",
]
EVALUATION = ["count_baseline_probe_metrics", "cohort_latent", "oracle_probe_metrics"]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "EHR_THREADS", "EHR_PARALLEL_STEPS")


# ---------------------------------------------------------------------------------------------------------- setup
def make_project(dest: Path, cohort: str, subjects: int, recipe: str | None, steps: int | None) -> Path:
    """A copy of the shipped declarations with ``cohort`` at ``subjects`` subjects and only ``recipe``'s
    ``init_from`` chain among the recipes (fewer assets to build; the measured ones are unchanged)."""
    import yaml

    for d in ("cohorts", "models", "probes"):
        shutil.copytree(ROOT / d, dest / d)
    p = dest / "cohorts" / f"{cohort}.yaml"
    spec = yaml.safe_load(p.read_text())
    if spec.get("source", {}).get("kind") != "synthetic":
        raise SystemExit(f"{p}: the bench needs a synthetic cohort (its size is a parameter)")
    spec["source"]["subjects"] = int(subjects)
    p.write_text(yaml.safe_dump(spec))
    keep = set()
    name = recipe
    while name:
        keep.add(name)
        name = yaml.safe_load((dest / "models" / f"{name}.yaml").read_text()).get("init_from")
    for m in (dest / "models").glob("*.yaml"):
        if m.stem not in keep:
            m.unlink()
    if recipe and steps is not None:
        m = dest / "models" / f"{recipe}.yaml"
        spec = yaml.safe_load(m.read_text())
        spec.setdefault("training", {})["steps"] = int(steps)
        m.write_text(yaml.safe_dump(spec))
    return dest


def asset_list(recipe: str | None) -> list[str]:
    names = DATA_LINEAGE + EVALUATION
    if recipe:
        names += [f"{recipe}_checkpoint", f"{recipe}_embeddings", f"{recipe}_probe_metrics"]
    return names


# ---------------------------------------------------------------------------------------------------------- child
def run_child(args) -> None:
    """Materialize one asset (and its blocking checks) of one partition; print one JSON line."""
    import dagster as dg

    from ehr_assets.definitions import build_definitions

    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    defs = build_definitions(Path(args.project), warehouse_path=args.warehouse, artifact_root=args.artifacts)
    job = dg.define_asset_job("bench_one", selection=dg.AssetSelection.assets(args.child))
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    with dg.instance_for_test() as instance:
        t0 = time.perf_counter()
        result = defs.resolve_job_def("bench_one").execute_in_process(
            partition_key=args.cohort, instance=instance, raise_on_error=False
        )
        wall = time.perf_counter() - t0
        steps = {
            s.step_key: (s.end_time or 0) - (s.start_time or 0) for s in instance.get_run_step_stats(result.run_id)
        }
    out = {
        "asset": args.child,
        "success": bool(result.success),
        "seconds": round(wall, 2),
        "asset_step_s": round(steps.pop(args.child, float("nan")), 2),
        "check_steps_s": {k: round(v, 2) for k, v in steps.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mib": round(rss_imports, 1),
    }
    if not result.success:
        failures = [e for e in result.all_events if e.is_failure]
        out["error"] = str(failures[0].event_specific_data.error.message)[:2000] if failures else "failed"
    print("BENCH_RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------------------- parent
def measure_size(n: int, args, work: Path, runs: list[dict], save) -> dict:
    """Every asset at ``n`` subjects, each in its own process, on a fresh warehouse and artifact root; the run is
    appended to ``runs`` at once and ``save()`` called after every asset (an interrupted bench keeps what it
    measured)."""
    base = work / f"n{n}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    project = make_project(base / "project", args.cohort, n, args.recipe, args.steps)
    rows = []
    runs.append({"subjects": n, "assets": rows})
    for name in asset_list(args.recipe):
        load_before = os.getloadavg()
        cmd = [sys.executable, __file__, "--child", name, "--project", str(project), "--cohort", args.cohort]
        cmd += ["--warehouse", str(base / "warehouse.duckdb"), "--artifacts", str(base / "artifacts")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DAGSTER_HOME": ""})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
        if line is None:
            raise SystemExit(f"{name} at {n}: the child process failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
        row = json.loads(line[len("BENCH_RESULT ") :])
        row.update(process_s=round(time.perf_counter() - t0, 2), load_before=load_before, load_after=os.getloadavg())
        rows.append(row)
        save()
        print(
            f"  n={n:>7,} {name:<30} {row['seconds']:>8.1f} s  peak RSS {row['peak_rss_mib']:>7.0f} MiB"
            f"  load {load_before[0]:.1f}" + ("" if row["success"] else f"  FAILED: {row.get('error', '')[:300]}"),
            flush=True,
        )
        if not row["success"]:
            break
    return runs[-1]


def summarize(runs: list[dict]) -> list[dict]:
    """Per asset: seconds and peak RSS at each size, and the ratio largest / smallest size."""
    names = [r["asset"] for r in runs[0]["assets"]]
    table = []
    for name in names:
        row = {"asset": name}
        for run in runs:
            a = next((x for x in run["assets"] if x["asset"] == name), None)
            row[f"s_{run['subjects']}"] = a["seconds"] if a else None
            row[f"rss_{run['subjects']}"] = a["peak_rss_mib"] if a else None
        lo, hi = runs[0], runs[-1]
        if len(runs) > 1 and row[f"s_{hi['subjects']}"] is not None:
            row["time_ratio"] = round(row[f"s_{hi['subjects']}"] / max(row[f"s_{lo['subjects']}"], 1e-9), 2)
        table.append(row)
    for run in runs:
        data = [a["seconds"] for a in run["assets"] if a["asset"] in DATA_LINEAGE]
        run["data_lineage_s"] = round(sum(data), 1)
        run["peak_rss_mib"] = max((a["peak_rss_mib"] for a in run["assets"]), default=None)
    return table


def print_table(runs: list[dict], table: list[dict]) -> None:
    sizes = [r["subjects"] for r in runs]
    head = (
        "| asset | "
        + " | ".join(f"s @ {n:,}" for n in sizes)
        + " | "
        + " | ".join(f"peak RSS MiB @ {n:,}" for n in sizes)
    )
    head += " | time ratio |" if len(sizes) > 1 else " |"
    print(head)
    print("|---" * (1 + 2 * len(sizes) + (len(sizes) > 1)) + "|")
    for row in table:
        cells = [row["asset"]] + [f"{row[f's_{n}']:.1f}" if row[f"s_{n}"] is not None else "-" for n in sizes]
        cells += [f"{row[f'rss_{n}']:.0f}" if row[f"rss_{n}"] is not None else "-" for n in sizes]
        if len(sizes) > 1:
            cells.append(f"{row.get('time_ratio', float('nan')):.2f}")
        print("| " + " | ".join(cells) + " |")
    for run in runs:
        print(
            f"data lineage at {run['subjects']:,} subjects: {run['data_lineage_s']:.1f} s; "
            f"largest peak RSS {run['peak_rss_mib']:.0f} MiB"
        )


def combine(paths: list[str], out: str) -> None:
    """One table (and JSON) of the sizes measured by separate runs (e.g. the small size with the recipe, the large
    one without): each source file's command, commit, environment and runs are kept."""
    sources = [json.loads(Path(p).read_text()) for p in paths]
    runs = sorted((r for s in sources for r in s["runs"]), key=lambda r: r["subjects"])
    table = summarize(runs)
    print_table(runs, table)
    keep = ("command", "commit", "complete", "env", "machine", "started", "wall_s", "recipe")
    result = {"combined_from": [{k: s.get(k) for k in keep} for s in sources], "runs": runs, "table": table}
    Path(out).write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2500, 25000], help="cohort sizes, smallest first")
    p.add_argument("--cohort", default="msk", help="a synthetic source cohort of cohorts/ (default msk)")
    p.add_argument("--recipe", default="sft", help="the recipe whose checkpoint, embeddings and probes run")
    p.add_argument("--no-recipe", action="store_true", help="data lineage, baseline and oracle only")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's training steps")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipeline_scale.json"))
    p.add_argument("--keep", default=None, help="a folder to keep the projects, warehouses and artifacts in")
    p.add_argument(
        "--combine", nargs="+", default=None, help="JSON files of earlier runs: one table of all their sizes, no run"
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    for a in ("--project", "--warehouse", "--artifacts"):
        p.add_argument(a, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.no_recipe:
        args.recipe = None
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    if args.combine:
        return combine(args.combine, args.out)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pipeline_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runs: list[dict] = []
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout

    def save(final: bool = False) -> list[dict]:
        table = summarize(runs) if runs and runs[0]["assets"] else []
        result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "commit": commit.strip(),
            "complete": final,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "env": {k: os.environ[k] for k in THREAD_VARS if k in os.environ},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
            "wall_s": round(time.time() - t0, 1),
            "cohort": args.cohort,
            "recipe": args.recipe,
            "runs": runs,
            "table": table,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        return table

    try:
        for n in sorted(args.sizes):
            measure_size(n, args, work, runs, save)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = save(final=True)
    print_table(runs, table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
