"""The bootstrap as one weight matrix (ehr_assets.eval.bootstrap): each weighted metric equals the per-resample
replica on the duplicated rows, and one shared bootstrap gives every metric the CI that one bootstrap per metric
gave (same seed, same draws)."""

import numpy as np
import pytest

from ehr_assets.eval import bootstrap as B
from ehr_assets.eval import metrics as M


def data(n=900, n_subjects=300, seed=0):
    """Rows of ~3 per subject, binary labels and rounded scores (ties), survival times with ties and censoring."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_subjects, n) * 7 + 1000  # subject ids, not 0..k-1
    y = rng.random(n) < 0.3
    p = np.round(np.clip(rng.random(n) * 0.8 + 0.3 * y, 0, 1), 2)
    time = np.round(rng.exponential(100, n)) + 1
    event = rng.random(n) < 0.6
    risk = np.round(-np.log(time) + rng.normal(size=n), 1)
    return g, y, p, time, event, risk


def resamples(groups, seed, n):
    """The row indices of the first ``n`` resamples of metrics.bootstrap_ci with ``seed`` (its own drawing code)."""
    order, starts, counts = M._group_index(groups)  # the function under comparison draws through these
    rng = np.random.default_rng(seed)
    return [M._resample_rows(rng, order, starts, counts) for _ in range(n)]


def test_weights_are_the_bootstrap_draws():
    g = data()[0]
    W = np.vstack(list(B.resample_weights(g, 4, 30, chunk=7)))  # chunks do not change the sequence
    for b, idx in enumerate(resamples(g, 4, 30)):
        np.testing.assert_array_equal(W[b], np.bincount(idx, minlength=len(g)))


def test_each_weighted_metric_equals_the_metric_of_the_duplicated_rows():
    g, y, p, time, event, risk = data()
    W = next(B.resample_weights(g, 2, 12))
    times = np.percentile(time[event], [25, 50, 75])
    ipcw = event / np.random.default_rng(1).uniform(0.4, 1.0, len(g))
    surv = np.random.default_rng(2).uniform(0, 1, (len(g), 3))
    g_rows, g_times = np.random.default_rng(3).uniform(0.5, 1, len(g)), np.array([0.9, 0.8, 0.6])
    weighted = {
        "auroc": (B.auroc_w(y, p, W), lambda i: M.auroc_fast(y[i], p[i])),
        "auprc": (B.auprc_w(y, p, W), lambda i: M.auprc_fast(y[i], p[i])),
        "brier": (B.brier_w(y, p, W), lambda i: M.brier_fast(y[i], p[i])),
        "harrell": (B.harrell_w(event, time, risk, W), lambda i: M.harrell_fast(event[i], time[i], risk[i])),
        "td_auc": (
            B.td_auc_w(event, time, risk, ipcw, times, W),
            lambda i: M.td_auc_fast(event[i], time[i], risk[i], ipcw[i], times),
        ),
        "ibs": (
            B.ibs_w(event, time, surv, g_rows, g_times, times, W),
            lambda i: M.ibs_fast(event[i], time[i], surv[i], g_rows[i], g_times, times),
        ),
    }
    for name, (values, replica) in weighted.items():
        for b, idx in enumerate(resamples(g, 2, 12)):
            assert values[b] == pytest.approx(replica(idx), abs=1e-12), (name, b)


def test_undefined_resamples_are_nan():
    g = np.arange(20)
    y = np.zeros(20, bool)
    y[0] = True  # one positive subject: most resamples miss it
    W = next(B.resample_weights(g, 0, 50))
    values = B.auroc_w(y, np.linspace(0, 1, 20), W)
    assert np.isnan(values[W[:, 0] == 0]).all() and np.isfinite(values[W[:, 0] > 0]).all()
    times = np.array([5.0, 50.0])  # the last evaluation time must lie before the largest drawn time
    t = np.arange(1.0, 21.0) * 3
    ok = B.ibs_w(np.ones(20, bool), t, np.full((20, 2), 0.5), np.ones(20), np.ones(2), times, W)
    assert np.isnan(ok[W[:, -3:].sum(axis=1) == 0]).all()  # no row with time > 50 drawn: undefined


def test_one_bootstrap_gives_each_metric_the_ci_of_its_own_bootstrap():
    g, y, p, time, event, risk = data(seed=5)
    cis = B.bootstrap_cis(
        {
            "auroc": lambda W: B.auroc_w(y, p, W),
            "auprc": lambda W: B.auprc_w(y, p, W),
            "c": lambda W: B.harrell_w(event, time, risk, W),
        },
        g,
        seed=11,
        n_bootstrap=200,
    )
    assert cis["auroc"] == pytest.approx(M.bootstrap_ci(M.auroc_fast, y, p, groups=g, seed=11, n_bootstrap=200))
    assert cis["auprc"] == pytest.approx(M.bootstrap_ci(M.auprc_fast, y, p, groups=g, seed=11, n_bootstrap=200))
    c = M.bootstrap_ci(M.harrell_fast, event, time, risk, groups=g, seed=11, n_bootstrap=200)
    assert cis["c"] == pytest.approx(c, abs=1e-12)
    # defined only when the first row's subject is drawn twice or more (about 1 resample in 4): no interval
    rare = B.bootstrap_cis({"r": lambda W: np.where(W[:, 0] > 1, 0.5, np.nan)}, g, seed=0, n_bootstrap=50)["r"]
    assert all(np.isnan(rare))
    often = B.bootstrap_cis({"r": lambda W: np.where(W[:, 0] > 0, 0.5, np.nan)}, g, seed=0, n_bootstrap=50)["r"]
    assert often == (0.5, 0.5)
