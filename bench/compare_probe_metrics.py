"""Compare the probe metrics of two warehouses (e.g. the previous implementation's and this one's, same seeds), or
a warehouse against a CSV written by ``--csv``.

    python bench/compare_probe_metrics.py OLD.duckdb NEW.duckdb [--cohort msk] [--tolerance c_index=0.005]
    python bench/compare_probe_metrics.py OLD.duckdb --csv bench/results/probe_metrics_old_25k.csv   # export

Prints, per recipe (those present in both) and metric, how many (task, horizon) pairs were compared and the largest
absolute differences of the value and of the CI bounds; exits 1 when a value differs by more than its tolerance
(default 0.005 for c_index, 1e-9 for every other metric: the binary probes and the bootstrap are meant to be
unchanged).
"""

from __future__ import annotations

import argparse
import sys

import duckdb
import numpy as np
import pandas as pd

KEY = ["cohort", "recipe", "task", "horizon_days", "metric"]
DEFAULT_TOLERANCE = {"c_index": 0.005}


def read(path: str, cohort: str | None) -> pd.DataFrame:
    if path.endswith(".csv"):
        df = pd.read_csv(path)
    else:
        with duckdb.connect(path, read_only=True) as conn:
            df = conn.execute("SELECT * FROM probe_metrics").df()
    return df[df["cohort"] == cohort] if cohort else df


def compare(old: pd.DataFrame, new: pd.DataFrame, tolerance: dict[str, float]) -> tuple[pd.DataFrame, bool]:
    both = set(old["recipe"]) & set(new["recipe"])  # recipes materialized in both warehouses
    old, new = old[old["recipe"].isin(both)], new[new["recipe"].isin(both)]
    m = old[KEY + ["value", "ci_low", "ci_high"]].merge(
        new[KEY + ["value", "ci_low", "ci_high"]], on=KEY, suffixes=("_old", "_new"), how="outer", indicator=True
    )
    missing = m[m["_merge"] != "both"]
    m = m[m["_merge"] == "both"]
    rows, ok = [], missing.empty
    for (recipe, metric), g in m.groupby(["recipe", "metric"]):
        d = {c: np.nanmax(np.abs(g[f"{c}_new"] - g[f"{c}_old"]).to_numpy(), initial=0.0) for c in ("value", "ci_low")}
        d["ci_high"] = np.nanmax(np.abs(g["ci_high_new"] - g["ci_high_old"]).to_numpy(), initial=0.0)
        nan_mismatch = int((g["value_old"].isna() != g["value_new"].isna()).sum())
        tol = tolerance.get(metric, 1e-9)
        passed = d["value"] <= tol and nan_mismatch == 0
        ok &= passed
        rows.append(
            {
                "recipe": recipe,
                "metric": metric,
                "pairs": len(g),
                "max|d value|": d["value"],
                "max|d ci_low|": d["ci_low"],
                "max|d ci_high|": d["ci_high"],
                "nan mismatches": nan_mismatch,
                "tolerance": tol,
                "ok": passed,
            }
        )
    if not missing.empty:
        print(f"{len(missing)} metric rows are in only one of the two: {missing[KEY].head(10).to_dict('records')}")
    return pd.DataFrame(rows), ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new", nargs="?")
    p.add_argument("--cohort", default=None)
    p.add_argument("--csv", default=None, help="write OLD's probe_metrics to this CSV and stop")
    p.add_argument("--tolerance", nargs="*", default=[], help="metric=tolerance pairs (default c_index=0.005)")
    args = p.parse_args(argv)
    old = read(args.old, args.cohort)
    if args.csv:
        old.to_csv(args.csv, index=False)
        print(f"wrote {len(old)} rows to {args.csv}")
        return 0
    tol = {**DEFAULT_TOLERANCE, **{k: float(v) for k, v in (t.split("=") for t in args.tolerance)}}
    table, ok = compare(old, read(args.new, args.cohort), tol)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    print("all within tolerance" if ok else "SOME METRICS DIFFER BEYOND TOLERANCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
