"""Benchmark stage: put every recipe between the count baseline (floor) and the oracle (ceiling).

Input is the long ``probe_metrics`` table (one row per cohort, recipe, task, horizon, metric) that the recipe,
baseline and oracle probe assets write. For each task and horizon the *headline* metric is AUROC (binary tasks) or
Harrell's C (survival tasks, horizon 0). A recipe's **gap closed** is

    (recipe - count_baseline) / (oracle - count_baseline)

0 = no better than counting codes, 1 = as good as knowing the hidden state (it can leave [0, 1] when the recipe is
worse than the baseline or, through sampling noise, better than the oracle). It is left undefined (NaN) when either
reference is missing or the gap is below :data:`MIN_GAP` (a task the baseline already solves cannot rank encoders),
and where the recipe's metric is too few to score (:mod:`.small_samples`: the reference values of a too-few task
are too few as well, since every recipe is scored on the same held-out rows).
:func:`gap_summary` pools the rows of a recipe as ``sum(recipe - baseline) / sum(oracle - baseline)`` -- all
tasks, and the long horizons (>= :data:`LONG_HORIZON_DAYS`) where the latent *rate* matters most.

:func:`auroc_by_horizon_png` draws AUROC against the horizon (log scale; linear for a task whose only horizon is 0,
as an ACES task's), one panel per binary task, one line per recipe.
Nothing here imports Dagster.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd

from .. import keys
from ..specs import Project

__all__ = [
    "BASELINE",
    "HEADLINE_METRICS",
    "LONG_HORIZON_DAYS",
    "MIN_GAP",
    "ORACLE",
    "auroc_by_horizon_png",
    "benchmark_wide",
    "cross_disease_table",
    "gap_summary",
    "gap_table",
    "headline",
    "recipe_order",
]

BASELINE = keys.COUNT_BASELINE
ORACLE = keys.ORACLE
HEADLINE_METRICS = ("auroc", "c_index")
MIN_GAP = 0.02
LONG_HORIZON_DAYS = 365
KEYS = ["cohort", "task", "horizon_days", "metric"]


def recipe_order(recipes) -> list[str]:
    """The baseline first, then the recipes by name, then the oracle variants (the full oracle last)."""

    def key(r: str):
        return (r != BASELINE, r.startswith(ORACLE), r == ORACLE, r)

    return sorted(set(recipes), key=key)


def headline(metrics: pd.DataFrame) -> pd.DataFrame:
    """The AUROC / C-index rows of ``metrics`` (columns of :data:`KEYS` + recipe, value, ci_low, ci_high,
    too_few: :mod:`.small_samples`; false where the table predates the flag)."""
    head = metrics[metrics["metric"].isin(HEADLINE_METRICS)]
    if "too_few" not in head.columns:
        head = head.assign(too_few=False)
    head = head.assign(too_few=head["too_few"].fillna(False).astype(bool))
    return head[KEYS + ["recipe", "value", "ci_low", "ci_high", "too_few"]].reset_index(drop=True)


def gap_table(metrics: pd.DataFrame, baseline: str = BASELINE, oracle: str = ORACLE) -> pd.DataFrame:
    """One row per (cohort, task, horizon, metric, recipe) for every recipe but the two references: its headline
    ``value``, the ``baseline`` and ``oracle`` values, ``gap`` = oracle - baseline and ``gap_closed``."""
    head = headline(metrics)
    ref = head.pivot_table(index=KEYS, columns="recipe", values="value", aggfunc="first")
    ref = pd.DataFrame(
        {
            "baseline": ref[baseline] if baseline in ref else np.nan,
            "oracle": ref[oracle] if oracle in ref else np.nan,
        },
        index=ref.index,
    ).reset_index()
    rows = head[~head["recipe"].isin([baseline, oracle])].merge(ref, on=KEYS, how="left")
    rows["gap"] = rows["oracle"] - rows["baseline"]
    ok = rows["gap"].notna() & (rows["gap"] >= MIN_GAP) & rows["value"].notna() & ~rows["too_few"]
    rows["gap_closed"] = np.where(ok, (rows["value"] - rows["baseline"]) / rows["gap"].where(ok, 1.0), np.nan)
    cols = KEYS + ["recipe", "value", "baseline", "oracle", "gap", "gap_closed", "too_few"]
    return rows[cols].sort_values(KEYS + ["recipe"], kind="stable").reset_index(drop=True)


def gap_summary(table: pd.DataFrame, long_horizon_days: int = LONG_HORIZON_DAYS) -> pd.DataFrame:
    """Per (cohort, recipe): pooled gap closed over every task/horizon with a defined gap, and over the binary
    tasks at horizons >= ``long_horizon_days``; with the number of (task, horizon) rows each pools and
    ``n_too_few``, the rows left out as too few to score (:mod:`.small_samples`)."""
    few = table.get("too_few", pd.Series(False, index=table.index)).fillna(False).astype(bool)
    n_few = table[few].groupby(["cohort", "recipe"]).size()
    ok = table[table["gap_closed"].notna()]
    out = []
    for (cohort, recipe), g in ok.groupby(["cohort", "recipe"], sort=True):
        long = g[g["horizon_days"] >= long_horizon_days]

        def pooled(d: pd.DataFrame) -> float:
            return float((d["value"] - d["baseline"]).sum() / d["gap"].sum()) if len(d) else float("nan")

        out.append(
            (
                cohort,
                recipe,
                pooled(g),
                len(g),
                pooled(long),
                len(long),
                float(g["value"].mean()),
                float(g["baseline"].mean()),
                float(g["oracle"].mean()),
                int(n_few.get((cohort, recipe), 0)),
            )
        )
    cols = [
        "cohort",
        "recipe",
        "gap_closed_all",
        "n_all",
        f"gap_closed_h{long_horizon_days}plus",
        "n_long",
        "mean_value",
        "mean_baseline",
        "mean_oracle",
        "n_too_few",
    ]
    return pd.DataFrame(out, columns=cols)


def benchmark_wide(metrics: pd.DataFrame, cohort: str | None = None) -> pd.DataFrame:
    """Rows (cohort, task, horizon_days, metric); one headline-value column per recipe in :func:`recipe_order`,
    then ``closed:<recipe>`` columns with each recipe's gap closed."""
    head = headline(metrics if cohort is None else metrics[metrics["cohort"] == cohort])
    if head.empty:
        return pd.DataFrame(columns=KEYS)
    wide = head.pivot_table(index=KEYS, columns="recipe", values="value", aggfunc="first")
    few = head.pivot_table(index=KEYS, columns="recipe", values="too_few", aggfunc="max").reindex_like(wide)
    wide = wide.mask(few.fillna(False).astype(bool))  # too few to score: no point estimate
    wide = wide[recipe_order(wide.columns)]
    gaps = gap_table(metrics if cohort is None else metrics[metrics["cohort"] == cohort])
    if len(gaps):
        closed = gaps.pivot_table(index=KEYS, columns="recipe", values="gap_closed", aggfunc="first", dropna=False)
        closed = closed[[r for r in recipe_order(closed.columns)]]
        closed.columns = [f"closed:{r}" for r in closed.columns]
        wide = wide.join(closed)
    return wide.reset_index().rename_axis(columns=None)


_STYLE = {BASELINE: dict(color="0.45", linestyle="--"), ORACLE: dict(color="black", linestyle=":")}


def recipe_styles(recipes: list[str], colour_cycle: list[str]) -> dict[str, dict]:
    """The line style of each recipe in every plot: the baseline grey dashed, the oracle black dotted, the others the
    colours of ``colour_cycle`` in order, reused past its end (seed replicates make many recipes)."""
    palette = itertools.cycle(colour_cycle)
    return {r: dict(_STYLE.get(r, {}), color=_STYLE.get(r, {}).get("color") or next(palette)) for r in recipes}


def auroc_by_horizon_png(metrics: pd.DataFrame, cohort: str, dpi: int = 80) -> bytes:
    """A PNG: held-out AUROC against the horizon (days), one panel per binary task of ``cohort``, one line per
    recipe (baseline dashed grey, oracle dotted black), with the 95 % bootstrap CI as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = metrics[(metrics["cohort"] == cohort) & (metrics["metric"] == "auroc")]
    tasks = sorted(m["task"].unique())
    ncol = min(3, max(len(tasks), 1))
    nrow = max(1, int(np.ceil(len(tasks) / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.7 * nrow), dpi=dpi, squeeze=False)
    for ax in axes.ravel()[len(tasks) :]:
        ax.axis("off")
    recipes = recipe_order(m["recipe"].unique())
    styles = recipe_styles(recipes, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for ax, task in zip(axes.ravel(), tasks, strict=False):  # unused panels were switched off above
        t = m[m["task"] == task]
        for r in recipes:
            d = t[t["recipe"] == r].sort_values("horizon_days")
            if d.empty:
                continue
            style = styles[r]
            ax.plot(d["horizon_days"], d["value"], marker="o", ms=3, label=r, **style)
            ax.fill_between(d["horizon_days"], d["ci_low"], d["ci_high"], color=style["color"], alpha=0.08)
        ax.set_title(task, fontsize=9)
        hs = sorted(t["horizon_days"].unique())
        if min(hs) > 0:  # an ACES task has horizon 0 (its window is in its config): no log scale for it
            ax.set_xscale("log")
        ax.set_xticks(hs)
        ax.set_xticklabels([str(h) for h in hs], fontsize=7)
        ax.minorticks_off()
        ax.set_ylim(0.4, 1.0)
        ax.axhline(0.5, color="0.85", lw=0.8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("horizon (days)", fontsize=7)
        ax.set_ylabel("AUROC", fontsize=7)
    top = 1.0 - 0.6 / fig.get_figheight()  # room for the title and the legend, in figure fractions
    fig.suptitle(f"{cohort}: held-out AUROC by horizon", fontsize=10, y=0.995, va="top")
    if tasks:
        handles, labels = axes.ravel()[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 1.0 - 0.3 / fig.get_figheight()),
            ncol=min(len(labels), 6),
            fontsize=8,
            frameon=False,
        )
    fig.tight_layout(rect=(0, 0, 1, top))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def cross_disease_table(project: Project, preds: pd.DataFrame) -> pd.DataFrame:
    """For each member cohort of each union, recipe, task and horizon: held-out AUROC of the probe whose encoder (and
    probe) was trained on the member alone vs. on the union, both scored on the member's held-out subjects."""
    from sklearn.metrics import roc_auc_score

    def auc(df: pd.DataFrame) -> float:
        y = df["boolean_value"].astype(int)
        return float(roc_auc_score(y, df["predicted_boolean_probability"])) if y.nunique() == 2 else np.nan

    rows = []
    for union in [c for c, s in project.cohorts.items() if s.is_union]:
        for member in project.members(union):
            alone = preds[preds["cohort"] == member]
            pooled = preds[(preds["cohort"] == union) & (preds["source_cohort"] == member)]
            for (recipe, task, h), a in alone.groupby(["recipe", "task", "horizon_days"]):
                p = pooled[(pooled["recipe"] == recipe) & (pooled["task"] == task) & (pooled["horizon_days"] == h)]
                rows.append((member, union, recipe, task, int(h), auc(a), auc(p) if len(p) else np.nan, len(a)))
    report = pd.DataFrame(
        rows, columns=["member", "union", "recipe", "task", "horizon_days", "auroc_member", "auroc_union", "n"]
    )
    report["delta"] = report["auroc_union"] - report["auroc_member"]
    return report
