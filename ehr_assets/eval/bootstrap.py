"""The subject bootstrap of every probe metric at once: all resamples as one weight matrix, every metric vectorized
over it.

A resample of :func:`ehr_assets.eval.metrics.bootstrap_ci` draws held-out subjects with replacement and keeps every
row of a drawn subject as many times as the subject was drawn. The same resample is a *weight* per row (that
multiplicity), so resample ``b`` is row ``b`` of a matrix ``W`` [resamples, rows] (:func:`resample_weights`, the very
draws :func:`~ehr_assets.eval.metrics.bootstrap_ci` makes with the same seed). A metric of the duplicated rows is the
same metric with those weights, and each metric below computes it for all resamples together: the scores are sorted
once, the per-resample parts are cumulative sums along that order (AUROC, AUPRC, Harrell's C, time-dependent AUC) or
one matrix product (Brier, integrated Brier score). :func:`bootstrap_cis` draws the weights once per chunk of
resamples and evaluates every metric of a probe on them, so a probe's CIs cost one pass instead of 200 metric calls
per metric; the values equal the per-resample replicas' (tested to 1e-9) and so do the CIs.

Undefined resamples (one class, no comparable pair, evaluation times outside the drawn rows' follow-up) are NaN and
skipped, and fewer than half valid resamples give a NaN interval, as :func:`~ehr_assets.eval.metrics.bootstrap_ci`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .metrics import group_codes

__all__ = [
    "auprc_w",
    "auroc_w",
    "bootstrap_cis",
    "brier_w",
    "harrell_w",
    "ibs_w",
    "resample_weights",
    "td_auc_w",
]

CHUNK_CELLS = 4_000_000  # resamples x rows per chunk: bounds the memory of a weight matrix (32 MB as float64)


def resample_weights(groups, seed: int, n_bootstrap: int, chunk: int | None = None) -> Iterator[np.ndarray]:
    """Chunks of the weight matrix: ``W[b, i]`` = how many times row ``i``'s subject is drawn in resample ``b`` (the
    draws of :func:`ehr_assets.eval.metrics.bootstrap_ci` with this seed, in order)."""
    inv, counts = group_codes(groups)
    n_groups, n_rows = counts.shape[0], inv.shape[0]
    rng = np.random.default_rng(seed)
    step = chunk or max(1, CHUNK_CELLS // max(n_rows, 1))
    for start in range(0, int(n_bootstrap), step):
        b = min(step, int(n_bootstrap) - start)
        drawn = np.empty((b, n_groups), dtype=np.float64)
        for j in range(b):
            drawn[j] = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        yield drawn[:, inv]


def bootstrap_cis(
    metrics: dict[str, Callable[[np.ndarray], np.ndarray]],
    groups,
    *,
    seed: int,
    n_bootstrap: int,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Percentile ``1 - alpha`` CI of each metric (``fn(W) -> value per resample``) under one subject bootstrap:
    every metric sees the same resamples. NaN resamples are skipped; fewer than half valid gives ``(nan, nan)``."""
    nan = (float("nan"), float("nan"))
    if n_bootstrap <= 0 or len(np.asarray(groups)) == 0:
        return {name: nan for name in metrics}
    values: dict[str, list[np.ndarray]] = {name: [] for name in metrics}
    with np.errstate(divide="ignore", invalid="ignore"):
        for W in resample_weights(groups, seed, n_bootstrap):
            for name, fn in metrics.items():
                values[name].append(np.asarray(fn(W), dtype=np.float64))
    out = {}
    for name, parts in values.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        if len(v) < 0.5 * n_bootstrap:
            out[name] = nan
        else:
            lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
            out[name] = (float(lo), float(hi))
    return out


# ================================================================================================== binary
def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Start index of each run of equal scores in a sorted array."""
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def auroc_w(y, p, W: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUROC per row of ``W`` (ties count 1/2): :func:`~ehr_assets.eval.metrics.auroc_fast`
    of the duplicated rows."""
    y = np.asarray(y).astype(bool)
    o = np.argsort(np.asarray(p, dtype=np.float64), kind="mergesort")
    starts = _tie_groups(np.asarray(p, dtype=np.float64)[o])
    Wo, yo = W[:, o], y[o]
    pos = np.add.reduceat(Wo * yo, starts, axis=1)
    neg = np.add.reduceat(Wo * ~yo, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    den = pos.sum(axis=1) * neg.sum(axis=1)
    return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def auprc_w(y, p, W: np.ndarray) -> np.ndarray:
    """Weighted step-wise average precision per row of ``W``: :func:`~ehr_assets.eval.metrics.auprc_fast` of the
    duplicated rows (NaN with a single class)."""
    y = np.asarray(y).astype(bool)
    o = np.argsort(-np.asarray(p, dtype=np.float64), kind="mergesort")
    starts = _tie_groups(np.asarray(p, dtype=np.float64)[o])
    Wo = W[:, o]
    tps = np.cumsum(np.add.reduceat(Wo * y[o], starts, axis=1), axis=1)
    rows = np.cumsum(np.add.reduceat(Wo, starts, axis=1), axis=1)
    total_pos, total = tps[:, -1:], rows[:, -1:]
    recall_step = np.diff(np.c_[np.zeros((len(W), 1)), tps], axis=1) / np.where(total_pos > 0, total_pos, 1)
    precision = tps / np.where(rows > 0, rows, 1)
    ap = np.where(recall_step > 0, recall_step * precision, 0.0).sum(axis=1)
    single = (total_pos[:, 0] <= 0) | (total_pos[:, 0] >= total[:, 0])
    return np.where(single, np.nan, ap)


def brier_w(y, p, W: np.ndarray) -> np.ndarray:
    """Weighted mean squared error of ``p`` against ``y`` per row of ``W``."""
    sq = np.square(np.asarray(y, dtype=np.float64) - np.asarray(p, dtype=np.float64))
    total = W.sum(axis=1)
    return np.where(total > 0, (W @ sq) / np.where(total > 0, total, 1), np.nan)


# ================================================================================================== survival
def _prefix_weight(vals: np.ndarray, L: np.ndarray, x: np.ndarray, inclusive: bool, W: np.ndarray) -> np.ndarray:
    """For each query q and resample b: the weight of ``{p < L[q] : vals[p] < x[q]}`` (``<=`` if inclusive), the
    weighted version of the dominance count behind :func:`ehr_assets.eval.metrics.harrell_fast` (the same aligned
    blocks; each level sorts its keys once and sums the weights of every resample along them)."""
    n = vals.shape[0]
    sv = np.sort(vals)
    r = np.searchsorted(sv, vals, side="left").astype(np.int64)
    t = np.searchsorted(sv, x, side="right" if inclusive else "left").astype(np.int64)
    pos = np.arange(n, dtype=np.int64)
    L = np.asarray(L, dtype=np.int64)
    out = np.zeros((W.shape[0], L.shape[0]))
    for k in range(max(int(n).bit_length(), 1)):
        sel = ((L >> k) & 1).astype(bool)
        if not sel.any():
            continue
        raw = (pos >> k) * np.int64(n) + r
        perm = np.argsort(raw, kind="stable")
        keys = raw[perm]
        cum = np.c_[np.zeros((W.shape[0], 1)), np.cumsum(W[:, perm], axis=1)]
        bid = ((L[sel] >> (k + 1)) << 1) * np.int64(n)
        hi = np.searchsorted(keys, bid + t[sel], side="left")
        lo = np.searchsorted(keys, bid, side="left")
        out[:, sel] += cum[:, hi] - cum[:, lo]
    return out


def harrell_w(event, time, risk, W: np.ndarray, tied_tol: float = 1e-8) -> np.ndarray:
    """Weighted Harrell's C per row of ``W``: :func:`~ehr_assets.eval.metrics.harrell_fast` of the duplicated rows
    (an event is comparable with every later time and with censored rows at its time; risk ties count 1/2)."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    if event.shape[0] < 2 or not event.any() or not np.isfinite(risk).all():
        return np.full(W.shape[0], np.nan)
    order = np.lexsort((event.astype(np.int8), -time))
    vals, Wo = risk[order], W[:, order]
    te, re = time[event], risk[event]
    n_later = time.shape[0] - np.searchsorted(np.sort(time), te, side="right")
    ct = np.sort(time[~event])
    L = n_later + np.searchsorted(ct, te, side="right") - np.searchsorted(ct, te, side="left")
    we = W[:, event]
    den = (we * np.c_[np.zeros((W.shape[0], 1)), np.cumsum(Wo, axis=1)][:, L]).sum(axis=1)
    n_lt = _prefix_weight(vals, L, re - tied_tol, False, Wo)
    n_le = _prefix_weight(vals, L, re + tied_tol, True, Wo)
    num = (we * (n_lt + 0.5 * (n_le - n_lt))).sum(axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _follow_up_ok(time: np.ndarray, times: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Per resample: every evaluation time lies in the follow-up [min, max) of the drawn rows (sksurv's rule)."""
    drawn = W > 0
    t_max = np.where(drawn, time[None, :], -np.inf).max(axis=1)
    t_min = np.where(drawn, time[None, :], np.inf).min(axis=1)
    return (times.max() < t_max) & (times.min() >= t_min)


def td_auc_w(event, time, risk, ipcw, times, W: np.ndarray, tied_tol: float = 1e-8) -> np.ndarray:
    """Weighted mean cumulative/dynamic AUC at ``times`` per row of ``W``, with the IPCW weights precomputed:
    :func:`~ehr_assets.eval.metrics.td_auc_fast` of the duplicated rows."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    o = np.argsort(-risk, kind="stable")
    keep = np.r_[~(np.abs(np.diff(risk[o])) <= tied_tol), True]  # the last threshold of a run of tied scores
    t, e, w, Wo = time[o], event[o], np.asarray(ipcw, dtype=np.float64)[o], W[:, o]
    zero = np.zeros((W.shape[0], 1))
    aucs = np.empty((W.shape[0], times.size))
    for j, tj in enumerate(times):  # one evaluation time at a time: memory stays [resamples, rows]
        tp = np.cumsum(Wo * (((t <= tj) & e) * w), axis=1)
        fp = np.cumsum(Wo * (t > tj), axis=1)
        tp, fp = tp / tp[:, -1:], fp / fp[:, -1:]
        aucs[:, j] = np.trapezoid(np.c_[zero, tp[:, keep]], np.c_[zero, fp[:, keep]], axis=1)
    finite = np.isfinite(aucs)
    n_ok = finite.sum(axis=1)
    mean = np.where(n_ok > 0, np.where(finite, aucs, 0).sum(axis=1) / np.maximum(n_ok, 1), np.nan)
    return np.where(_follow_up_ok(time, times, W), mean, np.nan)


def ibs_w(event, time, surv, g_rows, g_times, times, W: np.ndarray) -> np.ndarray:
    """Weighted integrated Brier score per row of ``W`` with the censoring survival precomputed at every row's time
    and at ``times``: :func:`~ehr_assets.eval.metrics.ibs_fast` of the duplicated rows."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=np.float64)
    is_case = ((time[:, None] <= times[None, :]) & event[:, None]).astype(float)
    is_control = (time[:, None] > times[None, :]).astype(float)
    per_row = np.square(surv) * is_case / g_rows[:, None] + np.square(1.0 - surv) * is_control / g_times[None, :]
    total = W.sum(axis=1, keepdims=True)
    bs = (W @ per_row) / np.where(total > 0, total, 1)
    v = np.trapezoid(bs, times, axis=1) / (times[-1] - times[0])
    return np.where(_follow_up_ok(time, times, W), v, np.nan)
