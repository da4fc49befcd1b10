"""Probe fallbacks are written into every metric's note and counted: the probes run on data that forces each one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr_assets.eval.fallbacks import count_fallbacks, probe_fallbacks
from ehr_assets.eval.probe_metrics import evaluate


def cohort(n_subjects: int, seed: int = 0):
    """Nodes (one per subject) with splits, a binary task 'death' (two horizons) and a survival task 'os'."""
    rng = np.random.default_rng(seed)
    sid = np.arange(n_subjects) + 1000
    t = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n_subjects), unit="D")
    split = np.array(["train", "tuning", "held_out"])[rng.choice(3, n_subjects, p=[0.5, 0.2, 0.3])]
    nodes = pd.DataFrame({"subject_id": sid, "prediction_time": t.astype("datetime64[us]")})
    X = rng.normal(size=(n_subjects, 12))
    risk = X[:, 0] - X[:, 1]
    rows = []
    for h in (90, 365):
        y = rng.random(n_subjects) < 1 / (1 + np.exp(-2 * risk))
        rows.append(nodes.assign(task="death", horizon_days=h, boolean_value=y, float_value=np.nan, split=split))
    time = rng.exponential(200 * np.exp(-risk)) + 1
    event = rng.random(n_subjects) < 0.7
    rows.append(nodes.assign(task="os", horizon_days=0, boolean_value=event, float_value=time, split=split))
    labels = pd.concat(rows, ignore_index=True).assign(source_cohort="c")
    return X, nodes, labels


KINDS = {"death": "binary", "os": "survival"}


def notes(metrics: pd.DataFrame, task: str, horizon: int) -> pd.Series:
    return metrics[(metrics["task"] == task) & (metrics["horizon_days"] == horizon)]["note"]


def test_a_clean_probe_records_no_fallback():
    X, nodes, labels = cohort(300)
    m, _ = evaluate("c", "r", X, nodes, labels, KINDS, n_bootstrap=0)
    assert not m["note"].str.contains("fallback").any()
    assert count_fallbacks(m).empty


def test_nan_features_are_named_in_every_metric_of_the_probe_and_counted():
    X, nodes, labels = cohort(300)
    X[:5, 3] = np.nan
    X[7, 0] = np.inf
    m, _ = evaluate("c", "r", X, nodes, labels, KINDS, n_bootstrap=0)
    for task, h in (("death", 90), ("death", 365), ("os", 0)):
        assert notes(m, task, h).str.contains(r"fallback\[nonfinite_features\]: 6 NaN/inf feature value").all()
    counted = count_fallbacks(m).set_index(["recipe", "fallback"])["probes"]
    assert counted.to_dict() == {("r", "nonfinite_features"): 3}  # three probes, not nine metric rows


def test_a_tuning_split_that_cannot_choose_is_named():
    X, nodes, labels = cohort(300)
    tune = labels["split"] == "tuning"
    labels.loc[tune & (labels["task"] == "death"), "boolean_value"] = False  # one class on tuning
    labels.loc[tune & (labels["task"] == "os"), "boolean_value"] = False  # no event on tuning
    m, _ = evaluate("c", "r", X, nodes, labels, KINDS, n_bootstrap=0)
    assert (
        notes(m, "death", 90)
        .str.contains(r"fallback\[tuning_undefined\]: tuning split empty or single-class; C=1")
        .all()
    )
    assert notes(m, "os", 0).str.contains(r"fallback\[tuning_undefined\]: Harrell's C undefined on tuning").all()
    assert count_fallbacks(m)["probes"].sum() == 3


def test_too_few_train_rows_for_the_pca_is_named():
    X, nodes, labels = cohort(300)
    train_os = labels.index[(labels["split"] == "train") & (labels["task"] == "os")]
    labels = labels.drop(train_os[8:])  # 8 train rows: 7 components, not 10
    m, _ = evaluate("c", "r", X, nodes, labels, KINDS, n_bootstrap=0)
    assert notes(m, "os", 0).str.contains(r"fallback\[pca_components\]: 7 PCA components").all()
    assert not notes(m, "death", 90).str.contains("pca_components").any()


def test_cox_and_logistic_fallbacks_read_from_the_probe_params():
    params = {"alpha": 0.01, "alpha_effective": 0.1, "tune_c_index_by_alpha": {0.01: 0.7, 1.0: 0.6}, "tune_note": ""}
    got = probe_fallbacks("survival", params, alpha_grid=(0.01, 0.1, 1, 10))
    assert got == [
        "fallback[cox_penalty_raised]: Cox fit failed at alpha=0.01; refit with alpha=0.1",
        "fallback[cox_alpha_failed]: Cox fit failed for alpha 0.1, 10",
    ]
    assert probe_fallbacks("binary", {"n_iter": 5000, "max_iter": 5000, "C": 100.0, "tune_note": ""}) == [
        "fallback[logistic_not_converged]: stopped at max_iter=5000 (C=100)"
    ]
    assert probe_fallbacks("binary", {"n_iter": 12, "max_iter": 5000, "C": 1.0, "tune_note": ""}) == []


def test_count_fallbacks_counts_each_kind_once_per_probe():
    two = "fallback[nonfinite_features]: 3 NaN/inf feature value(s) set to 0; fallback[cox_penalty_raised]: refit"
    metrics = pd.DataFrame(
        {
            "recipe": ["sft", "sft", "sft", "jepa"],
            "task": ["os", "os", "death", "death"],
            "horizon_days": [0, 0, 90, 90],
            "metric": ["c_index", "ibs", "auroc", "auroc"],
            "note": [two, two, "fallback[nonfinite_features]: 1 NaN/inf feature value(s) set to 0", ""],
        }
    )
    got = count_fallbacks(metrics).set_index(["recipe", "fallback"])["probes"].to_dict()
    assert got == {("sft", "cox_penalty_raised"): 1, ("sft", "nonfinite_features"): 2}
