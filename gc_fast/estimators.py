"""scikit-learn estimators trained by gradient-coded distributed gradient descent.

    model = GradientCodedLogisticRegression(scheme="crc", n_stragglers=1).fit(X, y)

Objective (as gc_fast.objective and the trainer): mean loss over the rows +
(l2 / 2) ||w||^2, no intercept unless fit_intercept=True, which appends a
column of ones to X (its weight is then regularised like the others).

In a plain process (a notebook, a script) `fit` runs local mode: the workers
are simulated in-process on a virtual clock (gc_fast.local). Started with
`mpirun -n N python script.py`, every rank runs the same script (SPMD):
rank 0 is the master, ranks 1..N-1 the workers, and `fit` returns on every
rank with the same fitted model. Workers compute on their sparse rows with
the trainer's kernels (gc_fast.problems.SparseLinearProblem).

Scikit-learn compatibility: both pass `check_estimator`; the logistic model
is binary (tags.classifier_tags.multi_class = False), both accept sparse X,
neither takes sample weights.
"""
import os

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from .api import resolve_comm
from .data.shards import ShardedDataset, is_sharded
from .driver import Settings, solve
from .objective import (
    lipschitz_logistic,
    lipschitz_squared,
    logistic_smoothness,
    squared_smoothness,
)
from .problems import SparseLinearProblem


class _GradientCodedLinearModel(BaseEstimator):
    """Shared fit of the gradient-coded linear models; see the subclasses."""

    _loss = None

    def __init__(self, *, scheme="crc", n_stragglers=1, n_workers=None, l2=1e-4, max_iter=100,
                 optimizer="nag", lr=None, fit_intercept=False, delay="none", random_state=None,
                 backend="cython", local=None, code_options=None):
        self.scheme = scheme
        self.code_options = code_options
        self.n_stragglers = n_stragglers
        self.n_workers = n_workers
        self.l2 = l2
        self.max_iter = max_iter
        self.optimizer = optimizer
        self.lr = lr
        self.fit_intercept = fit_intercept
        self.delay = delay
        self.random_state = random_state
        self.backend = backend
        self.local = local

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _fit(self, X, y):
        """Run the coded optimiser on (X, y) with y already numeric, or on a sharded set X
        (y None); set the fitted attributes."""
        seed = self._seed()
        if y is None:
            design = X
            lipschitz = logistic_smoothness if self._loss == "logistic" else squared_smoothness

            def inverse_lipschitz():
                return 1.0 / lipschitz(X.sigma_max_squared, X.n_train, self.l2)
        else:
            design = self._design(X)
            lipschitz = lipschitz_logistic if self._loss == "logistic" else lipschitz_squared

            def inverse_lipschitz():
                return 1.0 / lipschitz(design, self.l2, seed=seed)

        lr = inverse_lipschitz if self.lr is None else self.lr
        settings = Settings(lr=lr, scheme=self.scheme, n_stragglers=self.n_stragglers,
                            n_workers=self.n_workers, optimizer=self.optimizer,
                            iterations=self.max_iter, l2=self.l2, delay=self.delay, seed=seed,
                            backend=self.backend, code_options=self.code_options)
        problem = SparseLinearProblem(design, y, self._loss, self.backend)
        result = solve(problem, settings, comm=resolve_comm(self.local, None))
        w = result.w
        self.coef_, self.intercept_ = (w[:-1], w[-1]) if self.fit_intercept else (w, 0.0)
        self.n_iter_ = len(result.history)
        self.history_ = result.history
        self.lr_ = result.lr
        self.result_ = result
        return self

    def _sharded(self, X, y):
        """The sharded set X names (a folder of python -m gc_fast.data shard), or None for
        in-memory X; ValueError if it comes with y or fit_intercept."""
        if not (isinstance(X, (str, os.PathLike)) and is_sharded(X)):
            if y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                                 f"y is None (only a sharded folder X carries its labels)")
            return None
        if y is not None:
            raise ValueError("a sharded folder carries its labels: call fit(folder) without y")
        if self.fit_intercept:
            raise ValueError("fit_intercept=True appends a column to X, which a sharded folder "
                             "cannot: add a column of ones before sharding, fit_intercept=False")
        shards = ShardedDataset(X)
        self.n_features_in_ = shards.n_features
        return shards

    def _design(self, X):
        """X as float64 CSR, with a column of ones appended when fit_intercept."""
        X = sp.csr_matrix(X, dtype=np.float64)
        if self.fit_intercept:
            X = sp.hstack([X, np.ones((X.shape[0], 1))], format="csr")
        X.sort_indices()
        return X

    def _seed(self):
        if self.random_state is None:
            return 0
        if isinstance(self.random_state, (int, np.integer)) and self.random_state >= 0:
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _linear_output(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
        return np.asarray(X @ np.ravel(self.coef_)).ravel() + self.intercept_


class GradientCodedLogisticRegression(ClassifierMixin, _GradientCodedLinearModel):
    """Binary L2-regularised logistic regression trained with gradient coding.

    Minimises mean_i log(1 + exp(-y_i x_i.w)) + (l2/2)||w||^2 with the two
    classes of y mapped to -1 (classes_[0]) and +1 (classes_[1]).

    Parameters
    ----------
    scheme : str
        The gradient code: one of gc_fast.codes.SCHEMES (docs/schemes.md).
    n_stragglers : int
        s, the stragglers tolerated (naive uses 0).
    n_workers : int, optional
        Workers of local mode (default 4); under MPI the workers are ranks
        1..size-1.
    l2 : float
        L2 weight.
    max_iter : int
        Iterations (no early stopping).
    optimizer : {"nag", "gd"}
    lr : float, optional
        Step size; default 1/L, L = 0.25 sigma_max(X)^2 / n_samples + l2.
    fit_intercept : bool
        Append a column of ones (its weight is regularised too).
    delay : str
        A gc_fast.stragglers spec; virtual time in local mode.
    random_state : int, RandomState or None
        Code construction and delay draws.
    backend : {"cython", "numba", "reference"}
        Compute kernels.
    local : {None, True, False}
        None: MPI under mpirun, else local; True: always local; False:
        require MPI.
    code_options : dict, optional
        Extra make_code options: speeds (hetero-crc), split
        (comm-efficient), wait and decoder (the approximate schemes).

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    n_iter_ : int
    history_ : list of dict
        Per-iteration records (gc_fast.driver.RunResult.history).
    lr_ : float
    result_ : gc_fast.driver.RunResult
    n_features_in_ : int
    """

    _loss = "logistic"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X, y=None):
        """Fit on (X, y), or on a sharded folder X (``python -m gc_fast.data shard``: y None,
        its labels are -1 and +1), which no rank loads whole: each worker reads only its
        partitions (the default step size comes from the folder's manifest)."""
        shards = self._sharded(X, y)
        if shards is not None:
            self.classes_ = np.array([-1.0, 1.0])
            return self._fit_binary(shards, None)
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64)
        check_classification_targets(y)
        target_type = type_of_target(y, input_name="y", raise_unknown=True)
        if target_type != "binary":
            raise ValueError(f"Only binary classification is supported. The type of the target "
                             f"is {target_type}.")
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"{type(self).__name__} needs samples of 2 classes, got 1 class")
        return self._fit_binary(X, np.where(y == self.classes_[1], 1.0, -1.0))

    def _fit_binary(self, X, y):
        self._fit(X, y)
        self.coef_ = self.coef_.reshape(1, -1)
        self.intercept_ = np.array([self.intercept_], dtype=np.float64)
        return self

    def decision_function(self, X):
        """x.w + intercept: positive for classes_[1]."""
        return self._linear_output(X)

    def predict_proba(self, X):
        """Columns: probability of classes_[0], of classes_[1]."""
        positive = expit(self.decision_function(X))
        return np.column_stack([1.0 - positive, positive])

    def predict_log_proba(self, X):
        scores = self.decision_function(X)
        return np.column_stack([log_expit(-scores), log_expit(scores)])

    def predict(self, X):
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(np.int64)]


class GradientCodedLinearRegression(RegressorMixin, _GradientCodedLinearModel):
    """L2-regularised least squares (ridge) trained with gradient coding.

    Minimises mean_i 0.5 (x_i.w - y_i)^2 + (l2/2)||w||^2: the same minimiser
    as sklearn.linear_model.Ridge(alpha=l2 * n_samples, fit_intercept=False).

    Parameters
    ----------
    As GradientCodedLogisticRegression, except lr: default 1/L with
    L = sigma_max(X)^2 / n_samples + l2.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
    n_iter_, history_, lr_, result_, n_features_in_
        As GradientCodedLogisticRegression.
    """

    _loss = "squared"

    def fit(self, X, y=None):
        """Fit on (X, y), or on a sharded folder X (``python -m gc_fast.data shard``, y None;
        its labels are those of the folder: -1 and +1)."""
        shards = self._sharded(X, y)
        if shards is not None:
            return self._fit(shards, None)
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, y_numeric=True)
        return self._fit(X, np.asarray(y, dtype=np.float64))

    def predict(self, X):
        return self._linear_output(X)
