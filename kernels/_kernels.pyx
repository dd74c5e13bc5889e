"""Cython kernels behind gc_fast.kernels (backend="cython").

No validation here: gc_fast.kernels checks dtypes and lengths before calling in,
and the typed memoryviews reject wrong dtypes, layouts and read-only outputs.
Column indices are trusted to lie in range (bounds checks are off).

Loss codes: 0 = logistic, 1 = squared.
"""
from libc.math cimport exp
from libc.stdint cimport int32_t, int64_t

cdef enum:
    SQUARED = 1  # loss code; 0 is logistic

ctypedef fused index_t:  # positions in decode_combine and gather: int32 halves their traffic
    int32_t
    int64_t


cdef inline double _dloss(double z, double y, int loss) noexcept nogil:
    """Derivative of the loss in z; the logistic one never overflows."""
    cdef double t, e
    if loss == SQUARED:
        return z - y
    t = y * z
    if t >= 0.0:
        e = exp(-t)
        return -y * e / (1.0 + e)
    return -y / (1.0 + exp(t))


cdef enum:
    ROW_BATCH = 32  # rows whose dot products are taken before their losses: hides exp latency


cdef void _coded_gradient_binary(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const double[::1] y,
    const double[::1] row_weight,
    const double[:] w,
    double[:] out,
    int loss,
) noexcept nogil:
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t r, first, last
    cdef int64_t p, start, end
    cdef double z0, z1, z2, z3, d
    cdef double[ROW_BATCH] dots
    first = 0
    while first < n_rows:
        last = min(first + ROW_BATCH, n_rows)
        for r in range(first, last):
            start = indptr[r]
            end = indptr[r + 1]
            # Four partial sums break the add latency chain (the order is fixed: deterministic).
            z0 = z1 = z2 = z3 = 0.0
            p = start
            while p + 4 <= end:
                z0 += w[indices[p]]
                z1 += w[indices[p + 1]]
                z2 += w[indices[p + 2]]
                z3 += w[indices[p + 3]]
                p += 4
            while p < end:
                z0 += w[indices[p]]
                p += 1
            dots[r - first] = (z0 + z1) + (z2 + z3)
        for r in range(first, last):
            dots[r - first] = row_weight[r] * _dloss(dots[r - first], y[r], loss)
        for r in range(first, last):
            d = dots[r - first]
            for p in range(indptr[r], indptr[r + 1]):
                out[indices[p]] += d
        first = last


cdef void _coded_gradient_valued(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const double[::1] data,
    const double[::1] y,
    const double[::1] row_weight,
    const double[:] w,
    double[:] out,
    int loss,
) noexcept nogil:
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t r
    cdef int64_t p, start, end
    cdef double z0, z1, z2, z3, d
    for r in range(n_rows):
        start = indptr[r]
        end = indptr[r + 1]
        z0 = z1 = z2 = z3 = 0.0
        p = start
        while p + 4 <= end:
            z0 += data[p] * w[indices[p]]
            z1 += data[p + 1] * w[indices[p + 1]]
            z2 += data[p + 2] * w[indices[p + 2]]
            z3 += data[p + 3] * w[indices[p + 3]]
            p += 4
        while p < end:
            z0 += data[p] * w[indices[p]]
            p += 1
        d = row_weight[r] * _dloss((z0 + z1) + (z2 + z3), y[r], loss)
        for p in range(start, end):
            out[indices[p]] += d * data[p]


def coded_gradient_binary(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const double[::1] y,
    const double[::1] row_weight,
    const double[:] w,
    double[:] out,
    int loss,
):
    """out += X.T (row_weight * dloss(X w, y)) for a binary CSR X (values never read)."""
    with nogil:
        _coded_gradient_binary(indptr, indices, y, row_weight, w, out, loss)


def coded_gradient_valued(
    const int64_t[::1] indptr,
    const int32_t[::1] indices,
    const double[::1] data,
    const double[::1] y,
    const double[::1] row_weight,
    const double[:] w,
    double[:] out,
    int loss,
):
    """out += X.T (row_weight * dloss(X w, y)) for a CSR X with stored values."""
    with nogil:
        _coded_gradient_valued(indptr, indices, data, y, row_weight, w, out, loss)


def decode_combine(
    double[::1] out,
    const int64_t[::1] ptr,
    const index_t[::1] idx,
    const double[::1] coef,
    const double[::1] values,
):
    """out[idx[ptr[i]:ptr[i+1]]] += coef[i] * values[ptr[i]:ptr[i+1]] for coef[i] != 0."""
    cdef Py_ssize_t n_messages = coef.shape[0]
    cdef Py_ssize_t i
    cdef int64_t p
    cdef double c
    with nogil:
        for i in range(n_messages):
            c = coef[i]
            if c == 0.0:
                continue
            for p in range(ptr[i], ptr[i + 1]):
                out[idx[p]] += c * values[p]


def gather(const double[::1] w, const index_t[::1] support, double[:] out):
    """out[k] = w[support[k]]."""
    cdef Py_ssize_t k
    with nogil:
        for k in range(support.shape[0]):
            out[k] = w[support[k]]


def nesterov_step(double[::1] x, double[::1] y, const double[::1] grad,
                  double lr, double momentum, double l2):
    """One fused pass: g = grad + l2 y; x' = y - lr g; y = x' + momentum (x' - x); x = x'."""
    cdef Py_ssize_t j
    cdef double x_new
    with nogil:
        for j in range(x.shape[0]):
            x_new = y[j] - lr * (grad[j] + l2 * y[j])
            y[j] = x_new + momentum * (x_new - x[j])
            x[j] = x_new
