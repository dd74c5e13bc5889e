"""NumPy/SciPy reference kernels behind gc_fast.kernels (backend="reference").

Written for clarity, not speed: the oracle the compiled backends are tested against.
Same positional signatures as the compiled backends. Loss codes: 0 = logistic, 1 = squared.
"""
import numpy as np
import scipy.sparse as sp
from scipy.special import expit

SQUARED = 1  # loss code; 0 is logistic


def dloss(z, y, loss):
    """Derivative of the loss in z, elementwise; expit keeps the logistic one overflow-free."""
    if loss == SQUARED:
        return z - y
    return -y * expit(-y * z)


def coded_gradient_valued(indptr, indices, data, y, row_weight, w, out, loss):
    """out += X.T (row_weight * dloss(X w, y)) with X = csr(data, indices, indptr)."""
    X = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, len(w)))
    out += X.T @ (row_weight * dloss(X @ w, y, loss))


def coded_gradient_binary(indptr, indices, y, row_weight, w, out, loss):
    """The valued kernel with every stored value equal to 1."""
    data = np.ones(len(indices))
    coded_gradient_valued(indptr, indices, data, y, row_weight, w, out, loss)


def decode_combine(out, ptr, idx, coef, values):
    """out[idx[ptr[i]:ptr[i+1]]] += coef[i] * values[ptr[i]:ptr[i+1]] for coef[i] != 0."""
    for i in np.flatnonzero(coef):
        part = slice(ptr[i], ptr[i + 1])
        np.add.at(out, idx[part], coef[i] * values[part])


def gather(w, support, out):
    """out[k] = w[support[k]]."""
    np.take(w, support, out=out)


def nesterov_step(x, y, grad, lr, momentum, l2):
    """x' = y - lr (grad + l2 y); y = x' + momentum (x' - x); x = x' (x and y may alias)."""
    x_new = y - lr * (grad + l2 * y)
    y[:] = x_new + momentum * (x_new - x)
    x[:] = x_new
