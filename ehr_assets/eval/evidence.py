"""The evidence tables as people read them: paired differences, the latent-dynamics probe and the seeds, formatted
for ``python -m ehr_assets.report`` (``--format delta|latent|seeds``), the demo and the assets' metadata.

* :func:`pooled_table` -- the pooled rows of ``paired_differences``: estimate, 95 % CI, p-value, one row per recipe,
  reference and statistic;
* :func:`delta_wide` -- per task and horizon, one ``delta [low, high]`` column per recipe against one reference,
  ``*`` where the CI excludes 0;
* :func:`latent_wide` -- per latent variable and offset, one ``R^2 [low, high]`` column per recipe (count baseline
  first, oracles last);
* :func:`delta_report`, :func:`latent_report`, :func:`seeds_report` -- the text the report command prints: one block
  per cohort, wide tables split into column blocks of at most :data:`~ehr_assets.eval.render.REPORT_WIDTH` columns.

Nothing here imports Dagster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import keys
from .benchmark import recipe_order
from .render import fit_columns, per_cohort
from .replicates import seed_spread, seed_summary

__all__ = ["delta_report", "delta_wide", "latent_report", "latent_wide", "pooled_table", "seeds_report"]

STATISTIC_ORDER = {"mean": 0, "delta": 1, "gap_closed": 2}  # the level first, then what is compared with it


def _ci_cell(v: float, lo: float, hi: float, signed: bool = False, mark: bool = False) -> str:
    """``v [lo, hi]`` (3 and 2 decimals); ``*`` when ``mark`` and the CI excludes 0; ``nan`` when undefined."""
    if not np.isfinite(v):
        return "nan"
    head = f"{v:+.3f}" if signed else f"{v:.3f}"
    if not np.isfinite(lo):
        return head
    star = "*" if mark and (lo > 0 or hi < 0) else ""
    return f"{head} [{lo:.2f}, {hi:.2f}]{star}"


def pooled_table(table: pd.DataFrame) -> pd.DataFrame:
    """The pooled rows (long-horizon deltas, pooled gap closed) with the estimate and CI as one column."""
    pooled = table[table["scope"] != "task"].copy()
    if pooled.empty:
        return pd.DataFrame(columns=["statistic", "scope", "reference", "recipe", "estimate [95% CI]", "p", "pairs"])
    pooled["estimate [95% CI]"] = [
        _ci_cell(r.estimate, r.ci_low, r.ci_high, signed=r.statistic == "delta", mark=r.statistic == "delta")
        for r in pooled.itertuples()
    ]
    pooled["p"] = pooled["p_value"].map(lambda p: "" if pd.isna(p) else f"{p:.3f}")
    pooled["order"] = pooled["recipe"].map({r: i for i, r in enumerate(recipe_order(pooled["recipe"]))})
    pooled["stat_order"] = pooled["statistic"].map(lambda v: STATISTIC_ORDER.get(v, len(STATISTIC_ORDER)))
    pooled = pooled.sort_values(["stat_order", "statistic", "scope", "reference", "order"], kind="stable")
    cols = ["statistic", "scope", "reference", "recipe", "estimate [95% CI]", "p", "n"]
    return pooled[cols].rename(columns={"n": "pairs"}).reset_index(drop=True)


def delta_wide(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per-task ``delta`` rows against ``reference`` (a seed replicate against the same seed's reference) as one
    column per recipe; rows (task, horizon_days, metric)."""
    rows = table[(table["scope"] == "task") & (table["statistic"] == "delta")]
    rows = rows[[keys.parse_replicate(r)[0] == reference for r in rows["reference"]]].copy()
    if rows.empty:
        return pd.DataFrame(columns=["task", "horizon_days", "metric"])
    rows["cell"] = [_ci_cell(r.estimate, r.ci_low, r.ci_high, signed=True, mark=True) for r in rows.itertuples()]
    index = ["cohort", "task", "horizon_days", "metric"] if "cohort" in rows else ["task", "horizon_days", "metric"]
    wide = rows.pivot_table(index=index, columns="recipe", values="cell", aggfunc="first")
    return wide[recipe_order(wide.columns)].reset_index().rename_axis(columns=None).fillna("")


def latent_wide(table: pd.DataFrame) -> pd.DataFrame:
    """Held-out R^2 per (variable, offset_days), one column per recipe (baseline first, oracles last)."""
    if table.empty:
        return pd.DataFrame(columns=["variable", "offset_days"])
    t = table.copy()
    t["cell"] = [_ci_cell(r.r2, r.ci_low, r.ci_high) for r in t.itertuples()]
    index = ["cohort", "variable", "offset_days"] if "cohort" in t else ["variable", "offset_days"]
    wide = t.pivot_table(index=index, columns="recipe", values="cell", aggfunc="first")
    return wide[recipe_order(wide.columns)].reset_index().rename_axis(columns=None)


def delta_report(table: pd.DataFrame) -> str:
    """The text of ``--format delta``: per cohort, the pooled rows, then per task each recipe minus each
    reference."""
    if table.empty:
        return "(no paired differences: materialize paired_differences)"

    def block(t: pd.DataFrame) -> str:
        parts = [
            "Pooled (paired subject-bootstrap 95 % CIs; * = CI excludes 0; p = two-sided bootstrap p-value):",
            fit_columns(pooled_table(t), ["statistic", "scope", "reference", "recipe"]),
        ]
        for ref in dict.fromkeys(keys.parse_replicate(r)[0] for r in t["reference"] if r):
            wide = delta_wide(t, ref)
            if len(wide):
                parts += ["", f"recipe - {ref} per task and horizon (AUROC or Harrell's C):"]
                parts.append(fit_columns(wide, ["task", "horizon_days", "metric"]))
        return "\n".join(parts)

    return per_cohort(table, block)


def latent_report(table: pd.DataFrame) -> str:
    """The text of ``--format latent``: per cohort, the R^2 per variable and offset, a column per recipe."""
    if table.empty:
        return "(no latent-dynamics rows: synthetic cohorts only; materialize latent_dynamics)"
    head = "Held-out R^2 of a ridge read-out of the hidden state at the node (+0 d) and later, 95 % CIs:"
    return head + "\n" + per_cohort(table, lambda t: fit_columns(latent_wide(t), ["variable", "offset_days"]))


def seeds_report(metrics: pd.DataFrame, paired: pd.DataFrame | None) -> str:
    """The text of ``--format seeds``: the pooled paired rows across seeds, then the headline metric per task."""
    spread = seed_spread(metrics)
    if spread.empty:
        return "(no recipe declares replicate_seeds)"
    parts = []
    if paired is not None and len(paired):
        summary = seed_summary(paired)
        if len(summary):
            parts += ["Pooled paired rows across training seeds (mean, sd with ddof 1, min, max):"]
            text = lambda d: d.to_string(index=False, float_format=lambda v: f"{v:.3f}")  # noqa: E731
            parts += [fit_columns(summary, ["cohort", "recipe", "scope", "statistic", "reference"], render=text), ""]
    parts += ["Headline metric across training seeds, per task and horizon:"]
    parts += [spread.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    return "\n".join(parts)
