"""The answer in thirty seconds: the demo's ending and ``python -m ehr_assets.report --format summary``.

At most :data:`MAX_LINES` lines of at most :data:`WIDTH` characters, from the pooled rows of ``paired_differences``
(:mod:`ehr_assets.eval.paired`) and the training health (:mod:`ehr_assets.eval.health`):

* per cohort, each recipe's mean held-out AUROC over the long horizons (binary tasks at >= 365 days) with its
  95 % subject-bootstrap CI, the count baseline first and the oracles last;
* the fraction of the baseline-to-oracle gap each trained recipe closes over the same tasks, with its CI;
* each trained recipe minus ``sft`` (paired: the same resampled patients) with a plain verdict (:func:`verdict`):
  it helps or hurts only when the whole CI lies on one side of 0, and a recipe whose JEPA objective was not learned
  (or cannot be shown to be) gets no verdict, as the study withholds its own;
* where to look next: the UI, the report's formats, the files with every table and plot.

Seed replicates are left out (``--format seeds`` shows them). Nothing here imports Dagster.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from .. import keys
from ..stats import JEPA_NORM_CEILING
from .benchmark import BASELINE, LONG_HORIZON_DAYS, ORACLE, recipe_order
from .render import aligned, fit_columns

__all__ = ["MAX_LINES", "UI_ADDRESS", "WIDTH", "next_steps", "results_dir", "summary_text", "verdict"]

WIDTH = 100
MAX_LINES = 40
UI_ADDRESS = "http://127.0.0.1:3000"
SFT = "sft"


def _cell(v: float, lo: float, hi: float, signed: bool = False) -> str:
    if not math.isfinite(v):
        return "n/a"
    head = f"{v:+.3f}" if signed else f"{v:.3f}"
    return head if not (math.isfinite(lo) and math.isfinite(hi)) else f"{head} [{lo:.2f}, {hi:.2f}]"


def verdict(estimate: float, ci_low: float, ci_high: float, learned: str = "n/a", loss_end: float = math.nan) -> str:
    """The plain reading of ``recipe - sft``: ``learned`` is the recipe's ``jepa_learned`` in that cohort
    (:mod:`ehr_assets.eval.health`: ``yes``, ``no``, ``unknown``, ``n/a`` without a JEPA loss). A JEPA objective not
    learned, or not shown to be, withholds the verdict; otherwise the paired CI decides."""
    if learned == "no":
        return f"no verdict: JEPA not learned (loss {loss_end:.3f})"
    if learned not in ("yes", "n/a"):
        return "no verdict: JEPA health unknown"
    if not math.isfinite(estimate):
        return "no estimate"
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "no verdict: no CI"
    if ci_low > 0:
        return "better than sft (the whole CI above 0)"
    if ci_high < 0:
        return "worse than sft (the whole CI below 0)"
    return "no difference resolved (the CI spans 0)"


def _health_of(health: pd.DataFrame | None, cohort: str, recipe: str, uses_jepa: bool | None) -> tuple[str, float]:
    """(jepa_learned, normalized JEPA loss at the end) of ``recipe`` in ``cohort``. Without a health row: ``n/a``
    for a recipe known to train no JEPA loss, else ``unknown``."""
    if health is not None and len(health):
        row = health[(health["cohort"] == cohort) & (health["recipe"] == recipe)]
        if len(row):
            return str(row["jepa_learned"].iloc[0]), float(row["jepa_loss_norm_end"].iloc[0])
    return ("n/a" if uses_jepa is False else "unknown"), math.nan


def _pivot(rows: pd.DataFrame, cohorts: list[str], recipes: list[str], signed: bool = False) -> pd.DataFrame:
    """One row per recipe, one ``estimate [low, high]`` column per cohort."""
    cells = {(r.cohort, r.recipe): _cell(r.estimate, r.ci_low, r.ci_high, signed) for r in rows.itertuples()}
    out = pd.DataFrame({"recipe": recipes})
    for c in cohorts:
        out[c] = [cells.get((c, r), "") for r in recipes]
    return out


def results_dir(warehouse: str | Path) -> Path:
    """Where :func:`ehr_assets.eval.results.write_results` writes for ``warehouse``: ``results/`` beside it."""
    return Path(warehouse).parent / "results"


def next_steps(results_dir: str | Path | None = None) -> list[str]:
    """Where to look next: the UI, the report command's formats, the files."""
    lines = [
        "Next:",
        f"  the UI (lineage, runs, checks, plots): make ui, then open {UI_ADDRESS}",
        "  every table: python -m ehr_assets.report --format table|wide|gap|delta|latent|health|markdown",
        "    (--cohort, --recipe, --task to narrow it; --format csv for every metric as CSV)",
    ]
    if results_dir is not None:
        lines += ["  the same tables and the plots as files (index in README.txt):", f"    {results_dir}/"]
    return lines


def summary_text(
    paired: pd.DataFrame,
    health: pd.DataFrame | None = None,
    uses_jepa: dict[str, bool] | None = None,
    results_dir: str | Path | None = None,
    order: list[str] | None = None,
) -> str:
    """The summary of ``paired`` (the ``paired_differences`` rows of one or more cohorts, a ``cohort`` column
    included), the verdicts respecting ``health`` (:func:`ehr_assets.eval.health.training_health`; None: unknown);
    ``uses_jepa``: whether each recipe trains a JEPA loss (a recipe missing from ``health`` then gets ``n/a`` or
    ``unknown``); ``results_dir``: the folder :func:`ehr_assets.eval.results.write_results` wrote, named at the end;
    ``order``: the recipes' order (the project's; default: by name), after the count baseline and sft."""
    uses_jepa = uses_jepa or {}
    primary = paired["recipe"].map(lambda r: keys.parse_replicate(r)[1] is None)  # seed replicates left out
    long = paired[(paired["scope"] == "pooled_long") & primary]
    means = long[long["statistic"] == "mean"]
    if means.empty:
        return "(no pooled long-horizon rows: materialize paired_differences)\n" + "\n".join(next_steps(results_dir))
    cohorts = sorted(dict.fromkeys(means["cohort"]))  # the same order whichever partition finished first
    recipes = recipe_order(means["recipe"])
    rank = {r: i for i, r in enumerate(order or [])}  # the baseline, then sft (the references), then the others
    recipes = sorted(recipes, key=lambda r: (r != BASELINE, r != SFT, rank.get(r, len(rank))))
    trained = [r for r in recipes if r != BASELINE and r != ORACLE and not r.startswith(f"{ORACLE}_")]
    out = [
        f"Held-out AUROC at long horizons (binary tasks, >= {LONG_HORIZON_DAYS} days; mean over task x horizon),",
        "with 95 % CIs from one paired bootstrap of held-out patients per cohort:",
        "",
        fit_columns(_pivot(means, cohorts, recipes), ["recipe"], WIDTH, render=aligned),
    ]
    gaps = long[(long["statistic"] == "gap_closed") & long["recipe"].isin(trained)]
    if len(gaps):
        out += ["", "Gap to the oracle closed at long horizons (0 = counting codes, 1 = the oracle; tasks with a gap):"]
        out.append("")
        shown = [r for r in trained if r in set(gaps["recipe"])]
        out.append(fit_columns(_pivot(gaps, cohorts, shown), ["recipe"], WIDTH, render=aligned))
    deltas = long[(long["statistic"] == "delta") & (long["reference"] == SFT) & long["recipe"].isin(trained)]
    if len(deltas):
        out += ["", "Each recipe minus sft (paired 95 % CI) and what it says:"]
        d = deltas.set_index(["cohort", "recipe"])
        lines = []
        withheld = False
        for c in cohorts:
            for r in [r for r in trained if (c, r) in d.index]:
                row = d.loc[(c, r)]
                learned, loss = _health_of(health, c, r, uses_jepa.get(r))
                text = verdict(row["estimate"], row["ci_low"], row["ci_high"], learned, loss)
                withheld |= text.startswith("no verdict: JEPA")
                lines.append((c, r, _cell(row["estimate"], row["ci_low"], row["ci_high"], signed=True), text))
        table = pd.DataFrame(lines, columns=["cohort", "recipe", "minus sft", "verdict"])
        out.append(aligned(table, left=4))
        if withheld:
            note = (
                f"(no verdict: the normalized JEPA loss ended at or above {JEPA_NORM_CEILING}, near the 1.0 of "
                "predicting the targets' mean, or no training log shows it: such a row compares SFT with SFT plus "
                "a loss that taught next to nothing; --format health)"
            )
            out += textwrap.wrap(note, WIDTH)
    if not primary.all():
        out.append("(seed replicates left out: --format seeds)")
    out += ["", *next_steps(results_dir)]
    return "\n".join(out)
