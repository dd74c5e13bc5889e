"""Tests of gc_fast.kernels: every backend against the reference, the reference against
independent formulas (dense NumPy, finite differences), edge cases and input checks."""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gc_fast import kernels

LOSSES = kernels.LOSSES


def random_block(rng, n_rows, n_cols, *, binary, max_row_nnz=11, margin_scale=1.0):
    """A CSR block as the kernels take it, with empty rows and every row length mod 4."""
    row_nnz = rng.integers(0, min(max_row_nnz, n_cols) + 1, n_rows)
    row_nnz[rng.random(n_rows) < 0.2] = 0
    indptr = np.concatenate([[0], np.cumsum(row_nnz)]).astype(np.int64)
    indices = np.concatenate(
        [np.sort(rng.choice(n_cols, k, replace=False)) for k in row_nnz] + [np.zeros(0, np.int64)]
    ).astype(np.int32)
    data = None if binary else rng.standard_normal(len(indices))
    y = rng.choice([-1.0, 1.0], n_rows)
    row_weight = rng.standard_normal(n_rows)
    row_weight[rng.random(n_rows) < 0.1] = 0.0
    w = margin_scale * rng.standard_normal(n_cols)
    out = rng.standard_normal(n_cols)  # the kernels accumulate: start from non-zero
    return indptr, indices, data, y, row_weight, w, out


def dense(indptr, indices, data, n_cols):
    values = np.ones(len(indices)) if data is None else data
    return sp.csr_matrix((values, indices, indptr), shape=(len(indptr) - 1, n_cols)).toarray()


def naive_dloss(z, y, loss):
    """The textbook derivatives, fine for moderate margins."""
    if loss == "squared":
        return z - y
    return -y / (1.0 + np.exp(y * z))


def loss_value(z, y, loss):
    if loss == "squared":
        return 0.5 * (z - y) ** 2
    return np.logaddexp(0.0, -y * z)


def run(block, loss, backend, **options):
    indptr, indices, data, y, row_weight, w, out = block
    result = out.copy()
    returned = kernels.coded_gradient(indptr, indices, data, y, row_weight, w, result,
                                      loss=loss, backend=backend, **options)
    assert returned is result
    return result


# ---- the reference against independent formulas ---------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "valued"])
def test_reference_matches_dense_numpy(loss, binary):
    rng = np.random.default_rng(1)
    block = random_block(rng, 40, 15, binary=binary)
    indptr, indices, data, y, row_weight, w, out = block
    X = dense(indptr, indices, data, len(w))
    expected = out + X.T @ (row_weight * naive_dloss(X @ w, y, loss))
    np.testing.assert_allclose(run(block, loss, "reference"), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "valued"])
def test_reference_is_gradient_of_weighted_loss(loss, binary):
    rng = np.random.default_rng(2)
    indptr, indices, data, y, row_weight, w, out = random_block(rng, 12, 6, binary=binary)
    X = dense(indptr, indices, data, len(w))

    def objective(v):
        return np.sum(row_weight * loss_value(X @ v, y, loss))

    step = 1e-6
    numeric = np.array([(objective(w + step * e) - objective(w - step * e)) / (2 * step) for e in np.eye(len(w))])
    gradient = run((indptr, indices, data, y, row_weight, w, np.zeros_like(out)), loss, "reference")
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-7)


# ---- every backend against the reference -------------------------------------------------------


SHAPES = {
    "regular": (300, 50),
    "wide": (20, 300_000),  # int32 column indices well past 2**16
    "one_row": (1, 7),
    "no_rows": (0, 9),
    "no_columns": (0, 0),
    "all_rows_empty": (5, 4),
}


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "valued"])
@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_coded_gradient_matches_reference(backend, loss, binary, shape):
    rng = np.random.default_rng(3)
    n_rows, n_cols = SHAPES[shape]
    block = random_block(rng, n_rows, n_cols, binary=binary, max_row_nnz=0 if shape == "all_rows_empty" else 11)
    expected = run(block, loss, "reference")
    np.testing.assert_allclose(run(block, loss, backend), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run(block, loss, backend, check=False), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "valued"])
def test_interleaved_point_and_sum_match_contiguous(backend, binary):
    """w and out as the even and odd entries of one buffer (the worker's layout)."""
    rng = np.random.default_rng(11)
    indptr, indices, data, y, row_weight, w, out = random_block(rng, 300, 50, binary=binary)
    pairs = np.empty(2 * len(w))
    pairs[0::2], pairs[1::2] = w, out
    kernels.coded_gradient(indptr, indices, data, y, row_weight, pairs[0::2], pairs[1::2],
                           backend=backend)
    expected = run((indptr, indices, data, y, row_weight, w, out), "logistic", "reference")
    np.testing.assert_allclose(pairs[1::2], expected, rtol=1e-12, atol=1e-12)
    assert np.array_equal(pairs[0::2], w)  # the point is only read
    sums = pairs[1::2].copy()
    support = np.array([3, 0, 7], np.int32)
    kernels.gather(w, support, pairs[0:6:2], backend=backend)
    assert np.array_equal(pairs[0:6:2], w[support]) and np.array_equal(pairs[1::2], sums)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_binary_path_never_reads_values(backend):
    """data=None is the all-ones matrix, whatever a values array would have held."""
    rng = np.random.default_rng(4)
    indptr, indices, _, y, row_weight, w, out = random_block(rng, 50, 20, binary=True)
    ones = np.ones(len(indices))
    for loss in LOSSES:
        np.testing.assert_allclose(
            run((indptr, indices, None, y, row_weight, w, out), loss, backend),
            run((indptr, indices, ones, y, row_weight, w, out), loss, "reference"),
            rtol=1e-12, atol=1e-12,
        )


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "valued"])
def test_large_margins_stay_finite_without_warnings(backend, loss, binary):
    rng = np.random.default_rng(5)
    block = random_block(rng, 200, 10, binary=binary, margin_scale=300.0)
    indptr, indices, data, y, row_weight, w, out = block
    margins = dense(indptr, indices, data, len(w)) @ w
    assert np.abs(margins).max() > 1000.0
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        result = run(block, loss, backend)
        expected = run(block, loss, "reference")
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_logistic_derivative_limits(backend):
    """One row, one column: d -> 0 for a large correct margin, -> -y for a large wrong one."""
    indptr, indices = np.array([0, 1], np.int64), np.array([0], np.int32)
    for y, margin, expected in [(1.0, 1000.0, 0.0), (-1.0, -1000.0, 0.0), (1.0, -1000.0, -1.0),
                                (-1.0, 1000.0, 1.0), (1.0, 0.0, -0.5)]:
        out = np.zeros(1)
        kernels.coded_gradient(indptr, indices, None, np.array([y]), np.ones(1), np.array([margin]), out,
                               loss="logistic", backend=backend)
        assert out[0] == expected


# ---- decode_combine and gather -----------------------------------------------------------------


def random_messages(rng, n_messages, n_out):
    """Overlapping supports, some empty; some zero coefficients whose messages hold NaN."""
    sizes = rng.integers(0, n_out + 1, n_messages)
    sizes[rng.random(n_messages) < 0.2] = 0
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    idx = np.concatenate([np.sort(rng.choice(n_out, k, replace=False)) for k in sizes]
                         + [np.zeros(0, np.int64)]).astype(np.int64)
    values = rng.standard_normal(len(idx))
    coef = rng.standard_normal(n_messages)
    zero = rng.random(n_messages) < 0.3
    coef[zero] = 0.0
    for i in np.flatnonzero(zero):
        values[ptr[i]:ptr[i + 1]] = np.nan  # a straggler's buffer: must never be read
    return ptr, idx, coef, values


def dense_decode(out, ptr, idx, coef, values):
    total = out.copy()
    for i in np.flatnonzero(coef):
        total += coef[i] * np.bincount(idx[ptr[i]:ptr[i + 1]], values[ptr[i]:ptr[i + 1]], minlength=len(out))
    return total


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("n_messages, n_out", [(10, 40), (100, 500), (1, 5), (0, 3), (3, 0)])
def test_decode_combine_matches_dense(backend, index_dtype, n_messages, n_out):
    rng = np.random.default_rng(6)
    ptr, idx, coef, values = random_messages(rng, n_messages, n_out)
    out = rng.standard_normal(n_out)
    expected = dense_decode(out, ptr, idx, coef, values)
    returned = kernels.decode_combine(out, ptr, idx.astype(index_dtype), coef, values, backend=backend)
    assert returned is out
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_decode_combine_repeated_positions_accumulate(backend):
    out = np.zeros(3)
    ptr, idx = np.array([0, 3, 5], np.int64), np.array([1, 1, 2, 1, 0], np.int64)
    values, coef = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([2.0, -1.0])
    kernels.decode_combine(out, ptr, idx, coef, values, backend=backend)
    np.testing.assert_array_equal(out, [-5.0, 2.0, 6.0])


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("n_support", [0, 1, 1000])
def test_gather(backend, index_dtype, n_support):
    rng = np.random.default_rng(7)
    w = rng.standard_normal(5000)
    support = np.sort(rng.choice(len(w), n_support, replace=False)).astype(index_dtype)
    out = np.full(n_support, np.nan)
    assert kernels.gather(w, support, out, backend=backend) is out
    np.testing.assert_array_equal(out, w[support])


# ---- input checks ------------------------------------------------------------------------------


def test_unknown_backend_and_loss_raise():
    rng = np.random.default_rng(8)
    block = random_block(rng, 5, 4, binary=True)
    with pytest.raises(ValueError, match="valid backends"):
        run(block, "logistic", "fortran")
    with pytest.raises(ValueError, match="valid losses"):
        run(block, "hinge", "reference")
    with pytest.raises(ValueError, match="valid backends"):
        kernels.decode_combine(np.zeros(1), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0),
                               np.zeros(0), backend="")
    with pytest.raises(ValueError, match="valid backends"):
        kernels.gather(np.zeros(1), np.zeros(0, np.int64), np.zeros(0), backend="CYTHON")


def _replace(block, position, value):
    return block[:position] + (value,) + block[position + 1:]


BAD_BLOCKS = {
    "indptr int32": (0, lambda b: b[0].astype(np.int32), "indptr"),
    "indptr empty": (0, lambda b: np.zeros(0, np.int64), "indptr"),
    "indptr past indices": (0, lambda b: b[0] + 1, "indptr"),
    "indices int64": (1, lambda b: b[1].astype(np.int64), "indices"),
    "indices a list": (1, lambda b: b[1].tolist(), "indices"),
    "data float32": (2, lambda b: np.ones(len(b[1]), np.float32), "data"),
    "data short": (2, lambda b: np.ones(len(b[1]) - 1), "data"),
    "data a list": (2, lambda b: [1.0] * len(b[1]), "data"),
    "y short": (3, lambda b: b[3][:-1], "y"),
    "row_weight 2-D": (4, lambda b: b[4][:, None], "row_weight"),
    "w 2-D": (5, lambda b: b[5][:, None], "w"),
    "out short": (6, lambda b: b[6][:-1], "out"),
    "out 2-D": (6, lambda b: b[6][:, None], "out"),
    "out read-only": (6, lambda b: np.frombuffer(b[6].tobytes()), "out must be writeable"),
}


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("case", BAD_BLOCKS, ids=list(BAD_BLOCKS))
def test_coded_gradient_rejects_bad_arrays(backend, case):
    rng = np.random.default_rng(9)
    block = random_block(rng, 6, 5, binary=True, max_row_nnz=3)
    block = _replace(block, 1, np.array([0, 1, 2, 3], np.int32))
    block = _replace(block, 0, np.array([0, 1, 1, 2, 3, 4, 4], np.int64))
    position, make_bad, name = BAD_BLOCKS[case]
    with pytest.raises(ValueError, match=name):
        kernels.coded_gradient(*_replace(block, position, make_bad(block)), backend=backend)


def test_decode_combine_and_gather_reject_bad_arrays():
    out, ptr, idx = np.zeros(4), np.array([0, 2], np.int64), np.array([0, 3], np.int64)
    coef, values = np.ones(1), np.ones(2)
    with pytest.raises(ValueError, match="idx"):
        kernels.decode_combine(out, ptr, idx.astype(np.uint32), coef, values)
    with pytest.raises(ValueError, match="ptr"):
        kernels.decode_combine(out, np.array([0, 3], np.int64), idx, coef, values)
    with pytest.raises(ValueError, match="coef"):
        kernels.decode_combine(out, ptr, idx, np.ones(2), values)
    with pytest.raises(ValueError, match="values"):
        kernels.decode_combine(out, ptr, idx, coef, np.ones(3))
    with pytest.raises(ValueError, match="support"):
        kernels.gather(out, idx.astype(np.float64), np.zeros(2))
    with pytest.raises(ValueError, match="out"):
        kernels.gather(out, idx, np.zeros(3))
    with pytest.raises(ValueError, match="out must be writeable"):
        kernels.gather(out, idx, np.frombuffer(np.zeros(2).tobytes()))
    with pytest.raises(ValueError, match="out must be writeable"):
        kernels.decode_combine(np.frombuffer(out.tobytes()), ptr, idx, coef, values)
