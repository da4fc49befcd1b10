"""Reference: the survival probe before the regularization path (one scikit-survival CoxPHSurvivalAnalysis fit per
penalty, from scratch), verbatim apart from imports. ``tests/eval/test_cox.py`` holds the new probe to its C-index."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from ehr_assets.eval.metrics import (
    bootstrap_ci,
    harrell,
    harrell_fast,
    ibs,
    ibs_fast,
    td_auc,
    td_auc_fast,
    to_structured,
)
from ehr_assets.eval.probes import (
    NO_CI_NOTE,
    SURVIVAL_METRICS,
    Metric,
    ProbeResult,
    Split,
    best_on_tuning,
    feature_matrix,
    join_notes,
    nan_metrics,
)

__all__ = ["MIN_SURVIVAL_TIME", "survival_at", "survival_probe"]

MIN_SURVIVAL_TIME = 1e-3  # days; a time of 0 (event at the decision node) is clipped to this


# ================================================================================================== fit
def _surv_arrays(s: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time clipped to > 0, event bool, valid mask) -- rows with a missing time are not usable."""
    n = len(s)
    time = np.asarray(s.time, dtype=np.float64).ravel() if s.time is not None else np.full(n, np.nan)
    event = np.asarray(s.event).ravel().astype(bool) if s.event is not None else np.zeros(n, bool)
    valid = np.isfinite(time)
    time = np.where(valid, np.maximum(time, MIN_SURVIVAL_TIME), np.nan)
    return time, event & valid, valid


def _fit_projection(X_tr: np.ndarray, k: int) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """StandardScaler -> PCA(k), fit on the train rows: the map into the space the Cox model is fit in, and the
    share of the variance its ``k`` components keep."""
    scaler = StandardScaler().fit(X_tr)
    pca = PCA(n_components=k, svd_solver="full").fit(scaler.transform(X_tr))

    def project(X) -> np.ndarray:
        return pca.transform(scaler.transform(X))

    return project, float(np.sum(pca.explained_variance_ratio_))


def _fit_cox(Z, event, time, alpha: float, max_retries: int = 4):
    """Ridge Cox fit; on non-convergence / numerical failure retry with 10x alpha (0 -> 0.01), up to
    ``max_retries`` times. Returns (model, alpha actually used) or (None, nan)."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    y = to_structured(event, time)
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


def _fit_cox_grid(Z_tr, e_tr, t_tr, alpha_grid: Sequence[float]) -> dict:
    """``{alpha: (model, alpha actually used)}`` for every alpha of the grid whose fit succeeded (in grid order)."""
    fits = {}
    for a in alpha_grid:
        m, a_eff = _fit_cox(Z_tr, e_tr, t_tr, a)
        if m is not None:
            fits[float(a)] = (m, a_eff)
    return fits


def _choose_alpha(fits: dict, tune: Split, project: Callable[[np.ndarray], np.ndarray], params: dict):
    """The fit whose alpha maximizes Harrell's C on ``tune`` (ties -> smallest alpha); alpha=1 (or the middle of the
    grid) when C is undefined there. Records the choice in ``params``; returns (model, alpha actually used)."""
    t_tu, e_tu, v_tu = _surv_arrays(tune)
    tune_c = {}
    if v_tu.sum() >= 2 and e_tu.sum() >= 1:
        Z_tu = project(feature_matrix(tune.X, len(tune))[v_tu])
        for a, (m, _) in fits.items():
            try:
                tune_c[a] = harrell_fast(e_tu[v_tu], t_tu[v_tu], m.predict(Z_tu))
            except (ValueError, ZeroDivisionError):
                tune_c[a] = float("nan")
    finite = {a: c for a, c in tune_c.items() if np.isfinite(c)}
    if finite:
        best = best_on_tuning(finite)
        params["tune_note"] = ""
    else:
        cands = list(fits)
        best = 1.0 if 1.0 in fits else cands[len(cands) // 2]
        params["tune_note"] = f"Harrell's C undefined on tuning split; alpha={best:g}"
    model, a_eff = fits[best]
    params.update(
        alpha=float(best),
        alpha_effective=float(a_eff),
        tune_c_index=float(finite.get(best, np.nan)),
        tune_c_index_by_alpha=tune_c,
    )
    return model, a_eff


def survival_at(model, Z: np.ndarray, times: np.ndarray) -> np.ndarray:
    """S(t | z) = S0(t) ** exp(z @ coef) at ``times`` (same as ``predict_survival_function``, without
    materializing one step function per row over every training time)."""
    k = Z.shape[1]
    base = model.predict_survival_function(np.zeros((1, k)), return_array=True)[0]
    ut = np.asarray(model.unique_times_, dtype=float)
    i = np.searchsorted(ut, times, side="right") - 1
    s0 = np.where(i >= 0, base[np.clip(i, 0, None)], 1.0)
    lp = np.clip(Z @ np.asarray(model.coef_, float), -50, 50)
    return np.power(s0[None, :], np.exp(lp)[:, None])


# ================================================================================================== score
@dataclass
class _HeldOut:
    """The held-out rows a fitted survival probe is scored on (rows with a time only), and the bootstrap settings."""

    event: np.ndarray
    time: np.ndarray
    risk: np.ndarray  # the Cox model's risk score
    Z: np.ndarray  # the rows in PCA space
    groups: np.ndarray  # subject ids (bootstrap unit)
    n_events: int  # observed events among these rows before administrative censoring (the metrics' n_pos)
    seed: int
    n_bootstrap: int

    @property
    def n(self) -> int:
        return int(self.time.shape[0])

    def metric(self, name: str, value: float, lo: float, hi: float, note: str) -> Metric:
        return Metric(name, value, lo, hi, self.n, self.n_events, note)

    def undefined(self, name: str, note: str) -> Metric:
        return self.metric(name, float("nan"), float("nan"), float("nan"), note)

    def ci(self, fn: Callable[..., float], *arrays: np.ndarray) -> tuple[float, float]:
        return bootstrap_ci(fn, *arrays, groups=self.groups, seed=self.seed, n_bootstrap=self.n_bootstrap)

    def no_ci(self, lo: float) -> str:
        return NO_CI_NOTE if not np.isfinite(lo) and self.n_bootstrap > 0 else ""


def _c_index_metric(h: _HeldOut) -> Metric:
    """Harrell's C of the risk scores (sksurv), CI from the fast replica."""
    try:
        c = harrell(h.event, h.time, h.risk)
    except (ValueError, ZeroDivisionError) as exc:
        c, note = float("nan"), f"c_index undefined: {exc}"
    else:
        note = "" if np.isfinite(c) else "c_index undefined (no comparable pairs)"
    lo, hi = h.ci(harrell_fast, h.event, h.time, h.risk)
    if np.isfinite(c) and not np.isfinite(lo) and h.n_bootstrap > 0:
        note = NO_CI_NOTE
    return h.metric("c_index", c, lo, hi, note)


def _evaluation_times(ev_times: np.ndarray, t_adm: np.ndarray) -> tuple[np.ndarray, str]:
    """The 25/50/75th percentiles of the held-out event times that lie inside the follow-up [min, max) of the
    scored rows, and a note when some fall outside."""
    q = np.percentile(ev_times, [25, 50, 75])
    ok = (q >= t_adm.min()) & (q < t_adm.max())
    dropped = "" if ok.all() else f"{int((~ok).sum())} percentile time(s) outside the follow-up dropped"
    return np.unique(q[ok]), dropped


def _td_auc_metric(h: _HeldOut, y_train, cens, times: np.ndarray, dropped: str) -> Metric:
    """Mean cumulative/dynamic AUC at ``times``; the bootstrap reuses the IPCW weights of the train censoring KM."""
    if times.size == 0:
        return h.undefined("td_auc", "no evaluation time inside the follow-up of train and held_out")
    lo = hi = float("nan")
    try:
        v = td_auc(y_train, h.event, h.time, h.risk, times)
        note = join_notes("" if np.isfinite(v) else "td_auc undefined (no cases or controls)", dropped)
        ipcw = cens.predict_ipcw(to_structured(h.event, h.time))
    except (ValueError, ZeroDivisionError) as exc:
        v, note, ipcw = float("nan"), f"td_auc undefined: {exc}", None
    if ipcw is not None and np.isfinite(v):
        lo, hi = h.ci(lambda e, t, r, w: td_auc_fast(e, t, r, w, times), h.event, h.time, h.risk, ipcw)
        note = join_notes(note, h.no_ci(lo))
    return h.metric("td_auc", v, lo, hi, note)


def _ibs_metric(h: _HeldOut, y_train, cens, model, times: np.ndarray, dropped: str) -> Metric:
    """Integrated Brier score of the predicted survival functions over [t25, t75]."""
    if times.size < 2:
        return h.undefined("ibs", "fewer than 2 distinct evaluation times; ibs undefined")
    # same range [t25, t75] as td_auc, integrated on a 16-point grid (plus the percentile times)
    grid = np.unique(np.concatenate([np.linspace(times[0], times[-1], 16), times]))
    lo = hi = float("nan")
    try:
        surv = survival_at(model, h.Z, grid)
        v = ibs(y_train, h.event, h.time, surv, grid)
        note = dropped
        g_rows, g_grid = cens.predict_proba(h.time), cens.predict_proba(grid)
        g_rows[g_rows == 0], g_grid[g_grid == 0] = np.inf, np.inf
    except (ValueError, ZeroDivisionError) as exc:
        surv, v, note = None, float("nan"), f"ibs undefined: {exc}"
    if surv is not None and np.isfinite(v):
        lo, hi = h.ci(lambda e, t, s, g: ibs_fast(e, t, s, g, g_grid, grid), h.event, h.time, surv, g_rows)
        note = join_notes(note, h.no_ci(lo))
    return h.metric("ibs", v, lo, hi, note)


def _time_dependent_metrics(h: _HeldOut, model, e_tr, t_tr, params: dict) -> list[Metric]:
    """td_auc and ibs on a time grid inside the training follow-up ``tau``: held-out rows beyond ``tau`` are
    administratively censored there (unchanged metrics at the evaluated times < tau, but sksurv's range checks hold).
    """
    from sksurv.nonparametric import CensoringDistributionEstimator

    tau = float(t_tr.max())
    adm = replace(h, time=np.minimum(h.time, tau), event=h.event & (h.time < tau))
    y_train = to_structured(e_tr, t_tr)
    ev_times = adm.time[adm.event]
    params["tau"] = tau
    if ev_times.size < 2:
        note = f"held_out has {ev_times.size} event(s) inside the training follow-up (< 2); td_auc/ibs undefined"
        return [h.undefined("td_auc", note), h.undefined("ibs", note)]
    times, dropped = _evaluation_times(ev_times, adm.time)
    params["times"] = [float(t) for t in times]
    cens = CensoringDistributionEstimator().fit(y_train)
    return [_td_auc_metric(adm, y_train, cens, times, dropped), _ibs_metric(adm, y_train, cens, model, times, dropped)]


# ================================================================================================== the probe
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

    * ``c_index``: Harrell's C of the risk score;
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
    params: dict = {
        "alpha": float("nan"),
        "alpha_effective": float("nan"),
        "n_components": 0,
        "tune_c_index": float("nan"),
        "n_train": len(train),
        "n_tune": len(tune),
    }

    t_tr, e_tr, v_tr = _surv_arrays(train)
    n_ev_tr = int(e_tr.sum())
    if n_ev_tr < 2:
        note = f"train split has {n_ev_tr} event(s) (< 2); probe not fit"
        return ProbeResult(nan_metrics(SURVIVAL_METRICS, n_valid, n_ev, note), scores, params)
    X_tr = feature_matrix(train.X, len(train))[v_tr]
    t_tr, e_tr = t_tr[v_tr], e_tr[v_tr]
    k = int(min(n_components, X_tr.shape[1], X_tr.shape[0] - 1))
    if k < 1:
        note = f"cannot fit: {X_tr.shape[0]} train rows x {X_tr.shape[1]} features"
        return ProbeResult(nan_metrics(SURVIVAL_METRICS, n_valid, n_ev, note), scores, params)

    project, explained = _fit_projection(X_tr, k)
    params["n_components"] = k
    params["pca_explained_variance"] = explained
    fits = _fit_cox_grid(project(X_tr), e_tr, t_tr, alpha_grid)
    if not fits:
        note = "Cox fit failed for every alpha (even after increasing it)"
        return ProbeResult(nan_metrics(SURVIVAL_METRICS, n_valid, n_ev, note), scores, params)
    model, _ = _choose_alpha(fits, tune, project, params)

    if n_te == 0:
        return ProbeResult(nan_metrics(SURVIVAL_METRICS, 0, 0, "held_out split is empty"), scores, params)
    Z_te = project(feature_matrix(test.X, n_te))
    scores = np.asarray(model.predict(Z_te), dtype=np.float64)
    if n_ev < 1 or n_valid < 2:
        note = f"held_out split has {n_ev} event(s) in {n_valid} rows; metrics undefined"
        return ProbeResult(nan_metrics(SURVIVAL_METRICS, n_valid, n_ev, note), scores, params)

    h = _HeldOut(
        event=e_te[v_te],
        time=t_te[v_te],
        risk=scores[v_te],
        Z=Z_te[v_te],
        groups=np.asarray(test.groups)[v_te],
        n_events=n_ev,
        seed=seed,
        n_bootstrap=n_bootstrap,
    )
    metrics = [_c_index_metric(h), *_time_dependent_metrics(h, model, e_tr, t_tr, params)]
    return ProbeResult(metrics, scores, params)
