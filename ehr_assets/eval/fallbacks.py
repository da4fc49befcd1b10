"""Probe fallbacks made visible: when a probe could not follow its protocol, the metric's ``note`` says how.

A probe keeps going on awkward data rather than failing the run -- a NaN feature becomes 0, a Cox fit that fails is
refit with a stronger penalty, a tuning split with one class leaves the regularization at its default. Each of these
changes what the number means, so :func:`probe_fallbacks` reads them off the probe's inputs and its ``params`` and
:func:`with_fallbacks` writes them into the note of every metric of that probe, tagged ``fallback[<kind>]: ...``.
:func:`count_fallbacks` counts them per recipe and kind from the ``probe_metrics`` table (``benchmark_summary`` shows
the counts). The kinds:

* ``nonfinite_features`` -- NaN/inf feature values set to 0 (:func:`ehr_assets.eval.probes.feature_matrix`);
* ``tuning_undefined`` -- the tuning split could not choose (binary: empty or one class, C = 1; survival: Harrell's C
  undefined on tuning, the middle alpha);
* ``cox_penalty_raised`` -- the Cox fit at the chosen alpha failed and succeeded only with a larger one;
* ``cox_alpha_failed`` -- alphas of the grid whose Cox fit failed even after raising them (not tried on tuning);
* ``logistic_not_converged`` -- the chosen logistic regression stopped at its iteration limit;
* ``pca_components`` -- fewer principal components than asked, because the train split has too few rows.

Nothing here imports torch or Dagster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .probes import Metric, join_notes

__all__ = ["FALLBACK_KINDS", "count_fallbacks", "probe_fallbacks", "with_fallbacks"]

FALLBACK_KINDS = (
    "nonfinite_features",
    "tuning_undefined",
    "cox_penalty_raised",
    "cox_alpha_failed",
    "logistic_not_converged",
    "pca_components",
)
_TAG = re.compile(r"fallback\[(\w+)\]")
N_COMPONENTS = 10  # what the survival probe asks for (ehr_assets.eval.survival.survival_probe)


def _tag(kind: str, text: str) -> str:
    return f"fallback[{kind}]: {text}"


def _survival_fallbacks(params: dict, n_features: int, alpha_grid: Sequence[float] | None) -> list[str]:
    out = []
    a, a_eff = params.get("alpha", np.nan), params.get("alpha_effective", np.nan)
    if np.isfinite(a) and np.isfinite(a_eff) and not np.isclose(a, a_eff):
        out.append(_tag("cox_penalty_raised", f"Cox fit failed at alpha={a:g}; refit with alpha={a_eff:g}"))
    tried = params.get("tune_c_index_by_alpha") or {}
    if alpha_grid is not None and tried:
        failed = [g for g in alpha_grid if float(g) not in tried]
        if failed:
            out.append(_tag("cox_alpha_failed", f"Cox fit failed for alpha {', '.join(f'{g:g}' for g in failed)}"))
    k, n_train = params.get("n_components", 0), params.get("n_train", 0)
    if 0 < k < min(N_COMPONENTS, n_features):  # limited by the train rows, not by the features
        out.append(_tag("pca_components", f"{k} PCA components (train has {n_train} rows), not {N_COMPONENTS}"))
    return out


def probe_fallbacks(
    kind: str,
    params: dict,
    n_nonfinite: int = 0,
    n_features: int = 0,
    alpha_grid: Sequence[float] | None = None,
) -> list[str]:
    """The fallback notes of one fitted probe: from the number of non-finite feature values it was given and the
    ``params`` it returned (:class:`ehr_assets.eval.probes.ProbeResult`). Empty when it followed its protocol."""
    out = []
    if n_nonfinite:
        out.append(_tag("nonfinite_features", f"{n_nonfinite} NaN/inf feature value(s) set to 0"))
    tune_note = params.get("tune_note") or ""
    if tune_note:
        out.append(_tag("tuning_undefined", tune_note))
    if kind == "binary":
        n_iter, max_iter = params.get("n_iter"), params.get("max_iter")
        if n_iter is not None and max_iter is not None and n_iter >= max_iter:
            out.append(_tag("logistic_not_converged", f"stopped at max_iter={max_iter} (C={params.get('C'):g})"))
    else:
        out += _survival_fallbacks(params, n_features, alpha_grid)
    return out


def with_fallbacks(metrics: list[Metric], notes: list[str]) -> list[Metric]:
    """``metrics`` with ``notes`` appended to every metric's note (the probe's fallbacks concern all its metrics)."""
    if not notes:
        return metrics
    for m in metrics:
        m.note = join_notes(m.note, *notes)
    return metrics


def count_fallbacks(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per recipe and fallback kind, the number of probes (task x horizon) whose notes record it: columns
    ``recipe``, ``fallback``, ``probes``; no rows when no probe fell back."""
    cols = ["recipe", "fallback", "probes"]
    if metrics.empty or "note" not in metrics:
        return pd.DataFrame(columns=cols)
    probes = metrics.drop_duplicates(["recipe", "task", "horizon_days"])[["recipe", "task", "horizon_days", "note"]]
    rows = [
        (r.recipe, kind, r.task, r.horizon_days)
        for r in probes.itertuples()
        for kind in sorted(set(_TAG.findall(r.note or "")))
    ]
    if not rows:
        return pd.DataFrame(columns=cols)
    found = pd.DataFrame(rows, columns=["recipe", "fallback", "task", "horizon_days"])
    out = found.groupby(["recipe", "fallback"], sort=True).size().rename("probes").reset_index()
    return out[cols]
