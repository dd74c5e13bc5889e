"""The scikit-learn estimators: sklearn's own checks, its optimum, sparse input, MPI (SPMD) fits."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import MPIEXEC, mpi_env
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks

from gc_fast import GradientCodedLinearRegression, GradientCodedLogisticRegression
from gc_fast.codes import make_code
from gc_fast.data import amazon_like
from gc_fast.objective import logistic_loss, squared_loss
from gc_fast.simulate import (
    DEFAULT_COSTS_PATH,
    CostModel,
    build_workload,
    compute_factors,
    simulate_iterations,
    straggler_delays,
)
from gc_fast.stragglers import parse_delay

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STRAGGLERS = "count:k=1,seconds=0.02"


@parametrize_with_checks([
    GradientCodedLogisticRegression(),
    GradientCodedLinearRegression(),
    GradientCodedLogisticRegression(fit_intercept=True, scheme="frc", delay=STRAGGLERS, max_iter=50),
])
def test_scikit_learn_checks(estimator, check):
    check(estimator)


def standardised(loader):
    X, y = loader(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y


@pytest.fixture(scope="module")
def cancer():
    return standardised(load_breast_cancer)


@pytest.fixture(scope="module")
def diabetes():
    X, y = standardised(load_diabetes)
    return X, y - y.mean()


def test_logistic_reaches_scikit_learn_optimum(cancer):
    """Same objective, scikit-learn's solver as the oracle: mean loss + (l2/2)||w||^2, bias column."""
    X, y = cancer
    l2 = 1e-2
    model = GradientCodedLogisticRegression(l2=l2, max_iter=800, fit_intercept=True,
                                            delay=STRAGGLERS).fit(X, y)
    design = np.hstack([X, np.ones((len(X), 1))])
    signs = np.where(y == 1, 1.0, -1.0)
    oracle = LogisticRegression(C=1.0 / (l2 * len(X)), fit_intercept=False, tol=1e-12,
                                max_iter=10000).fit(design, signs)
    optimum = logistic_loss(design, signs, oracle.coef_.ravel(), l2)
    ours = logistic_loss(design, signs, np.append(model.coef_.ravel(), model.intercept_), l2)
    assert abs(ours - optimum) <= 1e-6 * optimum
    assert model.n_iter_ == 800 and len(model.history_) == 800
    assert model.result_.n_skipped > 0


def test_linear_reaches_ridge_optimum(diabetes):
    X, y = diabetes
    l2 = 1e-2
    model = GradientCodedLinearRegression(l2=l2, max_iter=1000, delay=STRAGGLERS).fit(X, y)
    oracle = Ridge(alpha=l2 * len(X), fit_intercept=False, tol=1e-14).fit(X, y)
    optimum = squared_loss(X, y, oracle.coef_, l2)
    assert abs(squared_loss(X, y, model.coef_, l2) - optimum) <= 1e-6 * optimum
    np.testing.assert_allclose(model.predict(X), X @ model.coef_, rtol=1e-12)


@pytest.mark.parametrize("Model", [GradientCodedLogisticRegression, GradientCodedLinearRegression])
def test_coded_fit_equals_uncoded_fit_and_sparse_equals_dense(cancer, Model):
    X, y = cancer
    common = dict(max_iter=60, fit_intercept=True)
    uncoded = Model(scheme="naive", **common).fit(X, y)
    coded = Model(scheme="crc", n_stragglers=2, n_workers=5, delay="count:k=2,seconds=0.1",
                  **common).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(coded.coef_, uncoded.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(coded.intercept_, uncoded.intercept_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("delay", ["fixed:p=0.3,seconds=0.01", "slow:workers=2,factor=5"])
def test_local_mode_times_are_the_simulators(delay):
    """Local mode's virtual clock is gc_fast.simulate's model of the same run, built independently."""
    data = amazon_like(n_train=400, n_test=1, n_features=300, seed=1)
    model = GradientCodedLogisticRegression(scheme="crc", n_workers=4, delay=delay, max_iter=30,
                                            random_state=0).fit(data.X_train, data.y_train)
    costs = CostModel.load(DEFAULT_COSTS_PATH) if DEFAULT_COSTS_PATH.exists() else CostModel()
    code = make_code("crc", 4, 1, seed=0)
    workload = build_workload("crc", 4, 1, data.X_train, code=code)
    delay_model = parse_delay(delay)
    times, arrival = simulate_iterations(workload, costs, straggler_delays(delay_model, 0, 30, 4),
                                         compute_factor=compute_factors(delay_model, 4), code=code)
    np.testing.assert_allclose(model.result_.times, times, rtol=1e-12)
    for record, row in zip(model.history_, arrival, strict=True):
        np.testing.assert_array_equal(record["arrival"][record["used"]], row[record["used"]])


def test_logistic_maps_any_two_labels(cancer):
    X, y = cancer
    labels = np.array(["benign", "malignant"])[y]
    model = GradientCodedLogisticRegression(max_iter=50, fit_intercept=True).fit(X, labels)
    np.testing.assert_array_equal(model.classes_, ["benign", "malignant"])
    assert model.coef_.shape == (1, X.shape[1]) and model.intercept_.shape == (1,)
    probabilities = model.predict_proba(X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(X), model.classes_[probabilities.argmax(axis=1)])
    assert model.score(X, labels) > 0.95
    assert model.get_params()["fit_intercept"] is True
    assert clone(model).set_params(max_iter=7).get_params()["max_iter"] == 7


def test_clear_errors(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match="at least 4 samples, got 3 samples"):
        GradientCodedLinearRegression().fit(X[:3], y[:3])
    with pytest.raises(ValueError, match="Only binary classification"):
        GradientCodedLogisticRegression().fit(X, np.arange(len(y)) % 3)
    with pytest.raises(ValueError, match="divide"):
        GradientCodedLogisticRegression(scheme="frc", n_stragglers=2).fit(X, y)


MPI_SCRIPT = '''
import numpy as np
from sklearn.datasets import load_breast_cancer
from gc_fast import GradientCodedLinearRegression, GradientCodedLogisticRegression

X, y = load_breast_cancer(return_X_y=True)
X = (X - X.mean(axis=0)) / X.std(axis=0)
common = dict(scheme="crc", n_stragglers=1, max_iter=40, fit_intercept=True, delay="{delay}")
logistic = GradientCodedLogisticRegression(**common).fit(X, y)
linear = GradientCodedLinearRegression(**common).fit(X, y.astype(float))
np.savez(f"rank{{logistic.result_.rank}}.npz", logistic=logistic.coef_, linear=linear.coef_,
         intercepts=[logistic.intercept_[0], linear.intercept_], mode=logistic.result_.mode,
         skipped=logistic.result_.n_skipped, n_workers=logistic.result_.code.n_workers)
'''


def test_fit_under_mpi_matches_local_fit_on_every_rank(tmp_path, cancer):
    (tmp_path / "script.py").write_text(MPI_SCRIPT.format(delay=STRAGGLERS))
    finished = subprocess.run([MPIEXEC, "-n", "4", sys.executable, "script.py"], cwd=tmp_path,
                              env=mpi_env(), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(4)]
    assert str(ranks[0]["mode"]) == "mpi" and int(ranks[0]["n_workers"]) == 3
    assert int(ranks[0]["skipped"]) > 0
    for other in ranks[1:]:
        for key in ("logistic", "linear", "intercepts"):
            np.testing.assert_array_equal(other[key], ranks[0][key])
    X, y = cancer
    common = dict(scheme="crc", n_stragglers=1, max_iter=40, fit_intercept=True, n_workers=3)
    logistic = GradientCodedLogisticRegression(**common).fit(X, y)
    linear = GradientCodedLinearRegression(**common).fit(X, y.astype(float))
    np.testing.assert_allclose(ranks[0]["logistic"], logistic.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ranks[0]["linear"], linear.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ranks[0]["intercepts"], [logistic.intercept_[0], linear.intercept_],
                               rtol=1e-9, atol=1e-12)


def test_estimator_example_runs():
    finished = subprocess.run([sys.executable, str(EXAMPLES / "estimator.py")], cwd=EXAMPLES,
                              env=mpi_env(), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "test accuracy 0.9" in finished.stdout and "local mode" in finished.stdout


@pytest.mark.parametrize("scheme, options", [
    ("comm-efficient", {"split": 2}),
    ("hetero-crc", {"speeds": [1.0, 1.0, 1.0, 0.5, 0.5]}),
])
def test_exact_schemes_beyond_the_paper_fit_as_naive(cancer, scheme, options):
    X, y = cancer
    common = dict(max_iter=60, fit_intercept=True)
    uncoded = GradientCodedLogisticRegression(scheme="naive", **common).fit(X, y)
    coded = GradientCodedLogisticRegression(scheme=scheme, n_stragglers=1, n_workers=5,
                                            code_options=options, delay="count:k=1,seconds=0.1",
                                            **common).fit(X, y)
    np.testing.assert_allclose(coded.coef_, uncoded.coef_, rtol=1e-9, atol=1e-12)


def test_an_approximate_scheme_gets_near_the_optimum_and_reports_its_error(diabetes):
    X, y = diabetes
    l2 = 1e-2
    model = GradientCodedLinearRegression(scheme="expander", n_stragglers=2, n_workers=8,
                                          l2=l2, max_iter=1000, delay=STRAGGLERS,
                                          code_options={"wait": 6}).fit(X, y)
    oracle = Ridge(alpha=l2 * len(X), fit_intercept=False, tol=1e-14).fit(X, y)
    optimum = squared_loss(X, y, oracle.coef_, l2)
    errors = [record["decode_error"] for record in model.history_]
    assert max(errors) > 0  # inexact decodes happened ...
    assert squared_loss(X, y, model.coef_, l2) <= 1.05 * optimum  # ... and it still converged
