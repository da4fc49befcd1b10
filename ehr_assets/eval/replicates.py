"""Training-seed replicates: how much of a difference between recipes is the seed.

A recipe that declares ``replicate_seeds: [1, 2]`` is trained again with each seed as the recipes ``<r>_seed1``,
``<r>_seed2`` (:func:`ehr_assets.keys.replicate`); the recipe itself is the replicate of its own ``training.seed``.
Every replicate is probed like any recipe, so its rows sit in ``probe_metrics`` and ``paired_differences``.
Here they are gathered back per recipe:

* :func:`seed_groups` -- ``{recipe: [recipe, recipe_seed1, ...]}`` for the recipes that have replicates;
* :func:`seed_spread` -- per task and horizon, the headline metric's mean, standard deviation (ddof 1), min and max
  across the seeds of each recipe;
* :func:`seed_summary` -- the same across seeds for the pooled rows of ``paired_differences`` (the pooled
  long-horizon delta against each reference and the pooled gap closed), with each seed's estimate listed.

The standard deviation across seeds is the training noise a comparison between recipes must exceed; the bootstrap CI
of one seed (patients) does not contain it. Nothing here imports Dagster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import keys
from .benchmark import HEADLINE_METRICS

__all__ = ["SPREAD_COLUMNS", "SUMMARY_COLUMNS", "seed_groups", "seed_spread", "seed_summary"]

SPREAD_COLUMNS = ["cohort", "recipe", "task", "horizon_days", "metric", "n_seeds", "mean", "sd", "min", "max"]
SUMMARY_COLUMNS = [*SPREAD_COLUMNS[:2], "scope", "statistic", "reference", *SPREAD_COLUMNS[5:], "seeds"]


def seed_groups(recipes) -> dict[str, list[str]]:
    """Each recipe that has at least one replicate among ``recipes``, with its members (itself first, then the
    replicates by seed). A replicate whose recipe is absent forms a group of its own replicates."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for r in set(recipes):
        base, seed = keys.parse_replicate(r)
        groups.setdefault(base, []).append((-1 if seed is None else seed, r))
    return {b: [r for _, r in sorted(m)] for b, m in sorted(groups.items()) if any(s >= 0 for s, _ in m)}


def _stats(values: pd.Series) -> dict:
    v = values.dropna().to_numpy(dtype=np.float64)
    sd = float(np.std(v, ddof=1)) if v.size > 1 else float("nan")
    if not v.size:
        return {"n_seeds": 0, "mean": np.nan, "sd": np.nan, "min": np.nan, "max": np.nan}
    return {"n_seeds": int(v.size), "mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max())}


def seed_spread(metrics: pd.DataFrame) -> pd.DataFrame:
    """:data:`SPREAD_COLUMNS`: per cohort, recipe with replicates, task and horizon, the headline metric across
    seeds (``metrics``: ``probe_metrics`` rows)."""
    head = metrics[metrics["metric"].isin(HEADLINE_METRICS)]
    rows = []
    for base, members in seed_groups(head["recipe"].unique()).items():
        part = head[head["recipe"].isin(members)]
        for key, g in part.groupby(["cohort", "task", "horizon_days", "metric"], sort=True):
            cohort, task, h, metric = key
            rows.append({"cohort": cohort, "recipe": base, "task": task, "horizon_days": int(h), "metric": metric})
            rows[-1].update(_stats(g["value"]))
    return pd.DataFrame(rows, columns=SPREAD_COLUMNS)


def seed_summary(paired: pd.DataFrame) -> pd.DataFrame:
    """:data:`SUMMARY_COLUMNS`: per cohort and recipe with replicates, the pooled rows of ``paired`` (the
    ``paired_differences`` table, a ``cohort`` column included) across seeds. A replicate's delta against ``sft`` is
    against the same seed's ``sft`` replicate, so the reference column names the reference recipe of the seed-0
    row (its replicates are implied)."""
    pooled = paired[paired["scope"] != "task"]
    rows = []
    for base, members in seed_groups(pooled["recipe"].unique()).items():
        part = pooled[pooled["recipe"].isin(members)].copy()
        part["ref_base"] = [keys.parse_replicate(r)[0] for r in part["reference"]]
        for key, g in part.groupby(["cohort", "scope", "statistic", "ref_base"], sort=True):
            cohort, scope, statistic, ref = key
            seeds = "; ".join(f"{r}={v:.3f}" for r, v in zip(g["recipe"], g["estimate"]))
            row = {"cohort": cohort, "recipe": base, "scope": scope, "statistic": statistic, "reference": ref}
            rows.append(row | _stats(g["estimate"]) | {"seeds": seeds})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
