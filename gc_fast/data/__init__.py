"""Data sets, loaders and the per-worker data layout used by gradient coding.

Data sets are CSR matrices in canonical form (float64 values, int32 sorted
column indices, no duplicates, no explicit zeros) with labels in {-1, +1}.
The synthetic generators put a bias column of ones at column 0, so trainers
need no separate intercept.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

# Number of categories of the nine columns of Kaggle's Amazon Employee Access
# data (RESOURCE, MGR_ID, ROLE_ROLLUP_1, ROLE_ROLLUP_2, ROLE_DEPTNAME,
# ROLE_TITLE, ROLE_FAMILY_DESC, ROLE_FAMILY, ROLE_CODE): relative field sizes.
_AMAZON_CARDINALITIES = np.array([7518, 4243, 128, 177, 449, 343, 2358, 67, 343], dtype=np.float64)
_AMAZON_POSITIVE_RATE = 0.94
_ZIPF_EXPONENT = 1.1
# Text formats take several times their file size once parsed; npz members are
# sized uncompressed. Refuse a file whose estimate exceeds available memory.
_TEXT_MEMORY_FACTOR = 5.0
_BINARY_MEMORY_FACTOR = 2.0
_NPZ_KEYS = ("data", "indices", "indptr", "shape", "y")
# Where the memory check looks: module constants, so tests can point them at fake files.
_MEMINFO = "/proc/meminfo"
_PROC_CGROUP = "/proc/self/cgroup"
_CGROUP_ROOT = "/sys/fs/cgroup"
# A cgroup limit at or above this means "no limit" (v1 writes ~2**63 for unlimited).
_CGROUP_UNLIMITED = 2**60


@dataclass
class Dataset:
    """A train/test split of a sparse binary classification problem."""

    X_train: sp.csr_matrix
    y_train: np.ndarray
    X_test: sp.csr_matrix
    y_test: np.ndarray
    name: str

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


def _canonical_csr(X) -> sp.csr_matrix:
    """CSR float64 with int32 sorted unique indices and no stored zeros."""
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sum_duplicates()
    X.eliminate_zeros()
    X.sort_indices()
    X.indices = X.indices.astype(np.int32, copy=False)
    return X


def _split_sizes(total: int, weights: np.ndarray) -> np.ndarray:
    """Split `total` into len(weights) positive integers roughly proportional to weights."""
    extra = (total - len(weights)) * weights / weights.sum()
    sizes = 1 + np.floor(extra).astype(np.int64)
    leftover = total - sizes.sum()
    sizes[np.argsort(extra - np.floor(extra))[::-1][:leftover]] += 1
    return sizes


def _zipf_draw(rng: np.random.Generator, n_categories: int, n_draws: int) -> np.ndarray:
    """Category indices 0..n_categories-1 drawn with Zipf-like frequencies."""
    cdf = np.cumsum(np.arange(1, n_categories + 1, dtype=np.float64) ** -_ZIPF_EXPONENT)
    draws = np.searchsorted(cdf, rng.random(n_draws) * cdf[-1], side="right")
    return np.minimum(draws, n_categories - 1)


def _hash_pair(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """Well-mixed uint64 hash of category pairs, for interaction columns."""
    with np.errstate(over="ignore"):
        h = a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= (b.astype(np.uint64) + np.uint64(salt)) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
    return h


def _logistic_labels(rng: np.random.Generator, scores: np.ndarray,
                     positive_rate: float | None) -> np.ndarray:
    """Labels in {-1, +1} drawn from sigmoid(scores + offset).

    With `positive_rate`, the offset is chosen by bisection so the expected
    fraction of positives matches it; otherwise the offset is zero.
    """
    offset = 0.0
    if positive_rate is not None:
        low, high = -50.0, 50.0
        for _ in range(60):
            offset = 0.5 * (low + high)
            if np.mean(expit(scores + offset)) < positive_rate:
                low = offset
            else:
                high = offset
    return np.where(rng.random(len(scores)) < expit(scores + offset), 1.0, -1.0)


def _split_rows(X: sp.csr_matrix, y: np.ndarray, n_train: int, name: str) -> Dataset:
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:], name)


def amazon_like(
    *,
    n_train: int = 26210,
    n_test: int = 6550,
    n_features: int = 241915,
    nnz_per_row: int = 44,
    seed: int = 0,
) -> Dataset:
    """Synthetic data shaped like the one-hot Amazon Employee Access set of the paper.

    Each row has a bias column (0) and one active column in each of
    `nnz_per_row - 1` fields: categorical base fields with Zipf-skewed
    category frequencies and field sizes in Amazon's proportions, then their
    pairwise interactions (hashed category pairs). Columns of a field are
    contiguous and fields are laid out in order, so rows are sorted and
    duplicate-free by construction and every value is exactly 1.0. Labels
    come from a planted logistic model, ~94% positive like Amazon's.
    """
    n_fields = nnz_per_row - 1
    if n_train < 1 or n_test < 0:
        raise ValueError(
            f"amazon_like: need n_train >= 1 and n_test >= 0, "
            f"got n_train={n_train}, n_test={n_test}"
        )
    if nnz_per_row < 1 or n_features < nnz_per_row:
        raise ValueError(
            f"amazon_like: need 1 <= nnz_per_row <= n_features, "
            f"got nnz_per_row={nnz_per_row}, n_features={n_features}"
        )
    rng = np.random.default_rng(seed)
    n_rows = n_train + n_test

    # Fewest base fields whose pairwise interactions fill the other fields
    # (Amazon: 9 base fields + 34 of their 36 pairs + bias = 44 columns a row).
    n_base = 0
    while n_base + n_base * (n_base - 1) // 2 < n_fields:
        n_base += 1
    pairs = [(a, b) for a in range(n_base) for b in range(a + 1, n_base)][: n_fields - n_base]
    base_weights = _AMAZON_CARDINALITIES[np.arange(n_base) % len(_AMAZON_CARDINALITIES)]
    pair_weights = np.sqrt([base_weights[a] * base_weights[b] for a, b in pairs])
    if pairs:
        # Amazon's base one-hot columns are ~6.5% of the features, interactions the rest.
        base_budget = n_base + int(0.065 * (n_features - 1 - n_fields))
        field_sizes = np.concatenate([
            _split_sizes(base_budget, base_weights),
            _split_sizes(n_features - 1 - base_budget, pair_weights),
        ])
    else:
        field_sizes = (_split_sizes(n_features - 1, base_weights) if n_base
                       else np.zeros(0, np.int64))
    field_starts = 1 + np.concatenate([[0], np.cumsum(field_sizes)[:-1]]).astype(np.int64)

    indices = np.empty((n_rows, nnz_per_row), dtype=np.int32)
    indices[:, 0] = 0
    categories = [_zipf_draw(rng, int(field_sizes[f]), n_rows) for f in range(n_base)]
    for f in range(n_base):
        # Shuffle which column holds which popularity rank, as real encodings do.
        column_of_rank = rng.permutation(int(field_sizes[f]))
        indices[:, 1 + f] = field_starts[f] + column_of_rank[categories[f]]
    for p, (a, b) in enumerate(pairs):
        f = n_base + p
        bucket = _hash_pair(categories[a], categories[b], salt=f) % np.uint64(field_sizes[f])
        indices[:, 1 + f] = field_starts[f] + bucket.astype(np.int64)

    X = sp.csr_matrix(
        (np.ones(n_rows * nnz_per_row), indices.ravel(),
         np.arange(0, n_rows * nnz_per_row + 1, nnz_per_row)),
        shape=(n_rows, n_features),
    )
    X.has_canonical_format = True

    # Planted model: strong weights on the frequent base categories, weaker
    # ones on the sparse interaction columns, as in real one-hot data.
    true_weights = np.zeros(n_features)
    n_base_columns = int(field_sizes[:n_base].sum())
    true_weights[1 : 1 + n_base_columns] = rng.normal(0.0, 1.0, n_base_columns)
    true_weights[1 + n_base_columns :] = rng.normal(0.0, 0.5, n_features - 1 - n_base_columns)
    y = _logistic_labels(rng, X @ true_weights, _AMAZON_POSITIVE_RATE)
    return _split_rows(X, y, n_train, "amazon_like")


def gaussian_mixture(
    *,
    n_train: int = 20000,
    n_test: int = 5000,
    n_features: int = 100,
    seed: int = 0,
) -> Dataset:
    """The paper's artificial dense data: a two-component Gaussian mixture with logistic labels.

    Column 0 is a bias column of ones; the other n_features-1 columns are
    drawn from N(+mu, I) or N(-mu, I) with equal probability. Labels come
    from a planted logistic model, so the problem is learnable but noisy.
    """
    if n_train < 1 or n_test < 0 or n_features < 2:
        raise ValueError(
            f"gaussian_mixture: need n_train >= 1, n_test >= 0, n_features >= 2, "
            f"got {n_train}, {n_test}, {n_features}"
        )
    rng = np.random.default_rng(seed)
    n_rows = n_train + n_test
    n_dense = n_features - 1
    mean = rng.normal(0.0, 1.0 / np.sqrt(n_dense), n_dense)
    component_sign = np.where(rng.random(n_rows) < 0.5, 1.0, -1.0)
    features = rng.normal(0.0, 1.0, (n_rows, n_dense)) + component_sign[:, None] * mean
    true_weights = rng.normal(0.0, 2.0 / np.sqrt(n_dense), n_dense)
    y = _logistic_labels(rng, features @ true_weights, positive_rate=None)
    X = _canonical_csr(np.hstack([np.ones((n_rows, 1)), features]))
    return _split_rows(X, y, n_train, "gaussian_mixture")


def _read_cgroup_number(path: str) -> int | None:
    """The integer in a cgroup file; None for "max", a huge value or an unreadable file."""
    try:
        with open(path) as stream:
            text = stream.read().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) >= _CGROUP_UNLIMITED:
        return None
    return int(text)


def _cgroup_memory_bytes() -> int | None:
    """Memory left under this process's cgroup limits (v2 and v1, the cgroup and its parents):
    the smallest limit minus usage, or None when no limit applies or none can be read."""
    try:
        with open(_PROC_CGROUP) as stream:
            lines = stream.read().splitlines()
    except OSError:
        return None
    folders = []  # (folder of the cgroup's files, limit file, usage file)
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, cgroup = parts
        if hierarchy == "0" and controllers == "":
            root, files = _CGROUP_ROOT, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            root, files = os.path.join(_CGROUP_ROOT, "memory"), ("memory.limit_in_bytes",
                                                                  "memory.usage_in_bytes")
        else:
            continue
        cgroup = "/" + cgroup.strip("/")
        while True:
            folders.append((os.path.join(root, cgroup.lstrip("/")), *files))
            if cgroup == "/":
                break
            cgroup = os.path.dirname(cgroup)
    left = []
    for folder, limit_file, usage_file in folders:
        limit = _read_cgroup_number(os.path.join(folder, limit_file))
        usage = _read_cgroup_number(os.path.join(folder, usage_file))
        if limit is not None and usage is not None:
            left.append(max(0, limit - usage))
    return min(left) if left else None


def _available_memory_bytes() -> int:
    """Memory the process can still use: the smaller of MemAvailable (else free physical
    pages) and what its cgroup memory limits leave."""
    available = None
    try:
        with open(_MEMINFO) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cgroup = _cgroup_memory_bytes()
    return available if cgroup is None else min(available, cgroup)


def _check_fits_in_memory(path: str, estimated_bytes: float) -> None:
    available = _available_memory_bytes()
    if estimated_bytes > available:
        raise ValueError(
            f"{path}: too large to load on this rank (needs ~{estimated_bytes / 2**30:.1f} GiB, "
            f"{available / 2**30:.1f} GiB available); shard it once with "
            f"python -m gc_fast.data shard {path} OUT/ and then pass --dataset OUT/ "
            f"(each worker then reads only its partitions)"
        )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _parse_svmlight(path: str, source, **options):
    """load_svmlight_file(source, **options) (source: `path` or a block of its lines), its
    errors turned into one line naming `path`."""
    try:
        from sklearn.datasets import (
            load_svmlight_file,  # imported here: sklearn costs ~1 s per rank
        )

        return load_svmlight_file(source, dtype=np.float64, **options)
    except (ValueError, OverflowError) as exc:
        raise ValueError(
            f"{path}: not a valid svmlight/libsvm file ({_first_line(exc)}); "
            f"expected lines 'label index:value ...'"
        ) from None


def _read_svmlight(path: str):
    _check_fits_in_memory(path, _TEXT_MEMORY_FACTOR * os.path.getsize(path))
    return _parse_svmlight(path, path)


def _corrupt_npz(path: str, exc: BaseException) -> ValueError:
    return ValueError(f"{path}: corrupt npz data set ({_first_line(exc)}); "
                      f"rewrite it with save_npz_dataset")


def _check_npz_keys(path: str, keys) -> None:
    """ValueError (one line) unless the npz data set's `keys` include all of _NPZ_KEYS."""
    missing = [key for key in _NPZ_KEYS if key not in keys]
    if missing:
        raise ValueError(
            f"{path}: npz data set lacks keys {missing}; write it with save_npz_dataset "
            f"(keys {list(_NPZ_KEYS)})"
        )


def _read_npz(path: str):
    # A damaged archive fails in zipfile, zlib or the .npy header parser with
    # many exception types; all of them mean the same thing to the user.
    try:
        with zipfile.ZipFile(path) as archive:
            uncompressed = sum(info.file_size for info in archive.infolist())
    except Exception as exc:
        raise _corrupt_npz(path, exc) from None
    _check_fits_in_memory(path, _BINARY_MEMORY_FACTOR * uncompressed)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files if key in _NPZ_KEYS}
    except Exception as exc:
        raise _corrupt_npz(path, exc) from None
    _check_npz_keys(path, arrays)
    try:
        shape = tuple(int(n) for n in arrays["shape"])
        X = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
        X.check_format(full_check=True)
    except (ValueError, TypeError, IndexError) as exc:
        raise _corrupt_npz(path, exc) from None
    y = np.asarray(arrays["y"], dtype=np.float64).ravel()
    if len(y) != X.shape[0]:
        raise ValueError(
            f"{path}: npz data set has {X.shape[0]} rows but {len(y)} labels; "
            f"rewrite it with save_npz_dataset"
        )
    return X, y


def _as_plus_minus_labels(path: str, y: np.ndarray) -> np.ndarray:
    """Labels mapped to {-1, +1}; {0, 1} is accepted and mapped 0 -> -1."""
    values = set(np.unique(y).tolist())
    if values <= {-1.0, 1.0}:
        return y
    if values <= {0.0, 1.0}:
        return np.where(y > 0, 1.0, -1.0)
    shown = sorted(values)[:5]
    raise ValueError(
        f"{path}: labels must be in {{-1, +1}} or {{0, 1}}, found {shown}; "
        f"relabel the file for binary classification"
    )


def _check_source(path: str, test_fraction: float) -> None:
    """The checks before reading a data file: test_fraction in [0, 1), the file exists."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if os.path.isdir(path):
        raise FileNotFoundError(
            f"{path}: a folder without a sharded data set's manifest.json; pass a data file, "
            f"or shard one into it with python -m gc_fast.data shard FILE {path}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: data file not found; pass an svmlight/libsvm text file or an .npz file"
        )


def _check_rows(path: str, n_rows: int, finite: bool, labels: np.ndarray,
                test_fraction: float) -> int:
    """The test rows of a file of n_rows rows, after the checks of every reader (not empty,
    finite values, binary `labels`, enough rows for the split): one-line ValueErrors."""
    if n_rows == 0:
        raise ValueError(f"{path}: empty data set (no rows); pass a file with labelled rows")
    if not finite:
        raise ValueError(f"{path}: contains NaN or infinite values; clean the file before training")
    _as_plus_minus_labels(path, labels)
    n_test = int(round(test_fraction * n_rows))
    if n_rows - n_test < 1 or (test_fraction > 0 and n_test < 1):
        raise ValueError(
            f"{path}: too few rows ({n_rows}) for a train/test split with "
            f"test_fraction={test_fraction}; "
            f"use a larger file or another test_fraction"
        )
    return n_test


def load_dataset(path: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load an svmlight/libsvm text file or an .npz file (see save_npz_dataset) and split it.

    The split is a seeded random permutation: round(test_fraction * n_rows)
    rows go to the test set. Bad files raise ValueError with one line naming
    the file and the fix. A file too large for this host's memory (or cgroup
    limit) is refused: shard it (python -m gc_fast.data shard, gc_fast.data.shards).
    """
    path = os.fspath(path)
    _check_source(path, test_fraction)
    X, y = _read_npz(path) if path.endswith(".npz") else _read_svmlight(path)
    n_rows = X.shape[0]
    finite = bool(np.all(np.isfinite(X.data)) and np.all(np.isfinite(y)))
    n_test = _check_rows(path, n_rows, finite, y, test_fraction)
    y = _as_plus_minus_labels(path, y)
    X = _canonical_csr(X)
    order = np.random.default_rng(seed).permutation(n_rows)
    test_rows, train_rows = order[:n_test], order[n_test:]
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(X[train_rows], y[train_rows], X[test_rows], y[test_rows], name)


SYNTHETIC = ("amazon-like", "gmm")


def load_data(dataset: str = "amazon-like", *, rows: int | None = None, features: int | None = None,
              nnz_per_row: int | None = None, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A built-in synthetic set by name (SYNTHETIC) or a data file (load_dataset).

    rows: training rows of a synthetic set (its test split is rows // 4);
    features: its columns; nnz_per_row: non-zeros per row (amazon-like only).
    test_fraction applies to a file. Raises ValueError with one line.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if dataset not in SYNTHETIC:
        if rows is not None or features is not None or nnz_per_row is not None:
            raise ValueError("rows/features/nnz per row apply to the synthetic data sets only, "
                             "not to a file")
        return load_dataset(dataset, test_fraction=test_fraction, seed=seed)
    sizes = {"seed": seed}
    if rows is not None:
        sizes.update(n_train=rows, n_test=max(1, rows // 4))
    if features is not None:
        sizes["n_features"] = features
    if nnz_per_row is not None:
        if dataset != "amazon-like":
            raise ValueError("nnz per row applies to the amazon-like data set only")
        sizes["nnz_per_row"] = nnz_per_row
    return (amazon_like if dataset == "amazon-like" else gaussian_mixture)(**sizes)


def save_npz_dataset(path: str | os.PathLike, X, y) -> None:
    """Write X (any sparse or dense matrix) and labels y as an .npz data set.

    Keys: data, indices, indptr (CSR arrays), shape (2 ints), y (labels).
    """
    X = _canonical_csr(X)
    np.savez_compressed(
        path, data=X.data, indices=X.indices, indptr=X.indptr,
        shape=np.array(X.shape, dtype=np.int64),
        y=np.asarray(y, dtype=np.float64),
    )


def dump_svmlight(path: str | os.PathLike, dataset: Dataset) -> None:
    """Write a data set's train rows then test rows as one svmlight file.

    Indices are one-based (the libsvm convention), which load_svmlight_file's
    auto-detection always reads back correctly, even when column 0 is empty.
    """
    X = sp.vstack([dataset.X_train, dataset.X_test], format="csr")
    y = np.concatenate([dataset.y_train, dataset.y_test])
    from sklearn.datasets import dump_svmlight_file

    dump_svmlight_file(X, y, os.fspath(path), zero_based=False)


def partition_bounds(n_rows: int, n_partitions: int) -> np.ndarray:
    """Row boundaries of n_partitions contiguous ranges whose sizes differ by at most one."""
    if n_partitions < 1:
        raise ValueError(f"n_partitions must be >= 1, got {n_partitions}")
    if n_partitions > n_rows:
        raise ValueError(
            f"more partitions than rows ({n_partitions} partitions, {n_rows} rows); "
            f"use at most {n_rows} partitions"
        )
    return np.arange(n_partitions + 1, dtype=np.int64) * n_rows // n_partitions


@dataclass
class WorkerBlock:
    """The rows of one partition, with columns renumbered into the worker's support.

    `data` is None when every value is exactly 1.0 (binary rows, never read).
    """

    partition: int
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray | None
    y: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def local_csr(self, n_support: int) -> sp.csr_matrix:
        """The block as a CSR matrix over the worker's support columns."""
        data = np.ones(len(self.indices)) if self.data is None else self.data
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n_rows, n_support))


@dataclass
class WorkerData:
    """Everything one worker needs to compute its coded messages.

    support: sorted global columns its rows touch (it only needs w[support]).
    blocks: one WorkerBlock per partition it holds, in code.partitions_of order.
    message_plan: per message it sends (code.messages_of order), the list of
        (block index, per-row weight B[m, j] * row_scale) to accumulate.
    """

    support: np.ndarray
    blocks: list[WorkerBlock]
    message_plan: list[list[tuple[int, np.ndarray]]]


def worker_support(X, bounds, partitions) -> np.ndarray:
    """Sorted global columns (int64) touched by the rows of `partitions` of CSR matrix X.

    A dense mark table over all columns is O(nnz + n_features): several times
    faster than sorting-based unique here.
    """
    return columns_touched((X.indices[X.indptr[bounds[j]] : X.indptr[bounds[j + 1]]]
                            for j in partitions), X.shape[1])


def columns_touched(column_arrays, n_features) -> np.ndarray:
    """Sorted columns (int64) that appear in any of `column_arrays` (CSR index arrays)."""
    touched = np.zeros(n_features, dtype=bool)
    for columns in column_arrays:
        touched[columns] = True
    return np.flatnonzero(touched).astype(np.int64)


def build_worker_data(X, y, bounds, code, worker: int, *, row_scale: float) -> WorkerData:
    """Slice the partitions `worker` holds under `code` from the rows X, y (partition j:
    rows bounds[j]:bounds[j + 1]) and build its message plan (worker_data_from_rows)."""
    if not (sp.issparse(X) and X.format == "csr"):
        X = _canonical_csr(X)
    y = np.asarray(y, dtype=np.float64)

    def partition_rows(j):
        start, stop = int(bounds[j]), int(bounds[j + 1])
        return X[start:stop], y[start:stop]

    return worker_data_from_rows(partition_rows, X.shape[1], code, worker, row_scale=row_scale)


def worker_data_from_rows(partition_rows, n_features, code, worker: int, *,
                          row_scale: float) -> WorkerData:
    """The WorkerData of `worker` under `code`, its partitions' rows read one at a time.

    partition_rows(j) returns partition j's rows as (canonical CSR with n_features
    columns, labels): from memory (build_worker_data) or from a sharded set's files
    (gc_fast.data.shards), so a worker holds only its partitions. Each block's
    columns are renumbered into the worker's support as soon as the support is
    known, block by block, so the peak is about the worker's rows once.
    """
    partitions = [int(j) for j in code.partitions_of(worker)]
    rows = []
    for j in partitions:
        X_j, y_j = partition_rows(j)
        data = X_j.data
        rows.append([X_j.indptr.astype(np.int64), X_j.indices,
                     None if np.all(data == 1.0) else data.astype(np.float64, copy=True),
                     np.array(y_j, dtype=np.float64)])
        del X_j, data
    support = columns_touched((row[1] for row in rows), n_features)
    local_position = np.zeros(n_features, dtype=np.int32)
    local_position[support] = np.arange(len(support), dtype=np.int32)
    blocks = []
    for j, row in zip(partitions, rows, strict=True):
        indptr, columns, data, labels = row
        row.clear()  # drop the global column indices as soon as they are renumbered
        blocks.append(WorkerBlock(partition=j, indptr=indptr, indices=local_position[columns],
                                  data=data, y=labels))
        del columns

    held = set(partitions)
    message_plan = []
    for m in code.messages_of(worker):
        used = np.flatnonzero(code.B[m])
        foreign = [int(j) for j in used if int(j) not in held]
        if foreign:
            raise ValueError(
                f"code message {m} of worker {worker} combines partitions {foreign} the worker "
                f"does not hold; "
                f"fix the code's B or partitions_of"
            )
        message_plan.append([
            (b, np.full(block.n_rows, code.B[m, block.partition] * row_scale))
            for b, block in enumerate(blocks)
            if code.B[m, block.partition] != 0
        ])
    return WorkerData(support=support, blocks=blocks, message_plan=message_plan)


# The sharded layout (python -m gc_fast.data shard FILE OUT/): for sets larger than a host.
from .shards import (  # noqa: E402, F401 (re-exported)
    ShardedDataset,
    ShardError,
    is_sharded,
    open_shards,
    write_shards,
)
