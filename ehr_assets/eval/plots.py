"""Pictures of the evidence tables, as PNG bytes (the Dagster layer embeds them in asset metadata).

* :func:`paired_forest_png` -- the pooled rows of ``paired_differences``: each recipe's long-horizon AUROC difference
  from the count baseline and from ``sft``, and its pooled gap closed, as points with their paired 95 % CIs and a
  line at 0 (no difference);
* :func:`latent_r2_png` -- the latent-dynamics probe: held-out R^2 against the offset (0, 180, 365 days), one panel
  per latent variable, one line per recipe with its CI band (count baseline dashed grey, oracle dotted black);
* :func:`sft_loss_png` -- the next-token loss of every SFT run against the step (has it flattened?).

matplotlib (Agg) only; nothing here imports Dagster.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from .. import keys
from .benchmark import BASELINE, recipe_order, recipe_styles

__all__ = ["latent_r2_png", "paired_forest_png", "sft_loss_png"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _forest(ax, rows: pd.DataFrame, title: str, xlabel: str) -> None:
    """One panel: a row per recipe, the estimate as a dot and its CI as a bar; a CI that excludes 0 is filled."""
    rows = rows.set_index("recipe").loc[[r for r in recipe_order(rows["recipe"]) if r in set(rows["recipe"])]]
    y = np.arange(len(rows))[::-1]
    for yi, (_, r) in zip(y, rows.iterrows()):
        sig = np.isfinite(r.ci_low) and (r.ci_low > 0 or r.ci_high < 0)
        ax.plot([r.ci_low, r.ci_high], [yi, yi], color="tab:blue", lw=1.5)
        ax.plot([r.estimate], [yi], "o", color="tab:blue", mfc="tab:blue" if sig else "white", ms=5)
    ax.axvline(0.0, color="0.6", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(list(rows.index), fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.tick_params(axis="x", labelsize=7)


def paired_forest_png(table: pd.DataFrame, cohort: str, dpi: int = 80) -> bytes:
    """A PNG of the pooled rows of one cohort's ``paired_differences``: delta vs the count baseline, delta vs
    ``sft`` (each replicate against its seed's ``sft``) and the gap closed; filled dots have a CI excluding 0."""
    plt = _pyplot()
    pooled = table[table["scope"] != "task"]
    panels = [
        ("pooled_long", "delta", BASELINE, "AUROC - count baseline", "difference (h >= long)"),
        ("pooled_long", "delta", "sft", "AUROC - sft", "difference (h >= long)"),
        ("pooled_all", "gap_closed", BASELINE, "gap closed (all tasks)", "fraction of baseline->oracle gap"),
    ]
    chosen = []
    for scope, stat, ref, title, xlabel in panels:
        rows = pooled[(pooled["scope"] == scope) & (pooled["statistic"] == stat)]
        rows = rows[[keys.parse_replicate(r)[0] == ref for r in rows["reference"]]]
        if len(rows):
            chosen.append((rows, title, xlabel))
    n_rows = max((len(r) for r, _, _ in chosen), default=1)
    fig, axes = plt.subplots(1, max(len(chosen), 1), figsize=(3.4 * max(len(chosen), 1), 0.9 + 0.22 * n_rows), dpi=dpi)
    axes = np.atleast_1d(axes)
    for ax, (rows, title, xlabel) in zip(axes, chosen):
        _forest(ax, rows, title, xlabel)
    if not chosen:
        axes[0].text(0.5, 0.5, "no paired differences", ha="center", va="center")
        axes[0].axis("off")
    fig.suptitle(f"{cohort}: paired differences, 95 % subject-bootstrap CIs", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def latent_r2_png(table: pd.DataFrame, cohort: str, dpi: int = 80) -> bytes:
    """A PNG of the latent-dynamics probe of one cohort: held-out R^2 by offset, a panel per latent variable."""
    plt = _pyplot()
    t = table[table["r2"].notna()]
    variables = [v for v in dict.fromkeys(t["variable"])]
    ncol = min(3, max(len(variables), 1))
    nrow = max(1, int(np.ceil(len(variables) / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.6 * nrow), dpi=dpi, squeeze=False)
    for ax in axes.ravel()[len(variables) :]:
        ax.axis("off")
    recipes = recipe_order(t["recipe"].unique())
    styles = recipe_styles(recipes, plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for ax, var in zip(axes.ravel(), variables, strict=False):
        v = t[t["variable"] == var]
        for r in recipes:
            d = v[v["recipe"] == r].sort_values("offset_days")
            if d.empty:
                continue
            ax.plot(d["offset_days"], d["r2"], marker="o", ms=3, label=r, **styles[r])
            ax.fill_between(d["offset_days"], d["ci_low"], d["ci_high"], color=styles[r]["color"], alpha=0.08)
        ax.set_title(var, fontsize=9)
        ax.set_xticks(sorted(v["offset_days"].unique()))
        ax.set_ylim(-0.2, 1.05)
        ax.axhline(0.0, color="0.85", lw=0.8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("days after the node", fontsize=7)
        ax.set_ylabel("held-out R^2", fontsize=7)
    fig.suptitle(f"{cohort}: latent state read from node features (ridge)", fontsize=10, y=0.995, va="top")
    if variables:
        handles, labels = axes.ravel()[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08 if variables else 0, 1, 0.95))
    return _png(fig)


def sft_loss_png(curves: dict[tuple[str, str], list[dict]], start: dict[str, int], dpi: int = 80) -> bytes:
    """A PNG of the SFT (next-token) loss against the optimizer step, one panel per cohort, one line per run;
    ``start[recipe]`` is the step a continued run starts at (its ``init_from``'s steps), so a continuation
    extends the curve of the run it continues."""
    plt = _pyplot()
    cohorts = sorted({c for c, _ in curves})
    fig, axes = plt.subplots(1, max(len(cohorts), 1), figsize=(4.2 * max(len(cohorts), 1), 3.0), dpi=dpi, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bases = sorted({keys.parse_replicate(r)[0] for _, r in curves})
    for ax, cohort in zip(axes.ravel(), cohorts, strict=False):
        for (c, r), curve in sorted(curves.items()):
            if c != cohort:
                continue
            pts = [
                (p["step"] + start.get(r, 0), p["sft_loss"]) for p in curve if np.isfinite(p.get("sft_loss", np.nan))
            ]
            if not pts:
                continue
            base = keys.parse_replicate(r)[0]
            x, y = zip(*pts)
            ax.plot(x, y, lw=1, color=colours[bases.index(base) % len(colours)], label=base if r == base else None)
        ax.set_title(cohort, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=7)
        ax.set_ylabel("SFT loss (nats / token)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle("next-token loss of every SFT run (each seed a line)", fontsize=10)
    fig.tight_layout()
    return _png(fig)
