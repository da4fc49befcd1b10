"""Scoring functions of the probes and the subject-level bootstrap that puts a confidence interval on each.

* :func:`bootstrap_ci` -- resamples held-out *subjects* with replacement (a subject brings all its rows along) and
  reports the percentile interval; the same seed draws the same subjects, so metrics computed with one seed are
  paired.
* Binary: :func:`auroc`, :func:`auprc`, :func:`brier` (scikit-learn; point estimates use these) and their numpy
  replicas :func:`auroc_fast`, :func:`auprc_fast`, :func:`brier_fast` (the bootstrap uses these).
* Survival: :func:`harrell` (Harrell's C), :func:`td_auc` (mean cumulative/dynamic AUC), :func:`ibs` (integrated
  Brier score), all scikit-survival; :func:`harrell_fast`, :func:`td_auc_fast`, :func:`ibs_fast` give the same values
  without refitting or revalidating on every bootstrap resample.

Why two versions of each metric: a 200-resample bootstrap calls a metric 200 times, and scikit-learn's per-call input
validation (~2 ms) or scikit-survival's per-call Kaplan-Meier refit dominated the probe's run time. The fast replicas
are tested against the reference ones to 1e-12. A metric that is undefined on its input (one class, no comparable
pair) returns NaN; the bootstrap skips such resamples. numpy, scipy, scikit-learn and scikit-survival only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

__all__ = [
    "auprc",
    "auprc_fast",
    "auroc",
    "auroc_fast",
    "bootstrap_ci",
    "brier",
    "brier_fast",
    "group_codes",
    "harrell",
    "harrell_fast",
    "ibs",
    "ibs_fast",
    "td_auc",
    "td_auc_fast",
    "to_structured",
]


# ================================================================================================== bootstrap
def group_codes(groups) -> tuple[np.ndarray, np.ndarray]:
    """(group of every row, numbered by the sorted distinct groups; rows per group): the unit the bootstrap draws."""
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    inv = inv.ravel()
    return inv, np.bincount(inv)


def _group_index(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, counts): the rows of group g are ``order[starts[g] : starts[g] + counts[g]]``."""
    inv, _ = group_codes(groups)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv)
    starts = np.cumsum(counts) - counts
    return order, starts, counts


def _resample_rows(rng: np.random.Generator, order, starts, counts) -> np.ndarray:
    """Row indices of one subject-level resample: draw len(counts) subjects with replacement, keep all their rows."""
    g = rng.integers(0, counts.shape[0], counts.shape[0])
    lens = counts[g]
    total = int(lens.sum())
    first = np.cumsum(lens) - lens  # where each drawn subject's block starts in the output
    return order[np.repeat(starts[g] - first, lens) + np.arange(total)]


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    groups: np.ndarray,
    seed: int,
    n_bootstrap: int,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile ``1 - alpha`` CI of ``metric_fn(*arrays)`` under a subject-level bootstrap.

    Each resample draws as many subjects as there are in ``groups``, with replacement, and keeps *all* rows of every
    drawn subject (a subject drawn twice contributes its rows twice). ``arrays`` are indexed along their first axis.
    Resamples where the metric is undefined (it raises, or returns a non-finite value, e.g. one class only) are
    skipped; if fewer than half of the ``n_bootstrap`` resamples are valid the CI is ``(nan, nan)``.
    The same ``seed`` gives the same subject draws, so metrics computed with one seed are paired.
    """
    groups = np.asarray(groups)
    arrays = tuple(np.asarray(a) for a in arrays)
    n = groups.shape[0]
    if n_bootstrap <= 0 or n == 0 or any(a.shape[0] != n for a in arrays):
        return float("nan"), float("nan")
    order, starts, counts = _group_index(groups)
    rng = np.random.default_rng(seed)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(int(n_bootstrap)):
            idx = _resample_rows(rng, order, starts, counts)
            try:
                v = float(metric_fn(*(a[idx] for a in arrays)))
            except (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError, IndexError):
                continue
            if np.isfinite(v):
                values.append(v)
    if len(values) < 0.5 * n_bootstrap:
        return float("nan"), float("nan")
    lo, hi = np.percentile(np.asarray(values), [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


# ================================================================================================== binary
def auroc(y, p) -> float:
    """``roc_auc_score``; NaN when ``y`` is empty or has a single class."""
    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, p))


def auprc(y, p) -> float:
    """``average_precision_score``; NaN when ``y`` is empty or has a single class."""
    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(average_precision_score(y, p))


def brier(y, p) -> float:
    """``brier_score_loss`` with positive label 1; NaN when ``y`` is empty."""
    if len(y) == 0:
        return float("nan")
    return float(brier_score_loss(np.asarray(y), np.asarray(p), pos_label=1))


# Numpy replicas of the three binary metrics for the bootstrap: the same values as scikit-learn's (tested), without
# its per-call input validation, which costs ~2 ms a call and dominated a 200-resample bootstrap.
def auroc_fast(y, p) -> float:
    """Mann-Whitney U / (n1 n0) with average ranks for ties == ``roc_auc_score``."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(np.asarray(p, dtype=np.float64))
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auprc_fast(y, p) -> float:
    """Step-wise average precision, sum over distinct thresholds of (R_k - R_k-1) P_k == ``average_precision_score``."""
    y = np.asarray(y).astype(np.float64)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ys.size - 1]  # last row of each distinct score
    tps = np.cumsum(ys)[last]
    precision = tps / (last + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier_fast(y, p) -> float:
    """Mean squared error of ``p`` against ``y`` == ``brier_score_loss``; NaN when ``y`` is empty."""
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    return float(np.mean(np.square(y - np.asarray(p, dtype=np.float64))))


# ================================================================================================== survival
def to_structured(event, time) -> np.ndarray:
    """scikit-survival's outcome array: a structured array with fields ``event`` (bool) and ``time`` (float64)."""
    out = np.empty(len(time), dtype=[("event", bool), ("time", np.float64)])
    out["event"], out["time"] = event, time
    return out


def harrell(event, time, risk) -> float:
    """Harrell's C exactly as ``sksurv.metrics.concordance_index_censored`` (point estimates use this)."""
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event, dtype=bool)
    if event.sum() < 1 or len(event) < 2:
        return float("nan")
    return float(concordance_index_censored(event, np.asarray(time, float), np.asarray(risk, float))[0])


def _prefix_count(vals: np.ndarray, L: np.ndarray, x: np.ndarray, inclusive: bool) -> np.ndarray:
    """For each query q: #{p < L[q] : vals[p] < x[q]} (``<=`` if inclusive). Offline 2-D dominance count in
    O(n log^2 n), all in numpy: the prefix [0, L) is the union of aligned blocks of size 2^k, one per set bit k of L;
    each level sorts (block id, value rank) keys once and answers every query with two ``searchsorted``."""
    n = vals.shape[0]
    sv = np.sort(vals)
    r = np.searchsorted(sv, vals, side="left").astype(np.int64)  # vals[p] < x  <=>  r[p] < t (see below)
    t = np.searchsorted(sv, x, side="right" if inclusive else "left").astype(np.int64)
    pos = np.arange(n, dtype=np.int64)
    L = np.asarray(L, dtype=np.int64)
    n64 = np.int64(n)
    out = np.zeros(L.shape[0], dtype=np.int64)
    for k in range(max(int(n).bit_length(), 1)):
        sel = ((L >> k) & 1).astype(bool)
        if not sel.any():
            continue
        keys = np.sort((pos >> k) * n64 + r)
        bid = ((L[sel] >> (k + 1)) << 1) * n64  # block [(L >> (k+1)) << (k+1), + 2^k) has id (L >> (k+1)) * 2
        out[sel] += np.searchsorted(keys, bid + t[sel], side="left") - np.searchsorted(keys, bid, side="left")
    return out


def harrell_fast(event, time, risk, tied_tol: float = 1e-8) -> float:
    """Same value as :func:`harrell` (sksurv semantics: an event is comparable with every later time and with
    censored rows at the same time; risk ties within ``tied_tol`` count 1/2) in O(n log^2 n) instead of
    O(n * events) Python -- used for the bootstrap and the tuning split."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    if event.shape[0] < 2 or not event.any() or not np.isfinite(risk).all():
        return float("nan")
    # order: time descending, censored before events at the same time -> every event's comparable set is a prefix
    order = np.lexsort((event.astype(np.int8), -time))
    vals = risk[order]
    te, re = time[event], risk[event]
    n_later = time.shape[0] - np.searchsorted(np.sort(time), te, side="right")
    ct = np.sort(time[~event])
    n_cens_tied = np.searchsorted(ct, te, side="right") - np.searchsorted(ct, te, side="left")
    L = n_later + n_cens_tied
    den = float(L.sum())
    if den == 0:
        return float("nan")
    n_lt = _prefix_count(vals, L, re - tied_tol, inclusive=False)
    n_le = _prefix_count(vals, L, re + tied_tol, inclusive=True)
    return float((n_lt.sum() + 0.5 * (n_le - n_lt).sum()) / den)


def _check_times(time: np.ndarray, times: np.ndarray) -> None:
    """sksurv's requirement: every evaluation time within the follow-up [min; max) of the scored rows."""
    if times.max() >= time.max() or times.min() < time.min():
        raise ValueError("evaluation times outside the follow-up of the scored rows")


def td_auc(y_train, event, time, risk, times) -> float:
    """Mean over ``times`` of ``sksurv.metrics.cumulative_dynamic_auc`` (point estimates use this)."""
    from sksurv.metrics import cumulative_dynamic_auc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aucs, _ = cumulative_dynamic_auc(y_train, to_structured(event, time), np.asarray(risk, float), times)
    aucs = np.asarray(aucs, dtype=float)
    return float(np.mean(aucs[np.isfinite(aucs)])) if np.isfinite(aucs).any() else float("nan")


def td_auc_fast(event, time, risk, ipcw, times, tied_tol: float = 1e-8) -> float:
    """:func:`td_auc` with the inverse-probability-of-censoring weights precomputed (``ipcw[i] = event_i /
    G(T_i)``, G the train censoring KM) instead of refitting the KM for every bootstrap resample."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    _check_times(time, times)
    o = np.argsort(-risk, kind="stable")
    est, t, e, w = risk[o], time[o][:, None], event[o][:, None], ipcw[o][:, None]
    is_case = (t <= times[None, :]) & e
    is_control = t > times[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        tp = np.cumsum(is_case * w, axis=0) / np.sum(is_case * w, axis=0)
        fp = np.cumsum(is_control, axis=0) / is_control.sum(axis=0)
    tied_next = np.abs(np.diff(est)) <= tied_tol  # of a run of tied scores keep only the last threshold
    keep = np.r_[~tied_next, True]
    tp = np.vstack([np.zeros((1, times.size)), tp[keep]])
    fp = np.vstack([np.zeros((1, times.size)), fp[keep]])
    aucs = np.trapezoid(tp, fp, axis=0)
    return float(np.mean(aucs[np.isfinite(aucs)])) if np.isfinite(aucs).any() else float("nan")


def ibs(y_train, event, time, surv, times) -> float:
    """``sksurv.metrics.integrated_brier_score`` (point estimates use this)."""
    from sksurv.metrics import integrated_brier_score

    return float(integrated_brier_score(y_train, to_structured(event, time), np.asarray(surv, float), times))


def ibs_fast(event, time, surv, g_rows, g_times, times) -> float:
    """:func:`ibs` with the censoring survival precomputed at every row's time (``g_rows``) and at ``times``."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=np.float64)
    _check_times(time, times)
    is_case = ((time[:, None] <= times[None, :]) & event[:, None]).astype(float)
    is_control = (time[:, None] > times[None, :]).astype(float)
    bs = np.mean(
        np.square(surv) * is_case / g_rows[:, None] + np.square(1.0 - surv) * is_control / g_times[None, :], axis=0
    )
    return float(np.trapezoid(bs, times) / (times[-1] - times[0]))
