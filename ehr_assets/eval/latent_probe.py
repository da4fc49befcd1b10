"""The latent-dynamics probe: does a node embedding carry where the patient *is*, and where the patient is *going*?

The synthetic cohorts know each subject's hidden state (:mod:`ehr_assets.eval.oracle`). Outcome probes measure it
indirectly; this probe asks directly. For each decision node and each offset of :data:`OFFSETS_DAYS` (0, 180 and
365 days), the target is the hidden state in effect at ``prediction_time + offset`` -- the subject's last latent row
at or before that time, the state that drives the simulator's hazards there (:func:`latent_targets`). A node whose
subject's record ends before that time (death or end of follow-up) has no target at that offset and is left out.

:func:`latent_probe` fits, per offset, a ridge regression from the node features (a recipe's embeddings, the count
baseline's features, or the oracles' latent snapshot) to every latent variable: StandardScaler and Ridge fit on the
``train`` split, ``alpha`` chosen per variable by R^2 on ``tuning``, held-out R^2 reported with a 95 % subject-
bootstrap CI (the draws of :mod:`ehr_assets.eval.resample`, the same for every recipe, so the rows are paired).

Reading it: at offset 0 the full oracle reads its own target (R^2 = 1 by construction); ``oracle_no_rate`` shows how
much of ``growth_rate`` one snapshot of the other variables reveals. At 180 / 365 days the oracle's R^2 is the
ceiling of a *linear* read-out of the present state (the rest is the noise of the dynamics); an encoder that learned
disease dynamics should approach it on ``burden`` and ``growth_rate`` where counting codes does not. A variable that
does not vary (``clot_load`` in the oncology profile) has no R^2 and says so. Nothing here imports Dagster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from meds import held_out_split, train_split, tuning_split
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from ..synthetic import LATENT_COLUMNS
from .probes import best_on_tuning
from .resample import percentile_ci, row_weights, subject_draws

__all__ = [
    "ALPHA_GRID",
    "COLUMNS",
    "OFFSETS_DAYS",
    "REPLICATE_COLUMNS",
    "latent_probe",
    "latent_targets",
    "weighted_r2",
]

OFFSETS_DAYS = (0, 180, 365)
ALPHA_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
COLUMNS = ["recipe", "variable", "offset_days", "r2", "ci_low", "ci_high", "n", "n_subjects", "alpha", "note"]
REPLICATE_COLUMNS = ["recipe", "variable", "offset_days", "replicate", "r2"]


def latent_targets(latent: pd.DataFrame, nodes: pd.DataFrame, offsets=OFFSETS_DAYS) -> dict[int, pd.DataFrame]:
    """``{offset: frame}``: per node (in the order of ``nodes``), the latent columns in effect at
    ``prediction_time + offset`` days -- the subject's last latent row at or before it, as the oracle reads the
    state at the node -- and, for an offset > 0, NaN where the subject's latent record ends before that time (death
    or end of follow-up: nothing is known about the state then)."""
    cols = [c for c in LATENT_COLUMNS if c in latent.columns]
    lat = latent[["subject_id", "time", *cols]].rename(columns={"time": "_t"})
    lat = lat.assign(_t=lat["_t"].astype("datetime64[us]")).sort_values("_t", kind="stable")
    last = lat.groupby("subject_id")["_t"].max()
    base = nodes[["subject_id", "prediction_time"]].reset_index(drop=True)
    out = {}
    for off in offsets:
        when = base["prediction_time"].astype("datetime64[us]") + pd.Timedelta(days=int(off))
        left = pd.DataFrame({"subject_id": base["subject_id"].to_numpy(), "_when": when, "_row": np.arange(len(base))})
        snap = pd.merge_asof(
            left.sort_values("_when", kind="stable"),
            lat,
            left_on="_when",
            right_on="_t",
            by="subject_id",
            direction="backward",
        ).sort_values("_row")
        frame = snap[cols].reset_index(drop=True).astype(np.float64)
        if off > 0:  # the record must reach the target time: after it ends, the state is not known
            known = snap["_when"].to_numpy() <= snap["subject_id"].map(last).to_numpy()
            frame.loc[~known, :] = np.nan
        out[int(off)] = frame
    return out


def weighted_r2(y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``1 - SS_res / SS_tot`` of ``pred`` for ``y`` under each column of ``weights`` (``[n, B]``; None: the plain
    R^2, equal to ``sklearn.metrics.r2_score``), ``[B]``; NaN where the weighted target variance is 0."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    W = np.ones((y.shape[0], 1)) if weights is None else np.asarray(weights, dtype=np.float64)
    tot_w = W.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (W * y[:, None]).sum(axis=0) / tot_w
        ss_tot = (W * (y[:, None] - mean[None, :]) ** 2).sum(axis=0)
        ss_res = (W * ((y - pred) ** 2)[:, None]).sum(axis=0)
        scale = np.maximum(np.abs(mean), 1.0)
        return np.where(ss_tot > 1e-12 * scale**2 * np.maximum(tot_w, 1.0), 1.0 - ss_res / ss_tot, np.nan)


def _fit_alphas(X_tr, Y_tr, X_tu, Y_tu) -> tuple[dict[float, Ridge], np.ndarray]:
    """One multi-output ridge per alpha of the grid, and the tuning R^2 of each alpha per variable
    (``[alphas, variables]``)."""
    models, scores = {}, []
    for a in ALPHA_GRID:
        m = Ridge(alpha=a).fit(X_tr, Y_tr)
        models[a] = m
        P = m.predict(X_tu).reshape(len(X_tu), -1)
        scores.append([weighted_r2(Y_tu[:, j], P[:, j])[0] for j in range(Y_tu.shape[1])])
    return models, np.asarray(scores, dtype=np.float64)


def _undefined(base: dict, note: str) -> dict:
    """A row whose R^2 is undefined, and why."""
    return base | dict(r2=np.nan, ci_low=np.nan, ci_high=np.nan, alpha=np.nan, note=note)


def _variable_rows(name, off, Y, P_by_alpha, tune, te_mask, W, n_subj, reps: list | None = None) -> list[dict]:
    """One row per latent variable: the alpha chosen on tuning, held-out R^2 and its CI (and, into ``reps``, a
    frame of its R^2 under each draw)."""
    rows = []
    for j, var in enumerate(Y.columns):
        y_te = Y.iloc[:, j].to_numpy()[te_mask]
        base = dict(recipe=name, variable=var, offset_days=int(off), n=int(te_mask.sum()), n_subjects=n_subj)
        finite = {a: s for a, s in zip(ALPHA_GRID, tune[:, j]) if np.isfinite(s)}
        if not finite or np.ptp(y_te) == 0:
            rows.append(_undefined(base, "the variable does not vary on tuning or held_out; R^2 undefined"))
            continue
        a = best_on_tuning(finite)
        pred = P_by_alpha[a][:, j]
        boot = weighted_r2(y_te, pred, W)
        lo, hi, _ = percentile_ci(boot)
        if reps is not None:
            reps.append(
                pd.DataFrame(
                    {"recipe": name, "variable": var, "offset_days": int(off), "replicate": np.arange(boot.size)}
                ).assign(r2=boot)
            )
        note = "" if np.isfinite(lo) else "bootstrap CI undefined (too few valid resamples)"
        r2 = float(weighted_r2(y_te, pred)[0])
        rows.append(base | dict(r2=r2, ci_low=lo, ci_high=hi, alpha=float(a), note=note))
    return rows


def latent_probe(
    name: str,
    features: np.ndarray,
    splits: np.ndarray,
    subjects: np.ndarray,
    targets: dict[int, pd.DataFrame],
    *,
    draws: tuple[np.ndarray, np.ndarray] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    replicates: list[pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Held-out R^2 of ridge read-outs of ``features`` (one row per node; ``splits`` and ``subjects`` per node) for
    each latent variable at each offset of ``targets`` (:func:`latent_targets`). ``draws``: the subject draws shared
    by every recipe (default: drawn here from the held-out subjects with ``seed``). ``replicates``: a list that
    receives, per defined row, the :data:`REPLICATE_COLUMNS` frame of its R^2 under each draw (paired across
    recipes that share ``draws``)."""
    X = np.asarray(features, dtype=np.float64)
    if X.shape[0] != len(splits):
        raise ValueError(f"{name}: {X.shape[0]} feature rows for {len(splits)} decision nodes")
    X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
    splits, subjects = np.asarray(splits), np.asarray(subjects)
    if draws is None:
        draws = subject_draws(subjects[splits == held_out_split], n_bootstrap, seed)
    rows = []
    for off, Y in targets.items():
        known = Y.notna().all(axis=1).to_numpy()
        tr, tu, te = ((splits == s) & known for s in (train_split, tuning_split, held_out_split))
        if tr.sum() < 3 or tu.sum() < 2 or te.sum() < 2:
            counts = f"train {tr.sum()}, tuning {tu.sum()}, held_out {te.sum()}"
            note = f"too few nodes with a known state at +{off} d ({counts})"
            base = dict(recipe=name, offset_days=int(off), n=int(te.sum()), n_subjects=0)
            rows += [_undefined(base | {"variable": v}, note) for v in Y.columns]
            continue
        scaler = StandardScaler().fit(X[tr])
        Z = scaler.transform(X)
        Yv = Y.to_numpy()
        models, tune = _fit_alphas(Z[tr], Yv[tr], Z[tu], Yv[tu])
        P_by_alpha = {a: m.predict(Z[te]).reshape(int(te.sum()), -1) for a, m in models.items()}
        W = row_weights(draws, subjects[te])
        n_subj = int(np.unique(subjects[te]).size)
        rows += _variable_rows(name, off, Y, P_by_alpha, tune, te, W, n_subj, replicates)
    return pd.DataFrame(rows, columns=COLUMNS)
