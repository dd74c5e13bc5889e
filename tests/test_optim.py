"""The fused optimiser step (three backends) and the optimisers built on it."""
import numpy as np
import pytest

from gc_fast import kernels
from gc_fast.optim import GradientDescent, Nesterov, make_optimizer


def explicit_step(x, y, grad, lr, momentum, l2):
    x_new = y - lr * (grad + l2 * y)
    return x_new, x_new + momentum * (x_new - x)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("size", [0, 1, 7, 1000])
def test_nesterov_step_matches_formula(backend, size):
    rng = np.random.default_rng(size)
    x, y, grad = rng.normal(size=(3, size))
    want_x, want_y = explicit_step(x, y, grad, 0.3, 0.7, 0.01)
    kernels.nesterov_step(x, y, grad, 0.3, 0.7, 0.01, backend=backend)
    np.testing.assert_allclose(x, want_x, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(y, want_y, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_step_with_aliased_point_is_gradient_descent(backend):
    rng = np.random.default_rng(1)
    x, grad = rng.normal(size=(2, 50))
    want = x - 0.5 * (grad + 0.1 * x)
    kernels.nesterov_step(x, x, grad, 0.5, 0.0, 0.1, backend=backend)
    np.testing.assert_allclose(x, want, rtol=1e-15)


def test_nesterov_step_rejects_bad_arrays():
    with pytest.raises(ValueError, match="grad"):
        kernels.nesterov_step(np.zeros(3), np.zeros(3), np.zeros(4), 0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="backend"):
        kernels.nesterov_step(np.zeros(3), np.zeros(3), np.zeros(3), 0.1, 0.0, 0.0, backend="gpu")


def quadratic_gradient(A, b):
    return lambda w: A @ w - b


@pytest.mark.parametrize("name", ["nag", "gd"])
def test_optimisers_converge_on_a_quadratic(name):
    rng = np.random.default_rng(0)
    M = rng.normal(size=(20, 5))
    A, b = M.T @ M / 20, rng.normal(size=5)
    l2 = 0.1
    solution = np.linalg.solve(A + l2 * np.eye(5), b)
    lr = 1.0 / (np.linalg.eigvalsh(A)[-1] + l2)
    optimizer = make_optimizer(name, np.zeros(5), lr, l2=l2)
    gradient = quadratic_gradient(A, b)
    for _ in range(3000):
        optimizer.step(gradient(optimizer.query_point()))
    np.testing.assert_allclose(optimizer.x, solution, rtol=1e-8)


def test_nesterov_matches_textbook_recursion():
    rng = np.random.default_rng(3)
    A, b = np.diag(rng.uniform(0.5, 2.0, 4)), rng.normal(size=4)
    optimizer = Nesterov(np.zeros(4), 0.3, l2=0.05)
    x = y = np.zeros(4)
    for t in range(25):
        optimizer.step(A @ optimizer.query_point() - b)
        x_new = y - 0.3 * (A @ y - b + 0.05 * y)
        y = x_new + t / (t + 3.0) * (x_new - x)
        x = x_new
        np.testing.assert_allclose(optimizer.x, x, rtol=1e-13)


def test_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(4)
    A, b = np.diag(rng.uniform(0.5, 2.0, 6)), rng.normal(size=6)
    run = Nesterov(np.zeros(6), 0.2)
    for _ in range(5):
        run.step(A @ run.query_point() - b)
    resumed = Nesterov(np.ones(6), 0.2)
    resumed.load_state(run.state())
    for _ in range(5):
        run.step(A @ run.query_point() - b)
        resumed.step(A @ resumed.query_point() - b)
    assert np.array_equal(run.x, resumed.x) and np.array_equal(run.y, resumed.y)


def test_bad_learning_rate_and_name():
    with pytest.raises(ValueError, match="learning rate"):
        GradientDescent(np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="nag, gd"):
        make_optimizer("adam", np.zeros(2), 0.1)


@pytest.mark.parametrize("name", ["nag", "gd"])
def test_query_point_kept_in_an_outside_buffer_changes_nothing(name):
    rng = np.random.default_rng(5)
    A, b = np.diag(rng.uniform(0.5, 2.0, 6)), rng.normal(size=6)
    plain = make_optimizer(name, np.zeros(6), 0.2, l2=0.01)
    kept = make_optimizer(name, np.zeros(6), 0.2, l2=0.01)
    plain.step(A @ plain.query_point() - b)
    kept.step(A @ kept.query_point() - b)
    buffer = np.full(6, np.nan)
    kept.keep_query_point_in(buffer)
    for _ in range(10):
        assert kept.query_point() is buffer
        plain.step(A @ plain.query_point() - b)
        kept.step(A @ kept.query_point() - b)
        assert np.array_equal(plain.x, kept.x) and np.array_equal(plain.query_point(), buffer)
