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
* :func:`percentile_ci` -- the percentile interval of replicate values, NaN when too few are defined.

Both metrics are tested against ``sklearn.metrics.roc_auc_score`` and ``sksurv.metrics.concordance_index_censored``
on explicitly resampled rows. numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MIN_VALID_SHARE",
    "percentile_ci",
    "row_weights",
    "subject_draws",
    "weighted_auroc",
    "weighted_harrell",
]

MIN_VALID_SHARE = 0.5  # fewer defined replicates than this share of B: no interval
_PAIR_BLOCK = 2_000_000  # (event rows x rows) cells of Harrell's comparison matrix per block


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
    (``weights`` None: the plain AUROC, ``[1]``).

    With integer weights this is the AUROC of the rows repeated that many times: the weighted share of
    (positive, negative) pairs ranked correctly, ties counted 1/2. NaN where a class has zero weight. One sort, then
    a cumulative sum of the negatives' weights: O(n B)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    W = _as_weights(weights, s.shape[0])
    if s.size == 0:
        return np.full(W.shape[1], np.nan)
    o = np.argsort(s, kind="mergesort")
    s, y, W = s[o], y[o], W[o]
    first = np.r_[True, s[1:] != s[:-1]]  # the first row of each run of tied scores
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], s.size]
    cum_neg = np.zeros((s.size + 1, W.shape[1]))
    np.cumsum(W * ~y[:, None], axis=0, out=cum_neg[1:])
    p = np.flatnonzero(y)
    below = cum_neg[starts[group[p]]]  # negative weight strictly below each positive's score
    tied = cum_neg[ends[group[p]]] - below  # ... and at its score
    Wp = W[p]
    num = np.sum(Wp * (below + 0.5 * tied), axis=0)
    den = Wp.sum(axis=0) * cum_neg[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_harrell(event, time, risk, weights: np.ndarray | None = None, tied_tol: float = 1e-8) -> np.ndarray:
    """Harrell's C of ``risk`` under each column of ``weights`` (``[n, B]``; None: the plain C), ``[B]``.

    scikit-survival's rules: an event row ``i`` is comparable with every row of a later time and with censored rows
    at the same time; the pair is concordant when ``risk_i > risk_j``, tied (1/2) when ``|risk_i - risk_j| <=
    tied_tol``. A pair's weight is ``w_i * w_j``; a row is never compared with itself (nor with its own duplicate,
    which has its time and its event). NaN where no comparable pair has weight. The comparison matrix is built in
    blocks of event rows, so memory stays bounded for large held-out sets."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    W = _as_weights(weights, time.shape[0])
    num = np.zeros(W.shape[1])
    den = np.zeros(W.shape[1])
    ev = np.flatnonzero(event)
    step = max(1, _PAIR_BLOCK // max(time.shape[0], 1))
    for lo in range(0, ev.shape[0], step):
        idx = ev[lo : lo + step]
        ti = time[idx, None]
        comparable = (time[None, :] > ti) | ((time[None, :] == ti) & ~event[None, :])
        diff = risk[idx, None] - risk[None, :]
        concordant = np.where(np.abs(diff) <= tied_tol, 0.5, (diff > 0).astype(np.float64)) * comparable
        Wi = W[idx]
        den += np.sum((comparable.T.astype(np.float64) @ Wi) * W, axis=0)
        num += np.sum((concordant.T @ Wi) * W, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def percentile_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float, int]:
    """(low, high, defined replicates) of the percentile ``1 - alpha`` interval of ``values``; (nan, nan, k) when
    fewer than :data:`MIN_VALID_SHARE` of them are finite."""
    values = np.asarray(values, dtype=np.float64)
    ok = values[np.isfinite(values)]
    if values.size == 0 or ok.size < MIN_VALID_SHARE * values.size:
        return float("nan"), float("nan"), int(ok.size)
    lo, hi = np.percentile(ok, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), int(ok.size)
