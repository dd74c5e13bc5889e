"""Numba kernels behind gc_fast.kernels (backend="numba"): twins of kernels/_kernels.pyx.

No validation here: gc_fast.kernels checks dtypes and lengths before calling in.
Loss codes: 0 = logistic, 1 = squared.

Compiled code is cached on disk. Numba writes the cache next to this file, or,
where the package is installed read-only, under the user's cache directory
(NUMBA_CACHE_DIR overrides both); if no writable place exists at all the
kernels are compiled per process instead of failing at import.
"""
import math
import warnings

import numpy as np
from numba import njit

SQUARED = 1  # loss code; 0 is logistic

# Numba wraps negative indices (two extra instructions per access) unless the index is
# unsigned, so the loops index through uint64 values; mixing them with signed ints would
# promote to float64, hence the unsigned constants.
_U = np.uint64
_U1, _U2, _U3, _U4 = _U(1), _U(2), _U(3), _U(4)


def _jit(func):
    """njit with an on-disk cache, or without one where no cache directory is writable."""
    try:
        return njit(cache=True, nogil=True, fastmath=False)(func)
    except RuntimeError as error:
        if "no locator available" not in str(error):
            raise
        warnings.warn("gc_fast: no writable numba cache directory, the numba kernels compile "
                      "in every process; set NUMBA_CACHE_DIR to a writable directory",
                      stacklevel=2)
        return njit(cache=False, nogil=True, fastmath=False)(func)


@_jit
def _dloss(z, y, loss):
    """Derivative of the loss in z; the logistic one never overflows."""
    if loss == SQUARED:
        return z - y
    t = y * z
    if t >= 0.0:
        e = math.exp(-t)
        return -y * e / (1.0 + e)
    return -y / (1.0 + math.exp(t))


@_jit
def coded_gradient_binary(indptr, indices, y, row_weight, w, out, loss):
    """out += X.T (row_weight * dloss(X w, y)) for a binary CSR X (values never read)."""
    for r in range(indptr.shape[0] - 1):
        start = _U(indptr[r])
        end = _U(indptr[r + 1])
        # Four partial sums break the add latency chain (the order is fixed: deterministic).
        z0 = z1 = z2 = z3 = 0.0
        p = start
        while p + _U4 <= end:
            z0 += w[_U(indices[p])]
            z1 += w[_U(indices[p + _U1])]
            z2 += w[_U(indices[p + _U2])]
            z3 += w[_U(indices[p + _U3])]
            p += _U4
        while p < end:
            z0 += w[_U(indices[p])]
            p += _U1
        d = row_weight[r] * _dloss((z0 + z1) + (z2 + z3), y[r], loss)
        for p in range(start, end):
            out[_U(indices[p])] += d


@_jit
def coded_gradient_valued(indptr, indices, data, y, row_weight, w, out, loss):
    """out += X.T (row_weight * dloss(X w, y)) for a CSR X with stored values."""
    for r in range(indptr.shape[0] - 1):
        start = _U(indptr[r])
        end = _U(indptr[r + 1])
        z0 = z1 = z2 = z3 = 0.0
        p = start
        while p + _U4 <= end:
            z0 += data[p] * w[_U(indices[p])]
            z1 += data[p + _U1] * w[_U(indices[p + _U1])]
            z2 += data[p + _U2] * w[_U(indices[p + _U2])]
            z3 += data[p + _U3] * w[_U(indices[p + _U3])]
            p += _U4
        while p < end:
            z0 += data[p] * w[_U(indices[p])]
            p += _U1
        d = row_weight[r] * _dloss((z0 + z1) + (z2 + z3), y[r], loss)
        for p in range(start, end):
            out[_U(indices[p])] += d * data[p]


@_jit
def decode_combine(out, ptr, idx, coef, values):
    """out[idx[ptr[i]:ptr[i+1]]] += coef[i] * values[ptr[i]:ptr[i+1]] for coef[i] != 0."""
    for i in range(coef.shape[0]):
        c = coef[i]
        if c == 0.0:
            continue
        for p in range(_U(ptr[i]), _U(ptr[i + 1])):
            out[_U(idx[p])] += c * values[p]


@_jit
def gather(w, support, out):
    """out[k] = w[support[k]]."""
    for k in range(support.shape[0]):
        out[k] = w[_U(support[k])]


@_jit
def nesterov_step(x, y, grad, lr, momentum, l2):
    """One fused pass: g = grad + l2 y; x' = y - lr g; y = x' + momentum (x' - x); x = x'."""
    for j in range(x.shape[0]):
        x_new = y[j] - lr * (grad[j] + l2 * y[j])
        y[j] = x_new + momentum * (x_new - x[j])
        x[j] = x_new
