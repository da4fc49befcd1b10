"""Subject-level bootstrap as weights: one draw of the held-out subjects shared by every recipe, task and horizon.

A subject-level bootstrap resample draws as many subjects as there are, with replacement, and keeps all rows of
each drawn subject. That is the same as giving every row the weight "how many times its subject was drawn": a
metric computed with those integer weights equals the metric on the resampled rows (duplicates included). Drawing
the weights once (:func:`subject_draws`) and applying them to every recipe's predictions makes the comparison
*paired*: in replicate ``b`` every recipe is scored on exactly the same patients, so the spread of a difference
reflects only how the recipes disagree, not which patients happened to be drawn. The same draw is shared by every
task and horizon of a cohort, so differences can be pooled across tasks within a replicate.

* :func:`subject_draws` -- ``[S, B]`` multinomial counts of the ``S`` held-out subjects, from a seed, and
  :func:`row_weights` -- the ``[n, B]`` weights of ``n`` rows (each row takes its subject's count);
* :func:`weighted_auroc` -- AUROC under each row of weights (Mann-Whitney with ties counted 1/2), ``[B]`` at once;
* :func:`weighted_harrell` -- Harrell's C under each row of weights (scikit-survival's comparability rules);
* :func:`percentile_ci` -- the percentile interval of replicate values, NaN when too few are defined, and
  :func:`bootstrap_p_value` -- the two-sided bootstrap p-value of "the statistic is 0".

The two metrics are the probes' own weighted ones (:mod:`ehr_assets.eval.bootstrap`, weights ``[B, n]`` there), so a
paired difference and a probe's CI come from one implementation; both are tested against
``sklearn.metrics.roc_auc_score`` and ``sksurv.metrics.concordance_index_censored`` on explicitly resampled rows.
numpy only.
"""

from __future__ import annotations

import numpy as np

from .bootstrap import auroc_w, harrell_w

__all__ = [
    "MIN_VALID_SHARE",
    "bootstrap_p_value",
    "percentile_ci",
    "row_weights",
    "subject_draws",
    "weighted_auroc",
    "weighted_harrell",
]

MIN_VALID_SHARE = 0.5  # fewer defined replicates than this share of B: no interval


def subject_draws(subjects, n_bootstrap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique subjects, counts ``[S, n_bootstrap]``): replicate ``b`` draws subject ``s`` ``counts[s, b]``
    times (a multinomial of ``S`` draws with equal probabilities). The same seed and subjects give the same draws."""
    uniq = np.unique(np.asarray(subjects))
    S = uniq.shape[0]
    if S == 0 or n_bootstrap <= 0:
        return uniq, np.zeros((S, max(int(n_bootstrap), 0)), dtype=np.float64)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(S, np.full(S, 1.0 / S), size=int(n_bootstrap))
    return uniq, np.ascontiguousarray(counts.T, dtype=np.float64)


def row_weights(draws: tuple[np.ndarray, np.ndarray], subjects) -> np.ndarray:
    """``[n, B]``: each row's weight in each replicate, its subject's draw count (rows of a subject move together)."""
    uniq, counts = draws
    subjects = np.asarray(subjects)
    pos = np.searchsorted(uniq, subjects)
    inside = pos < uniq.size
    if not (inside.all() and (uniq[pos] == subjects).all()):
        raise ValueError("row_weights: a row's subject is not among the drawn subjects")
    return counts[pos]


def _as_weights(weights, n: int) -> np.ndarray:
    """``weights`` as a float64 ``[n, B]`` array; None means one replicate with every weight 1 (the point value)."""
    if weights is None:
        return np.ones((n, 1))
    W = np.asarray(weights, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != n:
        raise ValueError(f"weights must be [rows={n}, replicates], got shape {W.shape}")
    return W


def weighted_auroc(y, score, weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC of ``score`` against binary ``y`` under each column of ``weights`` (``[n, B]``, non-negative), ``[B]``
    (``weights`` None: the plain AUROC, ``[1]``). With integer weights this is the AUROC of the rows repeated that
    many times (ties count 1/2); NaN where a class has zero weight. The computation is the probes' own
    (:func:`ehr_assets.eval.bootstrap.auroc_w`), taken column-wise."""
    s = np.asarray(score, dtype=np.float64)
    W = _as_weights(weights, s.shape[0])
    if s.size == 0:
        return np.full(W.shape[1], np.nan)
    return auroc_w(y, s, np.ascontiguousarray(W.T))


def weighted_harrell(event, time, risk, weights: np.ndarray | None = None, tied_tol: float = 1e-8) -> np.ndarray:
    """Harrell's C of ``risk`` under each column of ``weights`` (``[n, B]``; None: the plain C), ``[B]``:
    scikit-survival's rules (an event row is comparable with every later time and with censored rows at its time;
    risk ties count 1/2), each pair weighted ``w_i * w_j``; NaN where no comparable pair has weight. The computation
    is the probes' own (:func:`ehr_assets.eval.bootstrap.harrell_w`), taken column-wise."""
    time = np.asarray(time, dtype=np.float64)
    W = _as_weights(weights, time.shape[0])
    return harrell_w(event, time, risk, np.ascontiguousarray(W.T), tied_tol=tied_tol)


def percentile_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float, int]:
    """(low, high, defined replicates) of the percentile ``1 - alpha`` interval of ``values``; (nan, nan, k) when
    fewer than :data:`MIN_VALID_SHARE` of them are finite."""
    values = np.asarray(values, dtype=np.float64)
    ok = values[np.isfinite(values)]
    if values.size == 0 or ok.size < MIN_VALID_SHARE * values.size:
        return float("nan"), float("nan"), int(ok.size)
    lo, hi = np.percentile(ok, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), int(ok.size)


def bootstrap_p_value(reps: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'the statistic is 0': twice the smaller share of replicates on either side
    (at best ``1 / B``); NaN when no replicate is defined."""
    ok = reps[np.isfinite(reps)]
    if ok.size == 0:
        return float("nan")
    return float(min(1.0, 2.0 * min(np.mean(ok <= 0), np.mean(ok >= 0))))
