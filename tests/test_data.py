"""Tests for gc_fast.data (generators, loaders, partitions, worker layout) and gc_fast.objective."""
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score

from gc_fast import data as data_module
from gc_fast.data import (
    Dataset,
    amazon_like,
    build_worker_data,
    dump_svmlight,
    gaussian_mixture,
    load_dataset,
    partition_bounds,
    save_npz_dataset,
)
from gc_fast.objective import (
    auc,
    lipschitz_logistic,
    lipschitz_squared,
    logistic_gradient,
    logistic_loss,
    squared_gradient,
    squared_loss,
)


def assert_canonical(X):
    assert sp.isspmatrix_csr(X)
    assert X.dtype == np.float64 and X.indices.dtype == np.int32
    row_of_entry = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    same_row = row_of_entry[1:] == row_of_entry[:-1]
    assert np.all(np.diff(X.indices.astype(np.int64))[same_row] > 0), "indices must be strictly increasing per row"
    assert np.all(X.data != 0)


# ---------------------------------------------------------------- generators


@pytest.fixture(scope="module")
def amazon_mid():
    return amazon_like(n_train=3000, n_test=1500, n_features=20000, seed=3)


def test_amazon_like_shape_sparsity_and_bias(amazon_mid):
    for X in (amazon_mid.X_train, amazon_mid.X_test):
        assert_canonical(X)
        assert X.shape[1] == 20000
        assert np.all(np.diff(X.indptr) == 44)
        assert np.all(X.data == 1.0)
        assert np.all(X[:, 0].toarray() == 1.0)
    assert amazon_mid.X_train.shape[0] == 3000 and amazon_mid.X_test.shape[0] == 1500
    assert amazon_mid.n_features == 20000 and amazon_mid.name == "amazon_like"


def test_amazon_like_full_size():
    dataset = amazon_like()
    assert dataset.X_train.shape == (26210, 241915) and dataset.X_test.shape == (6550, 241915)
    assert dataset.X_train.nnz == 44 * 26210 and np.all(dataset.X_train.data == 1.0)
    assert_canonical(dataset.X_train)
    assert 0.92 <= np.mean(dataset.y_train > 0) <= 0.96


def test_amazon_like_labels_are_mostly_positive(amazon_mid):
    for y in (amazon_mid.y_train, amazon_mid.y_test):
        assert set(np.unique(y)) == {-1.0, 1.0}
        assert 0.88 <= np.mean(y > 0) <= 0.98


def test_amazon_like_category_frequencies_are_skewed():
    """With one categorical field, its column counts follow a Zipf-like law: a few hot categories."""
    dataset = amazon_like(n_train=5000, n_test=1, n_features=1001, nnz_per_row=2, seed=0)
    counts = np.sort(np.bincount(dataset.X_train.indices, minlength=1001)[1:])[::-1]
    assert counts[0] > 30 * np.median(counts[counts > 0])
    assert counts[:10].sum() > 0.2 * counts.sum()


def test_amazon_like_is_learnable(amazon_mid):
    model = LogisticRegression(C=0.1, max_iter=200).fit(amazon_mid.X_train, amazon_mid.y_train)
    assert roc_auc_score(amazon_mid.y_test, model.decision_function(amazon_mid.X_test)) > 0.65


def test_amazon_like_is_deterministic_per_seed():
    first = amazon_like(n_train=200, n_test=50, n_features=500, seed=7)
    again = amazon_like(n_train=200, n_test=50, n_features=500, seed=7)
    other = amazon_like(n_train=200, n_test=50, n_features=500, seed=8)
    assert (first.X_train != again.X_train).nnz == 0 and np.array_equal(first.y_train, again.y_train)
    assert (first.X_test != again.X_test).nnz == 0 and np.array_equal(first.y_test, again.y_test)
    assert (first.X_train != other.X_train).nnz > 0


@pytest.mark.parametrize("nnz_per_row,n_features", [(1, 1), (2, 10), (5, 5), (44, 44), (44, 500), (60, 1000)])
def test_amazon_like_small_and_odd_sizes(nnz_per_row, n_features):
    dataset = amazon_like(n_train=30, n_test=10, n_features=n_features, nnz_per_row=nnz_per_row, seed=1)
    assert_canonical(dataset.X_train)
    assert dataset.X_train.shape == (30, n_features)
    assert np.all(np.diff(dataset.X_train.indptr) == nnz_per_row)
    assert np.all(dataset.X_train.data == 1.0)


@pytest.mark.parametrize("kwargs", [dict(n_features=10, nnz_per_row=44), dict(nnz_per_row=0), dict(n_train=0)])
def test_amazon_like_rejects_impossible_sizes(kwargs):
    with pytest.raises(ValueError, match="amazon_like"):
        amazon_like(**{"n_features": 500, **kwargs})


def test_gaussian_mixture_shape_bias_and_learnable():
    dataset = gaussian_mixture(n_train=2000, n_test=1000, n_features=20, seed=2)
    assert_canonical(dataset.X_train)
    assert dataset.X_train.shape == (2000, 20) and dataset.X_test.shape == (1000, 20)
    assert np.all(dataset.X_train[:, 0].toarray() == 1.0)
    assert dataset.X_train.nnz == 2000 * 20
    assert 0.2 < np.mean(dataset.y_train > 0) < 0.8
    model = LogisticRegression(fit_intercept=False).fit(dataset.X_train, dataset.y_train)
    assert roc_auc_score(dataset.y_test, model.decision_function(dataset.X_test)) > 0.7
    again = gaussian_mixture(n_train=2000, n_test=1000, n_features=20, seed=2)
    assert np.array_equal(dataset.X_train.toarray(), again.X_train.toarray())
    assert np.array_equal(dataset.y_test, again.y_test)


# ---------------------------------------------------------------- loaders


@pytest.fixture
def small():
    return amazon_like(n_train=160, n_test=40, n_features=300, seed=5)


def sorted_rows(X, y):
    """Rows (with labels) in a canonical order, to compare data sets regardless of row order."""
    table = np.hstack([X.toarray(), y[:, None]])
    return table[np.lexsort(table.T[::-1])]


def all_rows(dataset):
    return sorted_rows(
        sp.vstack([dataset.X_train, dataset.X_test]).tocsr(), np.concatenate([dataset.y_train, dataset.y_test])
    )


def test_svmlight_round_trip(tmp_path, small):
    path = tmp_path / "small.svm"
    dump_svmlight(path, small)
    loaded = load_dataset(path, test_fraction=0.25, seed=1)
    assert_canonical(loaded.X_train)
    assert loaded.X_train.shape[0] == 150 and loaded.X_test.shape[0] == 50
    n_features = loaded.n_features
    assert n_features <= small.n_features
    trimmed = Dataset(small.X_train[:, :n_features], small.y_train, small.X_test[:, :n_features], small.y_test, "")
    original = all_rows(trimmed)
    assert np.array_equal(all_rows(loaded), original)
    assert loaded.name == "small"


def test_svmlight_round_trip_without_bias_column(tmp_path):
    X = sp.csr_matrix(np.array([[0, 2.5, 0, 1], [0, 0, -1, 0], [0, 1, 1, 3]]))
    y = np.array([1.0, -1.0, 1.0])
    path = tmp_path / "nobias.svm"
    dump_svmlight(path, Dataset(X[:2], y[:2], X[2:], y[2:], "nobias"))
    loaded = load_dataset(path, test_fraction=0.0)
    assert loaded.X_test.shape == (0, 4)
    assert np.array_equal(all_rows(loaded), sorted_rows(X, y))


def test_npz_round_trip_and_seeded_split(tmp_path, small):
    path = tmp_path / "small.npz"
    X = sp.vstack([small.X_train, small.X_test]).tocsr()
    y = np.concatenate([small.y_train, small.y_test])
    save_npz_dataset(path, X, y)
    loaded = load_dataset(path, test_fraction=0.2, seed=4)
    assert loaded.n_features == small.n_features
    assert np.array_equal(all_rows(loaded), sorted_rows(X, y))
    again = load_dataset(path, test_fraction=0.2, seed=4)
    other = load_dataset(path, test_fraction=0.2, seed=5)
    assert np.array_equal(loaded.y_train, again.y_train) and (loaded.X_test != again.X_test).nnz == 0
    assert (loaded.X_test != other.X_test).nnz > 0 or not np.array_equal(loaded.y_test, other.y_test)


def test_zero_one_labels_are_mapped(tmp_path):
    path = tmp_path / "zero_one.svm"
    path.write_text("0 1:1 2:0.5\n1 1:1\n1 2:3\n0 1:2\n1 1:1 2:1\n")
    loaded = load_dataset(path, test_fraction=0.2)
    assert set(np.concatenate([loaded.y_train, loaded.y_test])) == {-1.0, 1.0}
    assert np.sum(np.concatenate([loaded.y_train, loaded.y_test]) > 0) == 3


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "absent.svm"
    with pytest.raises(FileNotFoundError, match="absent.svm"):
        load_dataset(path)


BAD_TEXT_FILES = {
    "malformed.svm": ("1 a:b\n", "not a valid svmlight"),
    "truncated.svm": ("1 1:1 2:1\n-1 3:", "not a valid svmlight"),
    "truncated2.svm": ("1 1:1 2:1\n-1 3", "not a valid svmlight"),
    "prose.txt": ("hello world\n", "not a valid svmlight"),
    "unsorted.svm": ("1 3:1 1:1\n-1 2:1\n", "not a valid svmlight"),
    "nan.svm": ("1 1:1\n-1 1:nan\n1 2:1\n", "NaN or infinite"),
    "inf.svm": ("1 1:1\n-1 1:inf\n1 2:1\n", "NaN or infinite"),
    "nanlabel.svm": ("nan 1:1\n-1 1:1\n1 2:1\n", "NaN or infinite"),
    "labels.svm": ("1 1:1\n2 1:1\n-1 2:1\n", "labels must be in"),
    "empty.svm": ("", "empty data set"),
    "blank.svm": ("\n\n", "empty data set"),
    "onerow.svm": ("1 1:1\n", "too few rows"),
}


@pytest.mark.parametrize("name", sorted(BAD_TEXT_FILES))
def test_bad_text_files_raise_one_clear_line(tmp_path, name):
    content, message = BAD_TEXT_FILES[name]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_dataset(path)
    assert name in str(error.value) and "\n" not in str(error.value)


def test_bad_npz_files_raise_one_clear_line(tmp_path, small):
    good = tmp_path / "good.npz"
    save_npz_dataset(good, small.X_train, small.y_train)
    payload = good.read_bytes()
    cases = {
        "garbage.npz": b"\x00\x01 not a zip archive at all",
        "truncated.npz": payload[: len(payload) // 2],
        "flipped.npz": payload[: len(payload) // 2] + bytes(20) + payload[len(payload) // 2 + 20 :],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.savez(tmp_path / "nokeys.npz", data=np.ones(3))
    X = small.X_train
    np.savez(tmp_path / "badindptr.npz", data=X.data, indices=X.indices, indptr=X.indptr[::-1].copy(),
             shape=np.array(X.shape), y=small.y_train)
    np.savez(tmp_path / "shortlabels.npz", data=X.data, indices=X.indices, indptr=X.indptr,
             shape=np.array(X.shape), y=small.y_train[:-1])
    expected = {"garbage.npz": "corrupt", "truncated.npz": "corrupt", "flipped.npz": "corrupt",
                "nokeys.npz": "lacks keys", "badindptr.npz": "corrupt", "shortlabels.npz": "labels"}
    for name, message in expected.items():
        with pytest.raises(ValueError, match=message) as error:
            load_dataset(tmp_path / name)
        assert name in str(error.value) and "\n" not in str(error.value)


def test_file_too_large_for_memory_is_refused(tmp_path, small, monkeypatch):
    path = tmp_path / "small.svm"
    dump_svmlight(path, small)
    monkeypatch.setattr(data_module, "_available_memory_bytes", lambda: 1000)
    with pytest.raises(ValueError, match="too large to load"):
        load_dataset(path)
    npz_path = tmp_path / "small.npz"
    save_npz_dataset(npz_path, small.X_train, small.y_train)
    with pytest.raises(ValueError, match="too large to load"):
        load_dataset(npz_path)


def test_available_memory_is_positive():
    assert data_module._available_memory_bytes() > 0


# ---------------------------------------------------------------- partitions


@pytest.mark.parametrize("n_rows,n_partitions", [(10, 1), (10, 3), (10, 10), (26210, 24), (7, 5)])
def test_partition_bounds_are_contiguous_and_near_equal(n_rows, n_partitions):
    bounds = partition_bounds(n_rows, n_partitions)
    assert bounds.dtype == np.int64 and len(bounds) == n_partitions + 1
    assert bounds[0] == 0 and bounds[-1] == n_rows
    sizes = np.diff(bounds)
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


def test_partition_bounds_reject_bad_counts():
    with pytest.raises(ValueError, match="more partitions than rows"):
        partition_bounds(3, 4)
    with pytest.raises(ValueError, match="n_partitions"):
        partition_bounds(3, 0)


# ---------------------------------------------------------------- worker data


class StubCode:
    """A hand-built code: B plus the partitions/messages each worker owns."""

    def __init__(self, B, message_worker):
        self.B = np.asarray(B, dtype=np.float64)
        self.message_worker = np.asarray(message_worker)

    def messages_of(self, worker):
        return np.flatnonzero(self.message_worker == worker)

    def partitions_of(self, worker):
        return np.flatnonzero(np.any(self.B[self.messages_of(worker)] != 0, axis=0))


def cyclic_stub(n_workers, n_stragglers, seed=0):
    rng = np.random.default_rng(seed)
    B = np.zeros((n_workers, n_workers))
    for worker in range(n_workers):
        for offset in range(n_stragglers + 1):
            B[worker, (worker + offset) % n_workers] = rng.normal() if offset else 1.0
    return StubCode(B, np.arange(n_workers))


def two_message_stub():
    """Two workers, four partitions, two messages each (like the partial schemes)."""
    B = [[1, 0, 0, 0], [0, 0, 0.5, -2], [0, 1, 0, 0], [0, 0, 3, 1]]
    return StubCode(B, [0, 0, 1, 1])


@pytest.mark.parametrize("make_data,code", [
    (lambda: amazon_like(n_train=300, n_test=1, n_features=2000, seed=1), cyclic_stub(5, 2)),
    (lambda: gaussian_mixture(n_train=120, n_test=1, n_features=6, seed=1), cyclic_stub(4, 1)),
    (lambda: amazon_like(n_train=100, n_test=1, n_features=400, seed=2), two_message_stub()),
])
def test_worker_data_reconstructs_rows_and_plan(make_data, code):
    dataset = make_data()
    X, y = dataset.X_train, dataset.y_train
    bounds = partition_bounds(X.shape[0], code.B.shape[1])
    row_scale = 1.0 / X.shape[0]
    binary = bool(np.all(X.data == 1.0))
    for worker in range(int(code.message_worker.max()) + 1):
        worker_data = build_worker_data(X, y, bounds, code, worker, row_scale=row_scale)
        partitions = code.partitions_of(worker)
        rows = np.concatenate([np.arange(bounds[j], bounds[j + 1]) for j in partitions])
        assert worker_data.support.dtype == np.int64
        assert np.array_equal(worker_data.support, np.unique(X[rows].indices))
        assert [block.partition for block in worker_data.blocks] == list(partitions)
        for block in worker_data.blocks:
            start, stop = bounds[block.partition], bounds[block.partition + 1]
            assert block.indptr.dtype == np.int64 and block.indices.dtype == np.int32
            assert (block.data is None) == binary
            local = block.local_csr(len(worker_data.support))
            rebuilt = sp.csr_matrix((local.data, worker_data.support[local.indices], local.indptr),
                                    shape=(stop - start, X.shape[1]))
            assert (rebuilt != X[start:stop]).nnz == 0
            assert np.array_equal(block.y, y[start:stop])
        messages = code.messages_of(worker)
        assert len(worker_data.message_plan) == len(messages)
        for message, plan in zip(messages, worker_data.message_plan, strict=True):
            used = {worker_data.blocks[b].partition for b, _ in plan}
            assert used == set(np.flatnonzero(code.B[message]))
            for b, row_weight in plan:
                block = worker_data.blocks[b]
                assert row_weight.dtype == np.float64 and len(row_weight) == block.n_rows
                assert np.all(row_weight == code.B[message, block.partition] * row_scale)


def test_messages_decode_to_the_full_gradient():
    """Fractional-repetition stub, n=4, s=1: one message per group sums to the full gradient."""
    dataset = amazon_like(n_train=200, n_test=1, n_features=600, seed=4)
    X, y = dataset.X_train, dataset.y_train
    code = StubCode([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], np.arange(4))
    bounds = partition_bounds(X.shape[0], 4)
    w = np.random.default_rng(0).normal(0, 0.1, X.shape[1])
    decoded = np.zeros(X.shape[1])
    for worker in (1, 2):
        worker_data = build_worker_data(X, y, bounds, code, worker, row_scale=1.0 / X.shape[0])
        local_w = w[worker_data.support]
        message = np.zeros(len(worker_data.support))
        for b, row_weight in worker_data.message_plan[0]:
            block = worker_data.blocks[b]
            local = block.local_csr(len(worker_data.support))
            dloss = -block.y / (1.0 + np.exp(block.y * (local @ local_w)))
            message += local.T @ (row_weight * dloss)
        decoded[worker_data.support] += message
    np.testing.assert_allclose(decoded, logistic_gradient(X, y, w, 0.0), rtol=1e-12, atol=1e-15)


def test_worker_data_rejects_partitions_the_worker_does_not_hold():
    class Inconsistent(StubCode):
        def partitions_of(self, worker):
            return np.array([worker])

    code = Inconsistent(np.ones((2, 2)), [0, 1])
    dataset = amazon_like(n_train=20, n_test=1, n_features=100, seed=0)
    with pytest.raises(ValueError, match="does not hold"):
        build_worker_data(dataset.X_train, dataset.y_train, partition_bounds(20, 2), code, 0, row_scale=1.0)


# ---------------------------------------------------------------- objective


@pytest.fixture(scope="module")
def regression_problem():
    dataset = gaussian_mixture(n_train=400, n_test=1, n_features=8, seed=6)
    return dataset.X_train, dataset.y_train


def finite_difference_gradient(loss, w, step=1e-6):
    gradient = np.zeros_like(w)
    for k in range(len(w)):
        shift = np.zeros_like(w)
        shift[k] = step
        gradient[k] = (loss(w + shift) - loss(w - shift)) / (2 * step)
    return gradient


@pytest.mark.parametrize("loss,gradient", [(logistic_loss, logistic_gradient), (squared_loss, squared_gradient)])
def test_gradients_match_finite_differences(regression_problem, loss, gradient):
    X, y = regression_problem
    w = np.random.default_rng(1).normal(size=X.shape[1])
    numeric = finite_difference_gradient(lambda v: loss(X, y, v, 0.3), w)
    np.testing.assert_allclose(gradient(X, y, w, 0.3), numeric, rtol=1e-6, atol=1e-8)


def test_losses_match_their_formulas(regression_problem):
    X, y = regression_problem
    w = np.random.default_rng(2).normal(size=X.shape[1])
    z = X.toarray() @ w
    expected_logistic = np.mean(np.log1p(np.exp(-y * z))) + 0.25 * w @ w
    assert logistic_loss(X, y, w, 0.5) == pytest.approx(expected_logistic, rel=1e-12)
    assert squared_loss(X, y, w, 0.5) == pytest.approx(0.5 * np.mean((z - y) ** 2) + 0.25 * w @ w, rel=1e-12)


def test_logistic_loss_is_stable_for_huge_margins():
    X = sp.csr_matrix(np.array([[1.0], [1.0]]))
    y = np.array([1.0, -1.0])
    w = np.array([1000.0])
    assert logistic_loss(X, y, w, 0.0) == pytest.approx(500.0)
    assert np.all(np.isfinite(logistic_gradient(X, y, w, 0.0)))


def test_sklearn_logistic_optimum_zeroes_our_gradient(regression_problem):
    X, y = regression_problem
    l2 = 0.01
    model = LogisticRegression(C=1.0 / (l2 * X.shape[0]), fit_intercept=False, tol=1e-12, max_iter=1000).fit(X, y)
    w = model.coef_.ravel()
    assert np.linalg.norm(logistic_gradient(X, y, w, l2)) < 1e-6
    assert np.linalg.norm(logistic_gradient(X, y, 1.01 * w, l2)) > 1e-4


def test_sklearn_ridge_optimum_zeroes_our_squared_gradient(regression_problem):
    X, y = regression_problem
    l2 = 0.05
    w = Ridge(alpha=l2 * X.shape[0], fit_intercept=False, tol=1e-12).fit(X, y).coef_
    assert np.linalg.norm(squared_gradient(X, y, w, l2)) < 1e-8


def test_auc_matches_sklearn_and_handles_one_class():
    rng = np.random.default_rng(3)
    y = np.where(rng.random(100) < 0.3, 1.0, -1.0)
    scores = rng.normal(size=100) + y
    assert auc(y, scores) == pytest.approx(roc_auc_score(y, scores))
    assert np.isnan(auc(np.ones(5), np.arange(5.0)))


def test_lipschitz_constants_match_the_spectral_norm():
    dataset = amazon_like(n_train=300, n_test=1, n_features=400, seed=9)
    X = dataset.X_train
    sigma_squared = np.linalg.norm(X.toarray(), 2) ** 2
    n_rows = X.shape[0]
    assert lipschitz_logistic(X, 0.1, n_iter=50) == pytest.approx(0.25 * sigma_squared / n_rows + 0.1, rel=1e-6)
    assert lipschitz_squared(X, 0.1, n_iter=50) == pytest.approx(sigma_squared / n_rows + 0.1, rel=1e-6)
    assert lipschitz_squared(X, 0.0) <= sigma_squared / n_rows * (1 + 1e-12)
    assert lipschitz_logistic(sp.csr_matrix((3, 4)), 0.2) == pytest.approx(0.2)
