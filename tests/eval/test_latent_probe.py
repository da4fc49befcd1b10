"""The latent-dynamics probe: targets at the node and later, the ridge read-out scored on held-out subjects, and the
probe's answer on a real synthetic cohort (the oracle's ceiling, what counting codes reads)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from ehr_assets.eval.latent_probe import ALPHA_GRID, latent_probe, latent_targets, weighted_r2
from ehr_assets.eval.resample import row_weights, subject_draws
from ehr_assets.synthetic import LATENT_COLUMNS


def latent_rows(rows) -> pd.DataFrame:
    """(subject_id, 'YYYY-MM-DD', burden) rows; the other latent columns are burden + k."""
    df = pd.DataFrame(rows, columns=["subject_id", "time", "burden"])
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[us]")
    for k, c in enumerate(LATENT_COLUMNS[1:], 1):
        df[c] = df["burden"] + k
    return df


def test_targets_are_the_state_in_effect_then_and_unknown_after_the_record_ends():
    lat = latent_rows([(1, "2020-01-01", 1.0), (1, "2020-05-01", 2.0), (1, "2021-03-01", 3.0), (2, "2020-01-01", 9.0)])
    nodes = pd.DataFrame(
        {"subject_id": [1, 2, 1], "prediction_time": pd.to_datetime(["2020-01-01", "2020-01-01", "2020-05-01"])}
    )
    t = latent_targets(lat, nodes, offsets=(0, 180, 365))
    assert t[0]["burden"].tolist() == [1.0, 9.0, 2.0]  # at the node, inclusive
    # +180 d: 2020-06-29 -> subject 1's row of 2020-05-01; subject 2's record ends on 2020-01-01: unknown
    assert t[180]["burden"].iloc[0] == 2.0 and np.isnan(t[180]["burden"].iloc[1])
    # +365 d from 2020-05-01 = 2021-05-01: after subject 1's last row (2021-03-01): unknown
    assert t[365]["burden"].iloc[0] == 2.0 and np.isnan(t[365]["burden"].iloc[2])
    assert t[180]["reserve"].iloc[2] == 2.0 + LATENT_COLUMNS.index("reserve")  # every latent column comes along
    assert list(t[0].columns) == LATENT_COLUMNS


def test_weighted_r2_is_r2_score_on_resampled_rows():
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(40), 3)
    y = rng.normal(size=subjects.size)
    pred = y + rng.normal(scale=0.7, size=y.size)
    draws = subject_draws(subjects, 10, seed=2)
    reps = weighted_r2(y, pred, row_weights(draws, subjects))
    assert weighted_r2(y, pred)[0] == pytest.approx(r2_score(y, pred), abs=1e-12)
    for b in range(10):
        idx = np.concatenate([np.flatnonzero(subjects == s) for s in np.repeat(draws[0], draws[1][:, b].astype(int))])
        assert reps[b] == pytest.approx(r2_score(y[idx], pred[idx]), abs=1e-12)
    assert np.isnan(weighted_r2(np.ones(5), np.zeros(5))[0])  # no variance: undefined


def probe_inputs(n_subjects: int = 300, seed: int = 0):
    """Two nodes per subject, splits by subject; the target 'burden' is a linear function of feature 0; the
    other latent columns are noise; 'clot_load' is constant."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat(np.arange(n_subjects), 2)
    split = np.array(["train", "tuning", "held_out"])[rng.choice(3, n_subjects, p=[0.6, 0.15, 0.25])]
    splits = np.repeat(split, 2)
    X = rng.normal(size=(subjects.size, 5))
    Y = pd.DataFrame({c: rng.normal(size=subjects.size) for c in LATENT_COLUMNS})
    Y["burden"] = 2.0 * X[:, 0] + rng.normal(scale=0.5, size=subjects.size)
    Y["clot_load"] = 0.0
    later = Y.copy()
    later.iloc[::4] = np.nan  # some nodes' records end before +180 d
    return X, splits, subjects, {0: Y, 180: later}


def test_ridge_read_out_scored_on_held_out_with_the_alpha_chosen_on_tuning():
    X, splits, subjects, targets = probe_inputs()
    out = latent_probe("r", X, splits, subjects, targets, n_bootstrap=100).set_index(["variable", "offset_days"])
    row = out.loc[("burden", 0)]
    # recomputed from scratch with scikit-learn: scaler and ridge fit on train, alpha as chosen, R^2 on held_out
    tr, te = splits == "train", splits == "held_out"
    scaler = StandardScaler().fit(X[tr])
    y = targets[0]["burden"].to_numpy()
    model = Ridge(alpha=row["alpha"]).fit(scaler.transform(X[tr]), y[tr])
    assert row["r2"] == pytest.approx(r2_score(y[te], model.predict(scaler.transform(X[te]))), abs=1e-10)
    assert row["alpha"] in ALPHA_GRID and row["r2"] > 0.9 and row["ci_low"] < row["r2"] < row["ci_high"]
    assert row["n"] == te.sum() and row["n_subjects"] == len(set(subjects[te]))
    tu = splits == "tuning"  # the chosen alpha is the best on tuning, not on held_out
    tune = {a: r2_score(y[tu], Ridge(alpha=a).fit(scaler.transform(X[tr]), y[tr]).predict(scaler.transform(X[tu])))
            for a in ALPHA_GRID}  # fmt: skip
    assert row["alpha"] == max(tune, key=tune.get)
    assert out.loc[("reserve", 0), "r2"] < 0.05  # noise is not read out
    assert np.isnan(out.loc[("clot_load", 0), "r2"]) and "does not vary" in out.loc[("clot_load", 0), "note"]
    assert out.loc[("burden", 180), "n"] == (te & targets[180]["burden"].notna().to_numpy()).sum()


def test_latent_probe_refuses_misaligned_features():
    X, splits, subjects, targets = probe_inputs(50)
    with pytest.raises(ValueError, match="r: 99 feature rows for 100 decision nodes"):
        latent_probe("r", X[:99], splits, subjects, targets)
