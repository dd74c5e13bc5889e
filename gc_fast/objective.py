"""Reference objectives, gradients and metrics shared by trainers, tests and benchmarks.

Losses are means over rows plus (l2 / 2) ||w||^2, with labels in {-1, +1}
for the logistic loss. These are the single-machine truth that coded
distributed gradients are checked against.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit


def logistic_loss(X, y, w, l2: float) -> float:
    """mean log(1 + exp(-y Xw)) + (l2/2)||w||^2, overflow-free via logaddexp."""
    margins = y * (X @ w)
    return float(np.mean(np.logaddexp(0.0, -margins)) + 0.5 * l2 * np.dot(w, w))


def logistic_gradient(X, y, w, l2: float) -> np.ndarray:
    """Gradient of logistic_loss with respect to w."""
    margins = y * (X @ w)
    return X.T @ (-y * expit(-margins)) / X.shape[0] + l2 * w


def squared_loss(X, y, w, l2: float) -> float:
    """mean 0.5 (Xw - y)^2 + (l2/2)||w||^2."""
    residuals = X @ w - y
    return float(0.5 * np.mean(residuals**2) + 0.5 * l2 * np.dot(w, w))


def squared_gradient(X, y, w, l2: float) -> np.ndarray:
    """Gradient of squared_loss with respect to w."""
    return X.T @ (X @ w - y) / X.shape[0] + l2 * w


def auc(y, scores) -> float:
    """ROC AUC of scores for labels y; nan when y holds a single class (AUC undefined)."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # imported here: sklearn costs ~1 s per rank

    return float(roc_auc_score(y, scores))


def _largest_singular_value_squared(X, n_iter: int, seed: int) -> float:
    """sigma_max(X)^2 by power iteration on X^T X (approaches it from below)."""
    return largest_eigenvalue_of_gram(lambda vector: X.T @ (X @ vector), X.shape[1], n_iter, seed)


def largest_eigenvalue_of_gram(gram_product, n_features: int, n_iter: int, seed: int) -> float:
    """sigma_max(X)^2 by power iteration, given gram_product(v) = X^T (X v) (which may sum over
    row blocks, as a sharded set's writer does): the start vector is drawn from `seed`."""
    vector = np.random.default_rng(seed).normal(size=n_features)
    vector /= np.linalg.norm(vector)
    estimate = 0.0
    for _ in range(n_iter):
        product = gram_product(vector)
        estimate = float(np.linalg.norm(product))
        if estimate == 0.0:
            return 0.0
        vector = product / estimate
    return estimate


def lipschitz_logistic(X, l2: float, n_iter: int = 20, seed: int = 0) -> float:
    """Smoothness constant of logistic_loss: 0.25 sigma_max(X)^2 / n_rows + l2 (by power
    iteration)."""
    return logistic_smoothness(_largest_singular_value_squared(X, n_iter, seed), X.shape[0], l2)


def logistic_smoothness(sigma_max_squared: float, n_rows: int, l2: float) -> float:
    """Smoothness constant of logistic_loss from sigma_max(X)^2 (as a sharded set's manifest
    holds it): 0.25 sigma_max_squared / n_rows + l2."""
    return 0.25 * sigma_max_squared / n_rows + l2


def lipschitz_squared(X, l2: float, n_iter: int = 20, seed: int = 0) -> float:
    """Smoothness constant of squared_loss: sigma_max(X)^2 / n_rows + l2 (by power iteration)."""
    return squared_smoothness(_largest_singular_value_squared(X, n_iter, seed), X.shape[0], l2)


def squared_smoothness(sigma_max_squared: float, n_rows: int, l2: float) -> float:
    """Smoothness constant of squared_loss from sigma_max(X)^2: sigma_max_squared / n_rows + l2."""
    return sigma_max_squared / n_rows + l2
