"""Hot-path kernels of gradient coding, one interface: backend="cython" | "numba" | "reference".

Workers hold each partition as a CSR block whose column indices are local to the
worker's support, so w and out are short. The kernels accumulate into
caller-owned buffers and allocate nothing. Each call checks dtypes, layouts and
lengths in O(1) (about a microsecond; pass check=False to skip it when the
arrays were checked once up front). Index *values* are never checked: column
indices must lie in [0, len(w)) and ptr/indptr must be non-decreasing, as
gc_fast.data builds them.

Backends are imported on first use: "cython" needs the built extension
gc_fast._kernels, "numba" compiles on its first call (cached on disk).
"""
import importlib

import numpy as np

BACKENDS = ("cython", "numba", "reference")
LOSSES = ("logistic", "squared")

_LOSS_CODES = {"logistic": 0, "squared": 1}  # the codes every backend module uses
_BACKEND_MODULES = {
    "cython": "gc_fast._kernels",
    "numba": "gc_fast._numba_kernels",
    "reference": "gc_fast._reference_kernels",
}
_loaded = {}
_INT32 = np.dtype(np.int32)
_INT64 = np.dtype(np.int64)
_FLOAT64 = np.dtype(np.float64)
# dtypes of indptr, indices, y, row_weight, w, out
_BLOCK_DTYPES = (_INT64, _INT32, _FLOAT64, _FLOAT64, _FLOAT64, _FLOAT64)


def _backend(name):
    """The module implementing backend `name`, imported once."""
    module = _loaded.get(name)
    if module is None:
        if name not in _BACKEND_MODULES:
            raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
        try:
            module = importlib.import_module(_BACKEND_MODULES[name])
        except ImportError as error:
            if name != "cython":
                raise
            raise ImportError(
                "gc_fast._kernels is not built; run `python setup.py build_ext --inplace` "
                "in the source tree or install the package"
            ) from error
        _loaded[name] = module
    return module


def _loss_code(loss):
    code = _LOSS_CODES.get(loss)
    if code is None:
        raise ValueError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
    return code


def _check(array, name, dtype, length=None, writeable=False, strided=False):
    """Raise ValueError unless `array` is a contiguous (or, with strided, any) 1-D `dtype`
    ndarray of `length`."""
    if not (
        type(array) is np.ndarray
        and array.dtype == dtype
        and array.ndim == 1
        and (strided or array.flags.c_contiguous)
    ):
        layout = "" if strided else "contiguous "
        raise ValueError(f"{name} must be a {layout}1-D {dtype} numpy array")
    if length is not None and array.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {array.shape[0]}")
    if writeable and not array.flags.writeable:
        raise ValueError(f"{name} must be writeable")


def _check_positions(array, name, length=None):
    """_check for an int32 or int64 array of positions."""
    _check(array, name, _INT32 if array.dtype == _INT32 else _INT64, length)


def _check_pointers(ptr, name, n_entries, entries):
    """Raise ValueError unless the offsets ptr start at 0 and end within the n_entries `entries`."""
    _check(ptr, name, _INT64)
    if ptr.shape[0] == 0 or ptr.item(0) != 0 or ptr.item(-1) > n_entries:
        raise ValueError(f"{name} must start at 0 and end at most at len({entries}) = {n_entries}")


def _block_is_valid(indptr, indices, data, y, row_weight, w, out):
    """The O(1) checks of coded_gradient as one expression: the cheap common case."""
    try:
        n_rows = len(indptr) - 1
        return (
            (indptr.dtype, indices.dtype, y.dtype, row_weight.dtype, w.dtype, out.dtype)
            == _BLOCK_DTYPES
            and type(indptr) is type(indices) is type(y) is np.ndarray
            and type(row_weight) is type(w) is type(out) is np.ndarray
            and indptr.ndim == indices.ndim == y.ndim == row_weight.ndim == w.ndim == out.ndim == 1
            and indptr.flags.c_contiguous and indices.flags.c_contiguous and y.flags.c_contiguous
            and row_weight.flags.c_contiguous and out.flags.writeable
            and len(y) == len(row_weight) == n_rows >= 0 and len(out) == len(w)
            and indptr.item(0) == 0 and indptr.item(n_rows) <= len(indices)
            and (data is None or (type(data) is np.ndarray and data.dtype == _FLOAT64
                                  and data.ndim == 1 and data.flags.c_contiguous
                                  and len(data) == len(indices)))
        )
    except (AttributeError, TypeError):
        return False


def _check_block(indptr, indices, data, y, row_weight, w, out):
    """Raise ValueError naming the first bad argument of coded_gradient."""
    _check(indices, "indices", _INT32)
    _check_pointers(indptr, "indptr", indices.shape[0], "indices")
    n_rows = indptr.shape[0] - 1
    if data is not None:
        _check(data, "data", _FLOAT64, indices.shape[0])
    _check(y, "y", _FLOAT64, n_rows)
    _check(row_weight, "row_weight", _FLOAT64, n_rows)
    _check(w, "w", _FLOAT64, strided=True)
    _check(out, "out", _FLOAT64, w.shape[0], writeable=True, strided=True)


def coded_gradient(indptr, indices, data, y, row_weight, w, out, *,
                   loss="logistic", backend="cython", check=True):
    """Add the coded gradient of one CSR block to out, in one fused pass over its rows.

    out[k] += sum_r row_weight[r] * dloss(z_r, y[r]) * X[r, k] with z_r = X[r] . w, where
    X = csr(data, indices, indptr) with len(w) columns; data=None means every value is 1.0
    (the values are then never read). Losses: "logistic", log(1 + exp(-y z)) with y in
    {-1, +1}, and "squared", 0.5 (z - y)^2. Returns out.

    w and out may be strided views that do not overlap, such as the even and odd
    entries of one buffer: each w[k] then shares a cache line with out[k], and the
    scatter into out finds in cache the lines that the dot products just read.
    """
    impl = _backend(backend)
    loss_code = _loss_code(loss)
    if check and not _block_is_valid(indptr, indices, data, y, row_weight, w, out):
        _check_block(indptr, indices, data, y, row_weight, w, out)
    if data is None:
        impl.coded_gradient_binary(indptr, indices, y, row_weight, w, out, loss_code)
    else:
        impl.coded_gradient_valued(indptr, indices, data, y, row_weight, w, out, loss_code)
    return out


def decode_combine(out, ptr, idx, coef, values, *, backend="cython", check=True):
    """Add the decoded combination of sparse messages to out; returns out.

    Message i holds values[ptr[i]:ptr[i+1]] at positions idx[ptr[i]:ptr[i+1]] of out
    (idx int32 or int64);
    out[idx[...]] += coef[i] * values[...] for every i with coef[i] != 0 (messages with
    a zero coefficient are never read, so a straggler's buffer may hold anything).
    Repeated positions accumulate.
    """
    impl = _backend(backend)
    if check:
        _check(out, "out", _FLOAT64, writeable=True)
        _check_positions(idx, "idx")
        _check(values, "values", _FLOAT64, idx.shape[0])
        _check_pointers(ptr, "ptr", idx.shape[0], "idx")
        _check(coef, "coef", _FLOAT64, ptr.shape[0] - 1)
    impl.decode_combine(out, ptr, idx, coef, values)
    return out


def gather(w, support, out, *, backend="cython", check=True):
    """out[k] = w[support[k]] (support int32 or int64; out may be strided): the worker's
    local copy of the model; returns out."""
    impl = _backend(backend)
    if check:
        _check(w, "w", _FLOAT64)
        _check_positions(support, "support")
        _check(out, "out", _FLOAT64, support.shape[0], writeable=True, strided=True)
    impl.gather(w, support, out)
    return out


def nesterov_step(x, y, grad, lr, momentum, l2, *, backend="cython", check=True):
    """Fused optimiser step, in place, one pass over the coordinates.

    g = grad + l2 * y (the L2 term added here), x' = y - lr * g,
    y <- x' + momentum * (x' - x), x <- x'. With momentum 0 and y the same
    array as x it is plain gradient descent. Returns x.
    """
    impl = _backend(backend)
    if check:
        _check(x, "x", _FLOAT64, writeable=True)
        _check(y, "y", _FLOAT64, x.shape[0], writeable=True)
        _check(grad, "grad", _FLOAT64, x.shape[0])
    impl.nesterov_step(x, y, grad, float(lr), float(momentum), float(l2))
    return x
