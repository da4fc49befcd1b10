"""Paired subject-level bootstrap: the weighted metrics against scikit-learn / scikit-survival on explicitly resampled
rows, the interval against scipy's bootstrap and DeLong's variance (MLstatkit), and the paired_differences table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from ehr_assets.eval import paired
from ehr_assets.eval.resample import percentile_ci, row_weights, subject_draws, weighted_auroc, weighted_harrell


def resampled_rows(draws, subjects: np.ndarray, b: int) -> np.ndarray:
    """Row indices of replicate ``b`` built the slow, obvious way: each drawn subject's rows, once per draw."""
    uniq, counts = draws
    rows = [np.flatnonzero(subjects == s) for s, c in zip(uniq, counts[:, b]) for _ in range(int(c))]
    return np.concatenate(rows)


def clustered(n_subjects: int, rng: np.random.Generator):
    """1-4 rows per subject; scores rounded so that ties occur."""
    subjects = np.repeat(np.arange(n_subjects) * 7 + 3, rng.integers(1, 5, n_subjects))
    x = rng.normal(size=subjects.size)
    y = rng.random(subjects.size) < 1 / (1 + np.exp(-1.5 * x))
    return subjects, y, np.round(x + rng.normal(scale=0.7, size=x.size), 1)


def test_weighted_auroc_is_roc_auc_score_on_the_resampled_rows():
    rng = np.random.default_rng(0)
    subjects, y, score = clustered(60, rng)
    draws = subject_draws(subjects, 25, seed=3)
    reps = weighted_auroc(y, score, row_weights(draws, subjects))
    assert weighted_auroc(y, score)[0] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    for b in range(25):
        idx = resampled_rows(draws, subjects, b)
        assert reps[b] == pytest.approx(roc_auc_score(y[idx], score[idx]), abs=1e-12), b


def test_weighted_harrell_is_sksurv_on_the_resampled_rows():
    rng = np.random.default_rng(1)
    subjects, _, risk = clustered(50, rng)
    time = np.round(rng.exponential(100, subjects.size))  # tied times, some censored at an event's time
    event = rng.random(subjects.size) < 0.6
    draws = subject_draws(subjects, 20, seed=5)
    reps = weighted_harrell(event, time, risk, row_weights(draws, subjects))
    ref = concordance_index_censored(event, time, risk)[0]
    assert weighted_harrell(event, time, risk)[0] == pytest.approx(ref, abs=1e-12)
    for b in range(20):
        idx = resampled_rows(draws, subjects, b)
        assert reps[b] == pytest.approx(concordance_index_censored(event[idx], time[idx], risk[idx])[0], abs=1e-12)


def test_draws_resample_subjects_and_are_seeded():
    subjects = np.array([5, 5, 5, 9, 2, 2])
    draws = subject_draws(subjects, 400, seed=0)
    assert list(draws[0]) == [2, 5, 9] and (draws[1].sum(axis=0) == 3).all()  # three subjects drawn per replicate
    W = row_weights(draws, subjects)
    assert (W[0] == W[1]).all() and (W[1] == W[2]).all() and (W[4] == W[5]).all()  # a subject's rows move together
    assert np.array_equal(subject_draws(subjects, 400, seed=0)[1], draws[1])
    assert not np.array_equal(subject_draws(subjects, 400, seed=1)[1], draws[1])
    assert abs(draws[1].mean() - 1.0) < 0.05  # each subject drawn once on average
    with pytest.raises(ValueError, match="not among the drawn subjects"):
        row_weights(draws, np.array([5, 4]))


def two_scores(n: int, seed: int):
    """One row per subject; two correlated scores of one binary outcome (a shared signal and own noise)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-1.2 * signal))
    a = signal + rng.normal(scale=1.0, size=n)
    b = signal + 0.6 * a + rng.normal(scale=1.0, size=n)
    return y, a, b


def paired_reps(y, a, b, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    subjects = np.arange(y.size)
    W = row_weights(subject_draws(subjects, n_bootstrap, seed), subjects)
    return weighted_auroc(y, b, W) - weighted_auroc(y, a, W)


def test_paired_interval_matches_scipy_bootstrap():
    """With one row per subject the subject bootstrap is scipy's paired percentile bootstrap: same interval up to
    Monte Carlo error (the AUROC inside scipy's resampling is the rank formula, tested against scikit-learn)."""
    from ehr_assets.eval.metrics import auroc_fast

    y, a, b = two_scores(300, seed=2)
    lo, hi, _ = percentile_ci(paired_reps(y, a, b, 3000))

    def delta(yy, aa, bb):
        return auroc_fast(yy, bb) - auroc_fast(yy, aa)

    ref = stats.bootstrap(
        (y, a, b), delta, paired=True, vectorized=False, n_resamples=3000, method="percentile", rng=7
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.006) and hi == pytest.approx(ref.high, abs=0.006)


def test_paired_spread_matches_delong_and_is_narrower_than_unpaired():
    """DeLong's variance of the AUROC difference of two correlated scores (MLstatkit, an independent method) gives
    the paired bootstrap's standard error; resampling the two recipes independently would not."""
    from MLstatkit import Delong_test

    y, a, b = two_scores(500, seed=4)
    z, p, *_, info = Delong_test(y.astype(int), a, b, return_ci=True, return_auc=True)
    se_delong = float(np.sqrt(info["var_diff"]))
    reps = paired_reps(y, a, b, 2000)
    assert np.std(reps, ddof=1) == pytest.approx(se_delong, rel=0.12)
    diff = roc_auc_score(y, b) - roc_auc_score(y, a)
    assert z == pytest.approx(diff / se_delong, rel=1e-6)  # DeLong's z is (AUC_B - AUC_A) / SE
    subjects = np.arange(y.size)
    W1 = row_weights(subject_draws(subjects, 2000, 0), subjects)
    W2 = row_weights(subject_draws(subjects, 2000, 1), subjects)
    unpaired = weighted_auroc(y, b, W2) - weighted_auroc(y, a, W1)
    assert np.std(unpaired, ddof=1) > 1.3 * se_delong


# ------------------------------------------------------------------------------------------------- the table
def predictions(seed: int = 0, n_subjects: int = 120) -> pd.DataFrame:
    """probe_predictions rows of one cohort: two binary tasks (90 and 730 d) and a survival task; recipes
    count_baseline, oracle, sft, jepa (= sft's scores plus noise), sft_seed1 and jepa_seed1."""
    rng = np.random.default_rng(seed)
    sid = np.repeat(np.arange(n_subjects) + 100, 2)
    t = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.tile([0, 200], n_subjects), unit="D")
    latent = rng.normal(size=sid.size)
    frames = []
    noise = {r: rng.normal(size=sid.size) for r in ("count_baseline", "sft", "jepa", "sft_seed1", "jepa_seed1")}
    scale = {"count_baseline": 1.5, "oracle": 0.0, "sft": 1.0, "jepa": 1.0, "sft_seed1": 1.1, "jepa_seed1": 1.0}
    for task, h in (("mortality", 90), ("mortality", 730), ("survival", 0)):
        y = rng.random(sid.size) < 1 / (1 + np.exp(-2 * latent))
        time = np.round(rng.exponential(300 * np.exp(-latent))) + 1
        for r, k in scale.items():
            s = latent + k * noise.get(r, 0.0)
            frames.append(
                pd.DataFrame(
                    {
                        "recipe": r,
                        "task": task,
                        "horizon_days": h,
                        "subject_id": sid,
                        "prediction_time": t,
                        "boolean_value": y,
                        "float_value": time if h == 0 else np.nan,
                        "predicted_boolean_probability": s if h else np.nan,
                        "predicted_risk": s if h == 0 else np.nan,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_paired_differences_table_values():
    preds = predictions()
    t = paired.paired_differences(preds, n_bootstrap=300)
    task = t[t["scope"] == "task"].set_index(["statistic", "task", "horizon_days", "recipe", "reference"])
    one = preds[(preds["task"] == "mortality") & (preds["horizon_days"] == 730)]

    def auc(r):
        d = one[one["recipe"] == r]
        return roc_auc_score(d["boolean_value"], d["predicted_boolean_probability"])

    row = task.loc[("delta", "mortality", 730, "jepa", "sft")]
    assert row["estimate"] == pytest.approx(auc("jepa") - auc("sft"), abs=1e-12)
    assert row["recipe_value"] == pytest.approx(auc("jepa"), abs=1e-12) and row["n"] == 240
    assert row["n_subjects"] == 120 and row["n_boot"] == 300 and row["ci_low"] <= row["estimate"] <= row["ci_high"]
    base = task.loc[("delta", "mortality", 730, "sft", "count_baseline")]
    assert base["estimate"] == pytest.approx(auc("sft") - auc("count_baseline"), abs=1e-12)
    gc = task.loc[("gap_closed", "mortality", 730, "sft", "count_baseline")]
    gap = auc("oracle") - auc("count_baseline")
    assert gc["estimate"] == pytest.approx((auc("sft") - auc("count_baseline")) / gap, abs=1e-12)
    # its CI: the ratio recomputed in every replicate (the replicate's own gap), the slow way on resampled rows
    draws = subject_draws(preds["subject_id"].to_numpy(), 300, 0)
    by = {r: one[one["recipe"] == r] for r in ("sft", "count_baseline", "oracle")}
    reps = []
    for b in range(300):
        a = {}
        for r, d in by.items():
            rows = d.iloc[resampled_rows(draws, d["subject_id"].to_numpy(), b)]
            a[r] = roc_auc_score(rows["boolean_value"], rows["predicted_boolean_probability"])
        reps.append((a["sft"] - a["count_baseline"]) / (a["oracle"] - a["count_baseline"]))
    assert (gc["ci_low"], gc["ci_high"]) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), abs=1e-9)
    # a seed replicate is compared with the same seed's sft; the baseline and the oracle are not compared with sft
    assert ("delta", "mortality", 730, "jepa_seed1", "sft_seed1") in task.index
    assert not any(ix[3] in ("count_baseline", "oracle", "sft_seed1") and ix[4] == "sft" for ix in task.index)
    surv = preds[(preds["task"] == "survival") & (preds["recipe"].isin(["jepa", "sft"]))]
    c = {
        r: concordance_index_censored(d["boolean_value"], d["float_value"], d["predicted_risk"])[0]
        for r, d in surv.groupby("recipe")
    }
    s = task.loc[("delta", "survival", 0, "jepa", "sft")]
    assert s["metric"] == "c_index" and s["estimate"] == pytest.approx(c["jepa"] - c["sft"], abs=1e-12)


def test_pooled_rows_pool_the_long_horizons_on_shared_draws():
    preds = predictions(seed=1)
    t = paired.paired_differences(preds, n_bootstrap=300)
    task = t[(t["scope"] == "task") & (t["statistic"] == "delta")].set_index(["task", "horizon_days", "recipe"])
    pooled = t[(t["scope"] == "pooled_long") & (t["statistic"] == "delta")].set_index(["recipe", "reference"])
    # only the binary task at 730 d is long: the pooled delta is that task's delta (90 d and survival are not)
    assert pooled.loc[("jepa", "sft"), "estimate"] == pytest.approx(
        task[task["reference"] == "sft"].loc[("mortality", 730, "jepa"), "estimate"], abs=1e-12
    )
    assert pooled.loc[("jepa", "sft"), "n"] == 1
    # a recipe equal to its reference has a delta of exactly 0 in every replicate
    same = preds[preds["recipe"] == "sft"].assign(recipe="twin")
    t2 = paired.paired_differences(pd.concat([preds, same]), references=("sft",), n_bootstrap=200)
    twin = t2[(t2["recipe"] == "twin") & (t2["statistic"] == "delta")]
    assert (twin[["estimate", "ci_low", "ci_high"]].to_numpy() == 0).all() and (twin["p_value"] == 1).all()
    # the pooled gap closed: sum(recipe - baseline) / sum(oracle - baseline) over the three tasks, from scratch
    gaps = t[(t["statistic"] == "gap_closed") & (t["scope"] == "pooled_all")].set_index("recipe")
    assert gaps.loc["jepa", "n"] == 3
    sub = preds[preds["recipe"].isin(["count_baseline", "oracle", "jepa"])]
    metric = {}
    for (task_, h, r), d in sub.groupby(["task", "horizon_days", "recipe"]):
        if h:
            metric[(task_, h, r)] = roc_auc_score(d["boolean_value"], d["predicted_boolean_probability"])
        else:
            metric[(task_, h, r)] = concordance_index_censored(
                d["boolean_value"], d["float_value"], d["predicted_risk"]
            )[0]
    keys_ = {(a, b) for a, b, _ in metric}
    expected = sum(metric[(*k, "jepa")] - metric[(*k, "count_baseline")] for k in keys_) / sum(
        metric[(*k, "oracle")] - metric[(*k, "count_baseline")] for k in keys_
    )
    assert gaps.loc["jepa", "estimate"] == pytest.approx(expected, abs=1e-12)


def test_an_unfit_probe_is_left_out_and_named():
    preds = predictions(seed=2)
    unfit = (preds["recipe"] == "jepa") & (preds["task"] == "mortality") & (preds["horizon_days"] == 90)
    preds.loc[unfit, "predicted_boolean_probability"] = np.nan
    t = paired.paired_differences(preds, n_bootstrap=100)
    rows = t[(t["task"] == "mortality") & (t["horizon_days"] == 90)]
    assert "jepa" not in set(rows["recipe"]) and rows["note"].str.contains("no predictions from jepa").all()


def test_reference_rules():
    recipes = ["count_baseline", "sft", "jepa", "sft_seed1", "jepa_seed1", "jepa_seed2", "oracle", "oracle_no_rate"]
    assert paired.reference_for("jepa", "sft", recipes) == "sft"
    assert paired.reference_for("jepa_seed1", "sft", recipes) == "sft_seed1"
    assert paired.reference_for("jepa_seed2", "sft", recipes) == "sft"  # no sft_seed2: the primary sft
    assert paired.reference_for("sft_seed1", "sft", recipes) is None
    assert paired.reference_for("oracle_no_rate", "sft", recipes) is None
    assert paired.reference_for("oracle_no_rate", "count_baseline", recipes) == "count_baseline"
    assert paired.reference_for("jepa", "sft", ["jepa", "count_baseline"]) is None
