"""Linear probes on frozen features: what a probe takes and returns, and the binary (logistic-regression) probe.

Protocol (EHRSHOT / INSPECT / MOTOR conventions): one feature row per decision node; the probe is fit on the
``train`` split, its regularization strength is chosen on the ``tuning`` split, and it is scored once on the
``held_out`` split. Confidence intervals resample held-out *subjects* with replacement (a subject brings all its
rows along) and report the percentile 95 % interval (:func:`ehr_assets.eval.metrics.bootstrap_ci`).

* :class:`Split` in, :class:`ProbeResult` (a :class:`Metric` per metric, held-out scores, chosen parameters) out;
* :func:`binary_probe` -- StandardScaler -> L2 logistic regression; C chosen by tuning AUROC along a warm-started
  regularization path (:func:`logistic_path`);
  metrics ``auroc``, ``auprc``, ``brier``;
* :func:`ehr_assets.eval.survival.survival_probe` -- the Cox PH probe, in its own module (it has more steps) and
  built on the types and helpers here.

Nothing here raises on degenerate data (single class, no events, empty split): the affected metrics are NaN and
their ``note`` says why. This module deliberately imports neither torch nor dagster.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from .bootstrap import auprc_w, auroc_w, bootstrap_cis, brier_w
from .metrics import auprc, auroc, brier

__all__ = [
    "BINARY_METRICS",
    "NO_CI_NOTE",
    "SURVIVAL_METRICS",
    "Metric",
    "ProbeResult",
    "Split",
    "best_on_tuning",
    "binary_probe",
    "feature_matrix",
    "join_notes",
    "logistic_path",
    "nan_metrics",
]

BINARY_METRICS = ("auroc", "auprc", "brier")
SURVIVAL_METRICS = ("c_index", "td_auc", "ibs")
NO_CI_NOTE = "bootstrap CI undefined (too few valid resamples)"


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


# ================================================================================================== helpers
def feature_matrix(X, n: int) -> np.ndarray:
    """2-D float64 features; non-finite entries become 0 (a probe must not crash on a stray NaN)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(n, -1) if n else X.reshape(0, 0)
    if X.shape[0] != n:
        raise ValueError(f"features have {X.shape[0]} rows but the split has {n} subject ids")
    if not np.isfinite(X).all():
        X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
    return X


def nan_metrics(names: Sequence[str], n: int, n_pos: int, note: str) -> list[Metric]:
    """One NaN :class:`Metric` per name, all with the same ``note`` saying why: a probe's answer to degenerate data."""
    return [Metric(m, float("nan"), float("nan"), float("nan"), int(n), int(n_pos), note) for m in names]


def join_notes(*notes: str) -> str:
    """The non-empty notes joined with ``"; "``."""
    return "; ".join(n for n in notes if n)


def best_on_tuning(scores: dict[float, float]) -> float:
    """The grid value with the highest tuning score; ties resolve to the first (the grid's order: the most
    regularized C, the smallest alpha)."""
    return max(scores, key=lambda a: (scores[a], -list(scores).index(a)))


# ================================================================================================== binary
def _labels(s: Split) -> np.ndarray:
    """The binary labels of a split as int64 (empty when it has none)."""
    return np.asarray(s.y, dtype=np.int64).ravel() if s.y is not None else np.zeros(0, np.int64)


# Newton's method with a Cholesky solve: with a few hundred features at most, each step is one Gram matrix of the
# rows (no threads needed), it converges in a handful of steps where L-BFGS took tens to hundreds, and to a tighter
# optimum. Along the C grid each fit starts from the previous C's solution (the path of L2 solutions is smooth).
SOLVER = "newton-cholesky"
MAX_ITER = 1000


def logistic_path(Z: np.ndarray, y: np.ndarray, c_grid: Sequence[float]) -> dict[float, LogisticRegression]:
    """One L2 logistic regression per C of ``c_grid``, fit from the smallest C to the largest, each warm-started at
    the previous solution: the regularization path. The fits are the same optimum as fits from scratch (the L2
    objective is strictly convex); only the starting points differ. A non-converged fit is kept (the tuning split
    judges it; its ``n_iter_`` equals ``max_iter``)."""
    model = LogisticRegression(solver=SOLVER, max_iter=MAX_ITER, warm_start=True)
    path: dict[float, LogisticRegression] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in sorted({float(c) for c in c_grid}):
            model.set_params(C=C)
            model.fit(Z, y)
            path[C] = copy.deepcopy(model)
    return path


def _choose_c(Z_tr, y_tr, Z_tu, y_tu, c_grid: Sequence[float]) -> tuple[LogisticRegression, float, float, dict]:
    """The regularization path over the grid, each C scored by AUROC on tuning: (chosen model, C, its tuning AUROC,
    AUROC by C). Ties (and NaNs) resolve to the first -- most regularized -- C of the grid; C=1 when every AUROC
    is NaN."""
    models = logistic_path(Z_tr, y_tr, [*c_grid, 1.0])
    tune_scores = {float(C): auroc(y_tu, models[float(C)].predict_proba(Z_tu)[:, 1]) for C in c_grid}
    best_c, best_auc = 1.0, float("nan")
    finite = {c: a for c, a in tune_scores.items() if np.isfinite(a)}
    if finite:
        best_c = best_on_tuning(finite)
        best_auc = finite[best_c]
    return models[best_c], best_c, best_auc, tune_scores


def _binary_metrics(y, scores, groups, n: int, n_pos: int, *, seed: int, n_bootstrap: int) -> list[Metric]:
    """AUROC, AUPRC and Brier of ``scores`` with subject-bootstrap CIs: one bootstrap, every resample scored by all
    three weighted replicas at once (:mod:`ehr_assets.eval.bootstrap`)."""
    weighted = {"auroc": auroc_w, "auprc": auprc_w, "brier": brier_w}
    cis = bootstrap_cis(
        {name: (lambda W, f=f: f(y, scores, W)) for name, f in weighted.items()},
        groups,
        seed=seed,
        n_bootstrap=n_bootstrap,
    )
    metrics = []
    for name, fn in (("auroc", auroc), ("auprc", auprc), ("brier", brier)):
        lo, hi = cis[name]
        note = "" if np.isfinite(lo) or n_bootstrap <= 0 else NO_CI_NOTE
        metrics.append(Metric(name, fn(y, scores), lo, hi, n, n_pos, note))
    return metrics


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
    y_te = _labels(test)
    n_pos = int(y_te.sum()) if n_te else 0
    scores = np.full(n_te, np.nan)
    params: dict = {"C": float("nan"), "tune_auroc": float("nan"), "n_train": len(train), "n_tune": len(tune)}

    y_tr = _labels(train)
    if len(train) == 0 or np.unique(y_tr).size < 2:
        note = "train split is empty" if len(train) == 0 else "train split has a single class; probe not fit"
        return ProbeResult(nan_metrics(BINARY_METRICS, n_te, n_pos, note), scores, params)

    X_tr = feature_matrix(train.X, len(train))
    scaler = StandardScaler().fit(X_tr)
    Z_tr = scaler.transform(X_tr)
    y_tu = _labels(tune) if len(tune) else np.zeros(0, np.int64)
    if y_tu.size and np.unique(y_tu).size == 2:
        Z_tu = scaler.transform(feature_matrix(tune.X, len(tune)))
        model, best_c, best_auc, tune_scores = _choose_c(Z_tr, y_tr, Z_tu, y_tu, c_grid)
        params["tune_note"] = ""
    else:
        best_c, best_auc, tune_scores = 1.0, float("nan"), {}
        model = logistic_path(Z_tr, y_tr, [best_c])[best_c]
        params["tune_note"] = "tuning split empty or single-class; C=1"
    params.update(C=float(best_c), tune_auroc=float(best_auc), tune_auroc_by_C=tune_scores)
    params.update(n_iter=int(np.max(model.n_iter_)), max_iter=int(model.max_iter))  # n_iter == max_iter: not converged

    if n_te == 0:
        return ProbeResult(nan_metrics(BINARY_METRICS, 0, 0, "held_out split is empty"), scores, params)
    # float32, as the exported prediction files hold them (eval.exports): every metric is computed from the values
    # another tool reads back, so a MEDS scorer reproduces the AUROC exactly
    scores = model.predict_proba(scaler.transform(feature_matrix(test.X, n_te)))[:, 1].astype(np.float32)
    scores = scores.astype(np.float64)
    if np.unique(y_te).size < 2:
        note = f"held_out split has a single class (n_pos={n_pos} of {n_te}); metrics undefined"
        return ProbeResult(nan_metrics(BINARY_METRICS, n_te, n_pos, note), scores, params)
    groups = np.asarray(test.groups)
    metrics = _binary_metrics(y_te, scores, groups, n_te, n_pos, seed=seed, n_bootstrap=n_bootstrap)
    return ProbeResult(metrics, scores, params)
