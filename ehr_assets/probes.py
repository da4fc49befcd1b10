"""Linear probes on frozen features, scored with subject-level bootstrap CIs, plus the count-feature baseline.

Protocol (EHRSHOT / INSPECT / MOTOR conventions): one feature row per decision node; the probe is fit on the
``train`` split, its regularization strength is chosen on the ``tuning`` split, and it is scored once on the
``held_out`` split. Confidence intervals resample held-out *subjects* with replacement (a subject brings all its
rows along) and report the percentile 95 % interval.

* :func:`binary_probe` -- StandardScaler -> L2 logistic regression; C chosen by tuning AUROC;
  metrics ``auroc``, ``auprc``, ``brier``.
* :func:`survival_probe` -- StandardScaler -> PCA -> ridge Cox PH (scikit-survival); alpha chosen by tuning Harrell's
  C; metrics ``c_index`` (Harrell), ``td_auc`` (mean cumulative/dynamic AUC at the 25/50/75th percentiles of held-out
  event times) and ``ibs`` (integrated Brier score over the same range).
* :func:`select_count_vocab` / :func:`count_features` -- the count baseline: log1p counts of the most frequent codes
  observed up to (and including) the prediction time, plus age and log1p(total events).

Nothing here raises on degenerate data (single class, no events, empty split): the affected metrics are NaN and
their ``note`` says why. This module deliberately imports neither torch nor dagster.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

__all__ = [
    "Metric",
    "ProbeResult",
    "Split",
    "binary_probe",
    "survival_probe",
    "bootstrap_ci",
    "select_count_vocab",
    "count_features",
    "BINARY_METRICS",
    "SURVIVAL_METRICS",
]

BINARY_METRICS = ("auroc", "auprc", "brier")
SURVIVAL_METRICS = ("c_index", "td_auc", "ibs")
MIN_SURVIVAL_TIME = 1e-3  # days; a time of 0 (event at the decision node) is clipped to this
DAYS_PER_YEAR = 365.25
_US_PER_YEAR = DAYS_PER_YEAR * 86400e6
EXCLUDED_VOCAB_CODES = frozenset({"MEDS_BIRTH", "MEDS_DEATH"})


# ================================================================================================== data classes
@dataclass
class Metric:
    metric: str  # 'auroc', 'auprc', 'brier' for binary; 'c_index', 'td_auc', 'ibs' for survival
    value: float  # NaN when not computable (then `note` says why)
    ci_low: float
    ci_high: float
    n: int  # held_out rows scored
    n_pos: int  # positives (binary) or observed events (survival) among them
    note: str = ""


@dataclass
class ProbeResult:
    metrics: list[Metric]
    test_scores: np.ndarray  # binary: P(y=1) per held_out row; survival: risk score per row (NaN if not fitted)
    params: dict = field(default_factory=dict)  # chosen hyper-parameters


@dataclass
class Split:
    X: np.ndarray  # float features [n, d]
    groups: np.ndarray  # subject ids [n] (bootstrap unit)
    y: np.ndarray | None = None  # binary labels (bool / 0-1)
    time: np.ndarray | None = None  # survival: days to event or censoring (> 0)
    event: np.ndarray | None = None  # survival: event observed

    def __len__(self) -> int:
        return int(np.asarray(self.groups).shape[0])


# ================================================================================================== bootstrap
def _group_index(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, counts): the rows of group g are ``order[starts[g] : starts[g] + counts[g]]``."""
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    inv = inv.ravel()
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


# ================================================================================================== helpers
def _features(X, n: int) -> np.ndarray:
    """2-D float64 features; non-finite entries become 0 (a probe must not crash on a stray NaN)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(n, -1) if n else X.reshape(0, 0)
    if X.shape[0] != n:
        raise ValueError(f"features have {X.shape[0]} rows but the split has {n} subject ids")
    if not np.isfinite(X).all():
        X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
    return X


def _nan_metrics(names: Sequence[str], n: int, n_pos: int, note: str) -> list[Metric]:
    return [Metric(m, float("nan"), float("nan"), float("nan"), int(n), int(n_pos), note) for m in names]


def _auroc(y, p) -> float:
    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, p))


def _auprc(y, p) -> float:
    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(average_precision_score(y, p))


def _brier(y, p) -> float:
    if len(y) == 0:
        return float("nan")
    return float(brier_score_loss(np.asarray(y), np.asarray(p), pos_label=1))


# Numpy replicas of the three binary metrics for the bootstrap: the same values as scikit-learn's (tested), without
# its per-call input validation, which costs ~2 ms a call and dominated a 200-resample bootstrap.
def _auroc_fast(y, p) -> float:
    """Mann-Whitney U / (n1 n0) with average ranks for ties == ``roc_auc_score``."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(np.asarray(p, dtype=np.float64))
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _auprc_fast(y, p) -> float:
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


def _brier_fast(y, p) -> float:
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    return float(np.mean(np.square(y - np.asarray(p, dtype=np.float64))))


# ================================================================================================== binary
def binary_probe(
    train: Split,
    tune: Split,
    test: Split,
    *,
    seed: int = 0,
    n_bootstrap: int = 200,
    c_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100),
) -> ProbeResult:
    """Logistic-regression probe. StandardScaler and model are fit on ``train``; C maximizes AUROC on ``tune``
    (C=1 when ``tune`` is empty or has one class); ``test`` is scored with subject-bootstrap CIs.

    A ``train`` or ``test`` split with a single class (or no rows) gives NaN metrics with a ``note``, never an error;
    ``test_scores`` are still filled when a model could be fit.
    """
    n_te = len(test)
    y_te = np.asarray(test.y, dtype=np.int64).ravel() if test.y is not None else np.zeros(0, np.int64)
    n_pos = int(y_te.sum()) if n_te else 0
    scores = np.full(n_te, np.nan)
    params: dict = {"C": float("nan"), "tune_auroc": float("nan"), "n_train": len(train), "n_tune": len(tune)}

    y_tr = np.asarray(train.y, dtype=np.int64).ravel() if train.y is not None else np.zeros(0, np.int64)
    if len(train) == 0 or np.unique(y_tr).size < 2:
        note = "train split is empty" if len(train) == 0 else "train split has a single class; probe not fit"
        return ProbeResult(_nan_metrics(BINARY_METRICS, n_te, n_pos, note), scores, params)

    X_tr = _features(train.X, len(train))
    scaler = StandardScaler().fit(X_tr)
    Z_tr = scaler.transform(X_tr)

    def fit(C: float) -> LogisticRegression:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=float(C), max_iter=5000).fit(Z_tr, y_tr)

    y_tu = np.asarray(tune.y, dtype=np.int64).ravel() if (tune.y is not None and len(tune)) else np.zeros(0, np.int64)
    best_c, best_auc, tune_scores = 1.0, float("nan"), {}
    if y_tu.size and np.unique(y_tu).size == 2:
        Z_tu = scaler.transform(_features(tune.X, len(tune)))
        models = {}
        for C in c_grid:
            models[C] = fit(C)
            tune_scores[float(C)] = _auroc(y_tu, models[C].predict_proba(Z_tu)[:, 1])
        # ties (and NaNs) resolve to the first -- most regularized -- C of the grid
        finite = {c: a for c, a in tune_scores.items() if np.isfinite(a)}
        if finite:
            best_c = max(finite, key=lambda c: (finite[c], -list(finite).index(c)))
            best_auc = finite[best_c]
        model = models[best_c] if best_c in models else fit(best_c)
        params["tune_note"] = ""
    else:
        model = fit(best_c)
        params["tune_note"] = "tuning split empty or single-class; C=1"
    params.update(C=float(best_c), tune_auroc=float(best_auc), tune_auroc_by_C=tune_scores)

    if n_te == 0:
        return ProbeResult(_nan_metrics(BINARY_METRICS, 0, 0, "held_out split is empty"), scores, params)
    scores = model.predict_proba(scaler.transform(_features(test.X, n_te)))[:, 1].astype(np.float64)
    if np.unique(y_te).size < 2:
        note = f"held_out split has a single class (n_pos={n_pos} of {n_te}); metrics undefined"
        return ProbeResult(_nan_metrics(BINARY_METRICS, n_te, n_pos, note), scores, params)

    metrics = []
    groups = np.asarray(test.groups)
    for name, fn, fast in (("auroc", _auroc, _auroc_fast), ("auprc", _auprc, _auprc_fast),
                           ("brier", _brier, _brier_fast)):
        lo, hi = bootstrap_ci(fast, y_te, scores, groups=groups, seed=seed, n_bootstrap=n_bootstrap)
        note = "" if np.isfinite(lo) or n_bootstrap <= 0 else "bootstrap CI undefined (too few valid resamples)"
        metrics.append(Metric(name, fn(y_te, scores), lo, hi, n_te, n_pos, note))
    return ProbeResult(metrics, scores, params)


# ================================================================================================== survival
def _surv_arrays(s: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time clipped to > 0, event bool, valid mask) -- rows with a missing time are not usable."""
    n = len(s)
    time = np.asarray(s.time, dtype=np.float64).ravel() if s.time is not None else np.full(n, np.nan)
    event = np.asarray(s.event).ravel().astype(bool) if s.event is not None else np.zeros(n, bool)
    valid = np.isfinite(time)
    time = np.where(valid, np.maximum(time, MIN_SURVIVAL_TIME), np.nan)
    return time, event & valid, valid


def _structured(event, time) -> np.ndarray:
    out = np.empty(len(time), dtype=[("event", bool), ("time", np.float64)])
    out["event"], out["time"] = event, time
    return out


def _fit_cox(Z, event, time, alpha: float, max_retries: int = 4):
    """Ridge Cox fit; on non-convergence / numerical failure retry with 10x alpha (0 -> 0.01), up to
    ``max_retries`` times. Returns (model, alpha actually used) or (None, nan)."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    y = _structured(event, time)
    a = float(alpha)
    for _ in range(max_retries + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warnings.simplefilter("error", ConvergenceWarning)
                model = CoxPHSurvivalAnalysis(alpha=a, ties="breslow", n_iter=100).fit(Z, y)
            if np.all(np.isfinite(model.coef_)):
                return model, a
        except (ConvergenceWarning, ValueError, ArithmeticError, np.linalg.LinAlgError):
            pass
        a = a * 10.0 if a > 0 else 0.01
    return None, float("nan")


def _harrell(event, time, risk) -> float:
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


def _harrell_fast(event, time, risk, tied_tol: float = 1e-8) -> float:
    """Same value as :func:`_harrell` (sksurv semantics: an event is comparable with every later time and with
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


def _td_auc(y_train, event, time, risk, times) -> float:
    """Mean over ``times`` of ``sksurv.metrics.cumulative_dynamic_auc`` (point estimates use this)."""
    from sksurv.metrics import cumulative_dynamic_auc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aucs, _ = cumulative_dynamic_auc(y_train, _structured(event, time), np.asarray(risk, float), times)
    aucs = np.asarray(aucs, dtype=float)
    return float(np.mean(aucs[np.isfinite(aucs)])) if np.isfinite(aucs).any() else float("nan")


def _td_auc_fast(event, time, risk, ipcw, times, tied_tol: float = 1e-8) -> float:
    """:func:`_td_auc` with the inverse-probability-of-censoring weights precomputed (``ipcw[i] = event_i /
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


def _ibs(y_train, event, time, surv, times) -> float:
    """``sksurv.metrics.integrated_brier_score`` (point estimates use this)."""
    from sksurv.metrics import integrated_brier_score

    return float(integrated_brier_score(y_train, _structured(event, time), np.asarray(surv, float), times))


def _ibs_fast(event, time, surv, g_rows, g_times, times) -> float:
    """:func:`_ibs` with the censoring survival precomputed at every row's time (``g_rows``) and at ``times``."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=np.float64)
    _check_times(time, times)
    is_case = ((time[:, None] <= times[None, :]) & event[:, None]).astype(float)
    is_control = (time[:, None] > times[None, :]).astype(float)
    bs = np.mean(np.square(surv) * is_case / g_rows[:, None] + np.square(1.0 - surv) * is_control / g_times[None, :],
                 axis=0)
    return float(np.trapezoid(bs, times) / (times[-1] - times[0]))


def _survival_at(model, Z: np.ndarray, times: np.ndarray) -> np.ndarray:
    """S(t | z) = S0(t) ** exp(z @ coef) at ``times`` (same as ``predict_survival_function``, without
    materializing one step function per row over every training time)."""
    k = Z.shape[1]
    base = model.predict_survival_function(np.zeros((1, k)), return_array=True)[0]
    ut = np.asarray(model.unique_times_, dtype=float)
    i = np.searchsorted(ut, times, side="right") - 1
    s0 = np.where(i >= 0, base[np.clip(i, 0, None)], 1.0)
    lp = np.clip(Z @ np.asarray(model.coef_, float), -50, 50)
    return np.power(s0[None, :], np.exp(lp)[:, None])


def survival_probe(
    train: Split,
    tune: Split,
    test: Split,
    *,
    seed: int = 0,
    n_bootstrap: int = 200,
    n_components: int = 10,
    alpha_grid: Sequence[float] = (0.01, 0.1, 1, 10, 100),
) -> ProbeResult:
    """Cox PH probe: StandardScaler -> PCA(min(n_components, d, n_train-1)) -> CoxPHSurvivalAnalysis(alpha), all fit
    on ``train``; alpha maximizes Harrell's C on ``tune`` (alpha=1 if that is undefined). Scored on ``test``:

    * ``c_index``: Harrell's C with a subject-bootstrap CI;
    * ``td_auc``: mean cumulative/dynamic AUC (Uno IPCW, censoring from train) at the 25/50/75th percentiles of the
      held-out event times, restricted to the training follow-up;
    * ``ibs``: integrated Brier score (Graf) of the predicted survival functions over [t25, t75] (16-point grid).

    Held-out times beyond the training follow-up ``tau`` (largest training time) are administratively censored at
    ``tau`` for td_auc/ibs -- which leaves both unchanged at the evaluated times < tau but satisfies sksurv's range
    checks. Fewer than 2 training events, or no held-out event, give NaN metrics with a note.
    """
    n_te = len(test)
    t_te, e_te, v_te = _surv_arrays(test)
    n_valid = int(v_te.sum())
    n_ev = int(e_te.sum())
    scores = np.full(n_te, np.nan)
    params: dict = {"alpha": float("nan"), "alpha_effective": float("nan"), "n_components": 0,
                    "tune_c_index": float("nan"), "n_train": len(train), "n_tune": len(tune)}

    t_tr, e_tr, v_tr = _surv_arrays(train)
    n_ev_tr = int(e_tr.sum())
    if n_ev_tr < 2:
        note = f"train split has {n_ev_tr} event(s) (< 2); probe not fit"
        return ProbeResult(_nan_metrics(SURVIVAL_METRICS, n_valid, n_ev, note), scores, params)
    X_tr = _features(train.X, len(train))[v_tr]
    t_tr, e_tr = t_tr[v_tr], e_tr[v_tr]
    k = int(min(n_components, X_tr.shape[1], X_tr.shape[0] - 1))
    if k < 1:
        note = f"cannot fit: {X_tr.shape[0]} train rows x {X_tr.shape[1]} features"
        return ProbeResult(_nan_metrics(SURVIVAL_METRICS, n_valid, n_ev, note), scores, params)

    scaler = StandardScaler().fit(X_tr)
    pca = PCA(n_components=k, svd_solver="full").fit(scaler.transform(X_tr))

    def embed(X) -> np.ndarray:
        return pca.transform(scaler.transform(X))

    Z_tr = embed(X_tr)
    params["n_components"] = k
    params["pca_explained_variance"] = float(np.sum(pca.explained_variance_ratio_))

    fits = {}
    for a in alpha_grid:
        m, a_eff = _fit_cox(Z_tr, e_tr, t_tr, a)
        if m is not None:
            fits[float(a)] = (m, a_eff)
    if not fits:
        note = "Cox fit failed for every alpha (even after increasing it)"
        return ProbeResult(_nan_metrics(SURVIVAL_METRICS, n_valid, n_ev, note), scores, params)

    t_tu, e_tu, v_tu = _surv_arrays(tune)
    tune_c = {}
    if v_tu.sum() >= 2 and e_tu.sum() >= 1:
        Z_tu = embed(_features(tune.X, len(tune))[v_tu])
        for a, (m, _) in fits.items():
            try:
                tune_c[a] = _harrell_fast(e_tu[v_tu], t_tu[v_tu], m.predict(Z_tu))
            except (ValueError, ZeroDivisionError):
                tune_c[a] = float("nan")
    finite = {a: c for a, c in tune_c.items() if np.isfinite(c)}
    if finite:
        best = max(finite, key=lambda a: (finite[a], -list(finite).index(a)))  # ties -> smallest alpha
        params["tune_note"] = ""
    else:
        cands = list(fits)
        best = 1.0 if 1.0 in fits else cands[len(cands) // 2]
        params["tune_note"] = f"Harrell's C undefined on tuning split; alpha={best:g}"
    model, a_eff = fits[best]
    params.update(alpha=float(best), alpha_effective=float(a_eff), tune_c_index=float(finite.get(best, np.nan)),
                  tune_c_index_by_alpha=tune_c)

    if n_te == 0:
        return ProbeResult(_nan_metrics(SURVIVAL_METRICS, 0, 0, "held_out split is empty"), scores, params)
    Z_te_all = embed(_features(test.X, n_te))
    scores = np.asarray(model.predict(Z_te_all), dtype=np.float64)
    groups = np.asarray(test.groups)[v_te]
    risk, t_v, e_v, Z_te = scores[v_te], t_te[v_te], e_te[v_te], Z_te_all[v_te]

    metrics: list[Metric] = []
    if n_ev < 1 or n_valid < 2:
        note = f"held_out split has {n_ev} event(s) in {n_valid} rows; metrics undefined"
        return ProbeResult(_nan_metrics(SURVIVAL_METRICS, n_valid, n_ev, note), scores, params)

    # --- Harrell's C
    try:
        c = _harrell(e_v, t_v, risk)
    except (ValueError, ZeroDivisionError) as exc:
        c, note = float("nan"), f"c_index undefined: {exc}"
    else:
        note = "" if np.isfinite(c) else "c_index undefined (no comparable pairs)"
    lo, hi = bootstrap_ci(_harrell_fast, e_v, t_v, risk, groups=groups, seed=seed, n_bootstrap=n_bootstrap)
    if np.isfinite(c) and not np.isfinite(lo) and n_bootstrap > 0:
        note = "bootstrap CI undefined (too few valid resamples)"
    metrics.append(Metric("c_index", c, lo, hi, n_valid, n_ev, note))

    # --- time grid inside the training follow-up, td_auc and ibs
    from sksurv.nonparametric import CensoringDistributionEstimator

    tau = float(t_tr.max())
    t_adm = np.minimum(t_v, tau)  # administrative censoring at the end of the training follow-up
    e_adm = e_v & (t_v < tau)
    y_train = _structured(e_tr, t_tr)
    ev_times = t_adm[e_adm]
    params["tau"] = tau
    if ev_times.size < 2:
        note = f"held_out has {ev_times.size} event(s) inside the training follow-up (< 2); td_auc/ibs undefined"
        metrics += _nan_metrics(("td_auc", "ibs"), n_valid, n_ev, note)
        return ProbeResult(metrics, scores, params)
    q = np.percentile(ev_times, [25, 50, 75])
    ok = (q >= t_adm.min()) & (q < t_adm.max())
    times = np.unique(q[ok])
    params["times"] = [float(t) for t in times]
    dropped = "" if ok.all() else f"{int((~ok).sum())} percentile time(s) outside the follow-up dropped"
    cens = CensoringDistributionEstimator().fit(y_train)
    no_ci = "bootstrap CI undefined (too few valid resamples)"

    if times.size == 0:
        metrics.append(Metric("td_auc", float("nan"), float("nan"), float("nan"), n_valid, n_ev,
                              "no evaluation time inside the follow-up of train and held_out"))
    else:
        lo = hi = float("nan")
        try:
            v = _td_auc(y_train, e_adm, t_adm, risk, times)
            note = _join("" if np.isfinite(v) else "td_auc undefined (no cases or controls)", dropped)
            ipcw = cens.predict_ipcw(_structured(e_adm, t_adm))
        except (ValueError, ZeroDivisionError) as exc:
            v, note, ipcw = float("nan"), f"td_auc undefined: {exc}", None
        if ipcw is not None and np.isfinite(v):
            lo, hi = bootstrap_ci(lambda e, t, r, w: _td_auc_fast(e, t, r, w, times), e_adm, t_adm, risk, ipcw,
                                  groups=groups, seed=seed, n_bootstrap=n_bootstrap)
            note = _join(note, no_ci if not np.isfinite(lo) and n_bootstrap > 0 else "")
        metrics.append(Metric("td_auc", v, lo, hi, n_valid, n_ev, note))

    if times.size < 2:
        metrics.append(Metric("ibs", float("nan"), float("nan"), float("nan"), n_valid, n_ev,
                              "fewer than 2 distinct evaluation times; ibs undefined"))
    else:
        # same range [t25, t75] as td_auc, integrated on a 16-point grid (plus the percentile times)
        grid = np.unique(np.concatenate([np.linspace(times[0], times[-1], 16), times]))
        lo = hi = float("nan")
        try:
            surv = _survival_at(model, Z_te, grid)
            v = _ibs(y_train, e_adm, t_adm, surv, grid)
            note = dropped
            g_rows, g_grid = cens.predict_proba(t_adm), cens.predict_proba(grid)
            g_rows[g_rows == 0], g_grid[g_grid == 0] = np.inf, np.inf
        except (ValueError, ZeroDivisionError) as exc:
            surv, v, note = None, float("nan"), f"ibs undefined: {exc}"
        if surv is not None and np.isfinite(v):
            lo, hi = bootstrap_ci(lambda e, t, s, g: _ibs_fast(e, t, s, g, g_grid, grid), e_adm, t_adm, surv, g_rows,
                                  groups=groups, seed=seed, n_bootstrap=n_bootstrap)
            note = _join(note, no_ci if not np.isfinite(lo) and n_bootstrap > 0 else "")
        metrics.append(Metric("ibs", v, lo, hi, n_valid, n_ev, note))
    return ProbeResult(metrics, scores, params)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# ================================================================================================== count baseline
def _as_us(values) -> np.ndarray:
    """datetime-like -> int64 microseconds since epoch; NaT -> int64 min (sorts first: 'always known', static)."""
    s = pd.Series(values)
    if getattr(s.dtype, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype("datetime64[us]").to_numpy().view(np.int64)


def select_count_vocab(events: pd.DataFrame, train_subjects, top_k: int = 256) -> list[str]:
    """The ``top_k`` most frequent codes (by number of events) among the train subjects' events.

    ``MEDS_BIRTH`` and ``MEDS_DEATH`` are excluded (age is a separate feature; death is an outcome); every other
    code, ``GENDER/*`` included, is eligible. Ties are broken by the code string (ascending), so the result is
    deterministic and independent of row order.
    """
    train = np.asarray(train_subjects)
    codes = events.loc[events["subject_id"].isin(train), "code"].dropna().astype(str)
    codes = codes[~codes.isin(EXCLUDED_VOCAB_CODES)]
    if codes.empty or top_k <= 0:
        return []
    vc = codes.value_counts()
    df = pd.DataFrame({"code": vc.index.astype(str), "n": vc.to_numpy()})
    df = df.sort_values(["n", "code"], ascending=[False, True], kind="mergesort")
    return df["code"].head(int(top_k)).tolist()


def count_features(events: pd.DataFrame, nodes: pd.DataFrame, vocab: list[str]) -> np.ndarray:
    """Count-baseline features, one row per row of ``nodes`` (same order), ``len(vocab) + 2`` float64 columns:

    ``log1p(count of vocab[j] among the subject's events with time <= prediction_time)`` for each j, then
    ``age_years`` at prediction_time (from the subject's earliest MEDS_BIRTH; 0 when absent) and
    ``log1p(total events with time <= prediction_time)`` (all codes). The boundary is inclusive (MEDS convention);
    events after prediction_time are never counted. Events with a null time (static) count as always known.

    Vectorized: events are keyed by (subject rank, time rank), sorted once; each node's context is a contiguous
    key range found by ``searchsorted``; per-code counts use one ``searchsorted`` per vocab code.
    """
    n_nodes, V = len(nodes), len(vocab)
    out = np.zeros((n_nodes, V + 2), dtype=np.float64)
    if n_nodes == 0:
        return out
    ev_sid = events["subject_id"].to_numpy()
    nd_sid = nodes["subject_id"].to_numpy()
    ev_t = _as_us(events["time"])
    nd_t = _as_us(nodes["prediction_time"])

    # dense ranks of subjects and of times over events + nodes, combined into one sortable int64 key
    subj_u = np.unique(np.concatenate([ev_sid, nd_sid]))
    ev_sr = np.searchsorted(subj_u, ev_sid).astype(np.int64)
    nd_sr = np.searchsorted(subj_u, nd_sid).astype(np.int64)
    time_u = np.unique(np.concatenate([ev_t, nd_t]))
    M = np.int64(time_u.size + 1)
    ev_key = ev_sr * M + np.searchsorted(time_u, ev_t).astype(np.int64)
    nd_hi = nd_sr * M + np.searchsorted(time_u, nd_t).astype(np.int64)  # inclusive upper key
    nd_lo = nd_sr * M  # first possible key of the subject (NaT/static events have time rank 0)

    order = np.argsort(ev_key, kind="stable")
    sorted_key = ev_key[order]
    total = np.searchsorted(sorted_key, nd_hi, side="right") - np.searchsorted(sorted_key, nd_lo, side="left")
    out[:, V + 1] = np.log1p(total)

    if V:
        uniq_vocab = list(dict.fromkeys(str(c) for c in vocab))  # a repeated code gets the same column values
        col = np.asarray([uniq_vocab.index(str(c)) for c in vocab]) if len(uniq_vocab) < V else np.arange(V)
        code_idx = pd.Index(uniq_vocab).get_indexer(events["code"].astype(object).to_numpy())
        in_vocab = code_idx >= 0
        ci, ck = code_idx[in_vocab], ev_key[in_vocab]
        o = np.lexsort((ck, ci))  # by code, then key
        ci, ck = ci[o], ck[o]
        bounds = np.searchsorted(ci, np.arange(len(uniq_vocab) + 1), side="left")
        q = np.argsort(nd_hi, kind="stable")  # sorted queries make searchsorted cache-friendly
        hi_q, lo_q = nd_hi[q], nd_lo[q]
        per_code = np.zeros((len(uniq_vocab), n_nodes), dtype=np.int64)
        for j in range(len(uniq_vocab)):
            keys = ck[bounds[j] : bounds[j + 1]]
            if keys.size:
                per_code[j] = np.searchsorted(keys, hi_q, side="right") - np.searchsorted(keys, lo_q, side="left")
        feats = np.empty((n_nodes, len(uniq_vocab)), dtype=np.float64)
        feats[q] = np.log1p(np.ascontiguousarray(per_code.T, dtype=np.float64))
        out[:, :V] = feats if len(uniq_vocab) == V else feats[:, col]

    # age at prediction time from the earliest MEDS_BIRTH of the subject
    birth_mask = (events["code"] == "MEDS_BIRTH").to_numpy() & (ev_t != np.iinfo(np.int64).min)
    if birth_mask.any():
        births = pd.Series(ev_t[birth_mask]).groupby(ev_sr[birth_mask]).min()
        b = np.full(subj_u.size, np.iinfo(np.int64).min, dtype=np.int64)
        b[births.index.to_numpy()] = births.to_numpy()
        nb = b[nd_sr]
        has = (nb != np.iinfo(np.int64).min) & (nd_t != np.iinfo(np.int64).min)
        age = np.zeros(n_nodes)
        age[has] = (nd_t[has] - nb[has]) / _US_PER_YEAR
        out[:, V] = age
    return out
