"""The binary probe's warm-started regularization path (ehr_assets.eval.probes.logistic_path, Newton-Cholesky)
against fits from scratch by another solver (L-BFGS at a tight tolerance), and the probe built on it against the
previous implementation (one L-BFGS fit per C from scratch, default tolerance) on the test fixtures: the AUROC must
agree within 0.005."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from ehr_assets.data import labels
from ehr_assets.eval.baseline import count_features, select_count_vocab
from ehr_assets.eval.probes import Split, binary_probe, logistic_path

from ..reference.cohorts import seeded_cohort

GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100)


def correlated(n=3000, d=30, seed=0):
    """Correlated Gaussian features (an ill-conditioned design, as embeddings are) and a logistic outcome."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) * np.linspace(0.05, 1.0, d)
    X = rng.normal(size=(n, d)) @ A
    X = (X - X.mean(0)) / X.std(0)
    beta = rng.normal(size=d) * 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta - 1.0)))).astype(int)
    return X, y


def cold(X, y, C):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=20000).fit(X, y)


def test_every_fit_of_the_path_is_the_optimum_a_cold_fit_finds():
    X, y = correlated()
    path = logistic_path(X, y, GRID)
    assert list(path) == [float(c) for c in GRID]
    for C in GRID:
        ref = cold(X, y, C)
        assert path[C].C == C
        np.testing.assert_allclose(path[C].predict_proba(X)[:, 1], ref.predict_proba(X)[:, 1], atol=5e-5)
        np.testing.assert_allclose(path[C].coef_, ref.coef_, atol=1e-3, rtol=1e-3)
    # the path is a path: weaker penalties give larger coefficients, each fit is its own object
    norms = [np.linalg.norm(path[C].coef_) for C in GRID]
    assert all(a < b for a, b in zip(norms, norms[1:4]))


def test_the_path_is_warm_started():
    X, y = correlated(seed=1)
    path = logistic_path(X, y, GRID)
    warm_iters = sum(int(np.max(m.n_iter_)) for m in path.values())
    cold_iters = sum(int(np.max(logistic_path(X, y, [C])[C].n_iter_)) for C in GRID)
    assert warm_iters < cold_iters


def previous_probe_auroc(tr: Split, tu: Split, te: Split) -> tuple[float, float]:
    """The previous implementation's choice and score: one L-BFGS fit (tol 1e-4, max_iter 5000) per C from scratch,
    C by tuning AUROC (first of the grid on ties), held_out AUROC of the float32 probabilities."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(tr.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = {C: LogisticRegression(C=C, max_iter=5000).fit(sc.transform(tr.X), tr.y) for C in GRID}
    tune = {C: roc_auc_score(tu.y, m.predict_proba(sc.transform(tu.X))[:, 1]) for C, m in fits.items()}
    best = max(tune, key=lambda c: (tune[c], -GRID.index(c)))
    p = fits[best].predict_proba(sc.transform(te.X))[:, 1].astype(np.float32)
    return best, roc_auc_score(te.y, p)


def count_fixture(name: str, task: str, horizon: int, n: int = 400):
    c = seeded_cohort(name, n)
    lab = labels.task_labels(c.project.probes[task], c.nodes, c.events, c.subjects)
    lab = lab[lab["horizon_days"] == horizon]
    train_ids = c.subjects.loc[c.subjects["split"] == "train", "subject_id"].to_numpy()
    X = count_features(c.events, c.nodes, select_count_vocab(c.events, train_ids))
    row = {(s, t): i for i, (s, t) in enumerate(zip(c.nodes["subject_id"], c.nodes["prediction_time"]))}
    idx = np.asarray([row[(s, t)] for s, t in zip(lab["subject_id"], lab["prediction_time"])])

    def split(part):
        m = (lab["split"] == part).to_numpy()
        return Split(X[idx[m]], lab["subject_id"].to_numpy()[m], lab["boolean_value"].to_numpy()[m].astype(int))

    return split("train"), split("tuning"), split("held_out")


def gaussian_fixture(seed: int):
    X, y = correlated(n=1500, d=20, seed=seed)
    g = np.arange(1500) // 3
    return [Split(X[p], g[p], y[p]) for p in (slice(0, 900), slice(900, 1100), slice(1100, 1500))]


FIXTURES = {
    "msk mortality@365": lambda: count_fixture("msk", "mortality", 365),
    "msk progression@180": lambda: count_fixture("msk", "progression", 180),
    "inspect readmission@180": lambda: count_fixture("inspect", "readmission", 180),
    "gaussian 0": lambda: gaussian_fixture(0),
    "gaussian 1": lambda: gaussian_fixture(1),
}


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_the_probe_auroc_equals_the_previous_implementation(fixture):
    tr, tu, te = FIXTURES[fixture]()
    assert len(np.unique(tr.y)) == 2 and len(np.unique(te.y)) == 2, fixture
    res = binary_probe(tr, tu, te, seed=0, n_bootstrap=0)
    best, old_auroc = previous_probe_auroc(tr, tu, te)
    got = {m.metric: m.value for m in res.metrics}
    assert abs(got["auroc"] - old_auroc) <= 0.005, (fixture, got["auroc"], old_auroc, res.params["C"], best)
