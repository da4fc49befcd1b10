"""The numpy ridge Cox fit (ehr_assets.eval.cox) against scikit-survival's own optimizer, its warm-started penalty
path, and the survival probe built on it against the previous implementation (one scikit-survival fit per penalty)
on the test fixtures: the C-index must agree within 0.005."""

import numpy as np
import pytest
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.linear_model.coxph import CoxPHOptimizer

from ehr_assets.data import labels
from ehr_assets.eval import metrics as M
from ehr_assets.eval.baseline import count_features, select_count_vocab
from ehr_assets.eval.cox import CoxPath, fit_path
from ehr_assets.eval.probes import Split
from ehr_assets.eval.survival import survival_at, survival_probe

from ..reference import survival_v1
from ..reference.cohorts import seeded_cohort


def tied_survival(n=1500, k=6, seed=0):
    """Gaussian features, exponential times rounded to whole days (many ties), independent censoring."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    beta = rng.normal(size=k) * 0.4
    t = np.round(rng.exponential(np.exp(-X @ beta)) * 60) + 1
    c = np.round(rng.exponential(1.0, n) * 90) + 1
    return X, t <= c, np.minimum(t, c).astype(float)


@pytest.mark.parametrize("alpha", [0.0, 0.01, 1.0, 100.0])
def test_newton_fit_equals_scikit_survival(alpha):
    X, e, t = tied_survival()
    path = CoxPath(X, e, t)
    w, _ = path.fit(alpha)
    model = CoxPHSurvivalAnalysis(alpha=alpha, ties="breslow", n_iter=100, tol=1e-12).fit(X, M.to_structured(e, t))
    np.testing.assert_allclose(w, model.coef_, rtol=0, atol=1e-6)  # both at the optimum (within tol 1e-9 of loss)
    # loss, gradient and Hessian at an arbitrary point equal scikit-survival's row-by-row ones
    opt = CoxPHOptimizer(X, e, t, np.full(X.shape[1], alpha), "breslow")
    probe = np.random.default_rng(1).normal(size=X.shape[1]) * 0.3
    opt.update(probe)
    grad, hess = path.gradient_hessian(probe, alpha)
    np.testing.assert_allclose(path.loss(probe, alpha), opt.nlog_likelihood(probe), rtol=1e-10)
    np.testing.assert_allclose(grad, opt.gradient, rtol=0, atol=1e-10)
    np.testing.assert_allclose(hess, opt.hessian, rtol=0, atol=1e-10)
    # the Breslow baseline, and the survival curves of held-out rows
    fit = path.model(w, alpha, 1)
    times = np.percentile(t, [10, 40, 80])
    np.testing.assert_allclose(survival_at(fit, X[:50], times), survival_at(model, X[:50], times), atol=1e-6)


def test_the_path_is_warm_started_and_lands_where_cold_fits_land():
    X, e, t = tied_survival(seed=3)
    grid = (0.01, 0.1, 1, 10, 100)
    fits = fit_path(X, e, t, grid)
    path = CoxPath(X, e, t)
    cold = {a: path.fit(a) for a in grid}
    assert list(fits) == [float(a) for a in grid]
    for a in grid:
        np.testing.assert_allclose(fits[a].coef_, cold[a][0], rtol=0, atol=1e-6)
        assert fits[a].alpha == a
    assert sum(f.n_iter for f in fits.values()) < sum(n for _, n in cold.values())


def test_a_failed_fit_is_retried_with_ten_times_the_penalty_as_before():
    """Perfectly separated data: the unpenalized partial likelihood has no maximum, Newton does not converge; the
    previous probe then refit with alpha 0.01 -- the path keeps that behaviour and records the penalty used."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1))
    t = np.argsort(np.argsort(-x[:, 0])).astype(float) + 1  # higher x, earlier event: a perfect ranking
    e = np.ones(200, bool)
    fits = fit_path(x, e, t, (0.0,))
    _, used = survival_v1._fit_cox(x, e, t, 0.0)  # the previous implementation's retry
    assert fits[0.0].alpha == used == 0.01


def count_fixture(name: str, task: str, n: int = 400):
    """(train, tune, test) of a survival task on the count-baseline features of a seeded cohort."""
    c = seeded_cohort(name, n)
    spec = c.project.probes[task]
    lab = labels.task_labels(spec, c.nodes, c.events, c.subjects)
    train_ids = c.subjects.loc[c.subjects["split"] == "train", "subject_id"].to_numpy()
    X = count_features(c.events, c.nodes, select_count_vocab(c.events, train_ids))
    row = {(s, t): i for i, (s, t) in enumerate(zip(c.nodes["subject_id"], c.nodes["prediction_time"]))}
    idx = np.asarray([row[(s, t)] for s, t in zip(lab["subject_id"], lab["prediction_time"])])

    def split(name):
        m = (lab["split"] == name).to_numpy()
        return Split(
            X[idx[m]],
            lab["subject_id"].to_numpy()[m],
            None,
            lab["float_value"].to_numpy()[m],
            lab["boolean_value"].to_numpy()[m],
        )

    return split("train"), split("tuning"), split("held_out")


def gaussian_fixture(seed: int):
    X, e, t = tied_survival(n=900, k=12, seed=seed)
    g = np.arange(900) // 3  # three rows per subject
    parts = [slice(0, 500), slice(500, 650), slice(650, 900)]
    return [Split(X[p], g[p], None, t[p], e[p]) for p in parts]


FIXTURES = {
    "msk survival": lambda: count_fixture("msk", "survival"),
    "msk time_to_progression": lambda: count_fixture("msk", "time_to_progression"),
    "inspect time_to_readmission": lambda: count_fixture("inspect", "time_to_readmission"),
    "gaussian 0": lambda: gaussian_fixture(0),
    "gaussian 1": lambda: gaussian_fixture(1),
}


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_the_probe_c_index_equals_the_previous_implementation(fixture):
    tr, tu, te = FIXTURES[fixture]()
    new = survival_probe(tr, tu, te, seed=0, n_bootstrap=50)
    old = survival_v1.survival_probe(tr, tu, te, seed=0, n_bootstrap=50)
    got = {m.metric: m for m in new.metrics}
    want = {m.metric: m for m in old.metrics}
    assert abs(got["c_index"].value - want["c_index"].value) <= 0.005, fixture
    assert new.params["alpha"] == old.params["alpha"]
    for name in ("c_index", "td_auc", "ibs"):  # the same model and the same resamples: the same CIs
        for a, b in ((got[name].value, want[name].value), (got[name].ci_low, want[name].ci_low)):
            assert a == pytest.approx(b, abs=1e-6, nan_ok=True), (fixture, name)
