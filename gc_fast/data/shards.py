"""The sharded layout of a data set: a file written once into checksummed chunks, read per range.

``write_shards`` (``python -m gc_fast.data shard FILE OUT/``) streams an
svmlight/libsvm or .npz file into a folder: its training rows, in exactly the
order ``load_dataset(FILE, test_fraction=F, seed=S)`` gives them, cut into
contiguous chunk files, plus the test rows, a sample of training rows for the
training loss and ``manifest.json`` (sizes, sha256 checksums, sigma_max(X)^2,
a fingerprint). ``ShardedDataset`` reads the manifest and then only the chunks
a row range asks for, each checked against its checksum, so a worker holds
only its partitions' rows.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..objective import largest_eigenvalue_of_gram
from . import (
    _as_plus_minus_labels,
    _canonical_csr,
    _check_npz_keys,
    _check_rows,
    _check_source,
    _corrupt_npz,
    _parse_svmlight,
    partition_bounds,
)

FORMAT = "gc_fast-shards"
VERSION = 1
MANIFEST = "manifest.json"
# Text read per block while streaming an svmlight file (split on line boundaries).
BLOCK_BYTES = 32 * 2**20
# Default chunk size: about this many bytes of CSR arrays (12 per non-zero, 16 per row).
CHUNK_BYTES = 4 * 2**20
MAX_CHUNKS = 65536
# sigma_max(X_train)^2 as objective._largest_singular_value_squared(X_train, 20, 0) gives it.
POWER_ITERATIONS = 20
POWER_SEED = 0
# The power iteration reads the chunks 20 times: it keeps up to this many bytes of them.
_SUMMARY_CACHE_BYTES = 64 * 2**20
TEST_FILE = "test.npz"
LOSS_SAMPLE_FILE = "loss-sample.npz"
_CHUNK_NAME = re.compile(r"chunk-\d{5,}\.npz")
_INCOMPLETE = ".gc_fast-shards-incomplete"  # a shard run is under way (or was killed)
_PIECES = ".pieces"  # the rows of each output file, as the blocks of the source deliver them
_FIX = "re-run python -m gc_fast.data shard FILE OUT/"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same rows give the same bytes


class ShardError(ValueError):
    """A sharded folder that cannot be used: missing, damaged or of another format."""


def is_sharded(path) -> bool:
    """Whether `path` is a folder holding a sharded set's manifest.json."""
    path = os.fspath(path)
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST))


def open_shards(path) -> ShardedDataset:
    """The sharded set in folder `path` (ShardedDataset(path))."""
    return ShardedDataset(path)


# --- Reading the source ------------------------------------------------------------------


@dataclass
class _Scan:
    """What the first pass over a source tells: sizes, finiteness, labels, columns."""

    n_rows: int
    nnz: int  # stored entries as read (explicit zeros and duplicates included)
    finite: bool
    labels: np.ndarray  # the smallest distinct labels (at most 5: enough to judge and to show)
    n_features: int
    zero_based: bool | None  # None for an .npz source


def _merge_labels(labels: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate([labels, np.unique(y)]))[:5]


def _line_blocks(path: str, block_bytes: int):
    """The file's bytes in blocks of about block_bytes, each ending at a line end (as
    load_svmlight_file, .gz and .bz2 files are decompressed)."""
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(os.path.splitext(path)[1], open)
    with opener(path, "rb") as stream:
        while True:
            block = stream.read(block_bytes)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += stream.readline()
            yield block


class _SvmlightSource:
    """An svmlight/libsvm file read in blocks of lines, parsed by load_svmlight_file."""

    def __init__(self, path: str, block_bytes: int):
        self.path, self.block_bytes = path, block_bytes
        self.scan_result = None

    def scan(self) -> _Scan:
        n_rows = nnz = 0
        finite = True
        labels = np.zeros(0)
        low, high = None, -1
        for block in _line_blocks(self.path, self.block_bytes):
            X, y = _parse_svmlight(self.path, io.BytesIO(block), zero_based=True)
            n_rows += X.shape[0]
            nnz += X.nnz
            finite = finite and bool(np.all(np.isfinite(X.data)) and np.all(np.isfinite(y)))
            labels = _merge_labels(labels, y)
            if X.nnz:
                low = int(X.indices.min()) if low is None else min(low, int(X.indices.min()))
                high = max(high, int(X.indices.max()))
        # load_svmlight_file's zero_based="auto" on the whole file: one-based unless no index
        # is stored or some index is 0; n_features is then the largest index (+1 if zero-based).
        zero_based = not (nnz and low > 0)
        n_features = high + 1 - (0 if zero_based else 1) if nnz else 1
        self.scan_result = _Scan(n_rows, nnz, finite, labels, n_features, zero_based)
        return self.scan_result

    def blocks(self):
        """(canonical CSR, labels in {-1, +1}) per block of rows, in file order."""
        scan = self.scan_result
        for block in _line_blocks(self.path, self.block_bytes):
            X, y = _parse_svmlight(self.path, io.BytesIO(block), zero_based=scan.zero_based,
                                   n_features=scan.n_features)
            yield _canonical_csr(X), _as_plus_minus_labels(self.path, y)


def _npy_member(archive: zipfile.ZipFile, key: str):
    """An open .npy member of an npz archive, positioned after its header, with its shape
    and dtype."""
    member = archive.open(key + ".npy")
    version = np.lib.format.read_magic(member)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(member)
    if dtype.hasobject:
        raise ValueError(f"{key} holds Python objects")
    return member, shape, dtype


def _read_elements(member, dtype, count: int, key: str) -> np.ndarray:
    raw = member.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
        raise ValueError(f"{key} is truncated")
    return np.frombuffer(raw, dtype=dtype).copy()  # writable: canonicalised in place


class _NpzSource:
    """An .npz data set (save_npz_dataset's keys): indptr and labels are read whole (16 bytes a
    row), indices and values streamed from their members (compressed or not)."""

    def __init__(self, path: str, block_bytes: int):
        self.path, self.block_bytes = path, block_bytes
        self.scan_result = None

    def _open(self):
        try:
            archive = zipfile.ZipFile(self.path)
            _check_npz_keys(self.path, [name[:-4] for name in archive.namelist()
                                        if name.endswith(".npy")])
        except ValueError as exc:
            if str(exc).startswith(f"{self.path}: npz data set lacks"):
                raise
            raise _corrupt_npz(self.path, exc) from None
        except Exception as exc:
            raise _corrupt_npz(self.path, exc) from None
        return archive

    def _whole(self, archive, key):
        member, shape, dtype = _npy_member(archive, key)
        with member:
            return _read_elements(member, dtype, int(np.prod(shape)), key)

    def scan(self) -> _Scan:
        with self._open() as archive:
            try:
                shape = tuple(int(n) for n in self._whole(archive, "shape"))
                indptr = self._whole(archive, "indptr").astype(np.int64)
                y = self._whole(archive, "y").astype(np.float64)
                if len(shape) != 2 or min(shape) < 0:
                    raise ValueError(f"shape must be 2 non-negative ints, got {shape}")
                if len(indptr) != shape[0] + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
                    raise ValueError("index pointer array is not that of the shape's rows")
            except Exception as exc:
                raise _corrupt_npz(self.path, exc) from None
            if len(y) != shape[0]:
                raise ValueError(f"{self.path}: npz data set has {shape[0]} rows but {len(y)} "
                                 f"labels; rewrite it with save_npz_dataset")
            self.shape, self.indptr, self.y = shape, indptr, y
            finite = bool(np.all(np.isfinite(y)))
            for _, _, data in self._stream(archive, check=True):
                finite = finite and bool(np.all(np.isfinite(data)))
        self.scan_result = _Scan(shape[0], int(indptr[-1]), finite, _merge_labels(np.zeros(0), y),
                                 shape[1], None)
        return self.scan_result

    def _stream(self, archive, check=False):
        """(first row, stop row, indices, values) of blocks of rows of about block_bytes."""
        try:
            indices, index_shape, index_dtype = _npy_member(archive, "indices")
            data, data_shape, data_dtype = _npy_member(archive, "data")
            nnz = int(self.indptr[-1])
            if int(np.prod(index_shape)) != nnz or int(np.prod(data_shape)) != nnz:
                raise ValueError("indices and data must hold indptr[-1] entries")
        except Exception as exc:
            raise _corrupt_npz(self.path, exc) from None
        per_block = max(1, self.block_bytes // (index_dtype.itemsize + data_dtype.itemsize))
        n_rows, start = self.shape[0], 0
        with indices, data:
            while start < n_rows:
                stop = int(np.searchsorted(self.indptr, self.indptr[start] + per_block, "right"))
                stop = min(n_rows, max(start + 1, stop - 1))
                count = int(self.indptr[stop] - self.indptr[start])
                try:
                    columns = _read_elements(indices, index_dtype, count, "indices")
                    values = _read_elements(data, data_dtype, count, "data")
                    if check and count and (columns.min() < 0 or columns.max() >= self.shape[1]):
                        raise ValueError(f"column indices must be in [0, {self.shape[1]})")
                except Exception as exc:
                    raise _corrupt_npz(self.path, exc) from None
                yield (start, stop, values) if check else (start, stop, columns, values)
                start = stop

    def blocks(self):
        with self._open() as archive:
            for start, stop, columns, values in self._stream(archive):
                indptr = self.indptr[start : stop + 1] - self.indptr[start]
                X = sp.csr_matrix((values, columns, indptr), shape=(stop - start, self.shape[1]))
                yield _canonical_csr(X), _as_plus_minus_labels(self.path, self.y[start:stop])


# --- Writing -------------------------------------------------------------------------------


def _check_count(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _holds_our_set(folder: str) -> bool:
    if os.path.exists(os.path.join(folder, _INCOMPLETE)):
        return True
    try:
        with open(os.path.join(folder, MANIFEST)) as stream:
            return json.load(stream).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: str) -> None:
    """OUT/ must be new, empty or a previous sharded set's folder: ValueError otherwise."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out}: exists and is not a folder; pass a new or empty folder as OUT/")
    if os.path.isdir(out) and os.listdir(out) and not _holds_our_set(out):
        raise ValueError(f"{out}: not empty and holds no gc_fast sharded set ({MANIFEST}); "
                         f"pass a new or empty folder as OUT/ to shard into")


def _clear_out(out: str) -> None:
    """Make OUT/ ready: the old manifest goes first, so an interrupted run leaves none."""
    os.makedirs(out, exist_ok=True)
    for name in (MANIFEST, MANIFEST + ".tmp"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    with open(os.path.join(out, _INCOMPLETE), "w"):
        pass
    for name in os.listdir(out):
        if _CHUNK_NAME.fullmatch(name) or name in (TEST_FILE, LOSS_SAMPLE_FILE):
            os.remove(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, _PIECES), ignore_errors=True)
    os.makedirs(os.path.join(out, _PIECES))


def _append_piece(path: str, positions, X: sp.csr_matrix, y, rows: np.ndarray) -> None:
    """Append rows `rows` of (X, y), bound for `positions` of their file, to a pieces file."""
    starts, stops = X.indptr[rows].astype(np.int64), X.indptr[rows + 1].astype(np.int64)
    lengths = stops - starts
    # The entries of the rows, gathered at once: row k's run starts[k]..stops[k].
    spans = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    spans += np.arange(int(lengths.sum()))
    header = np.array([len(rows), len(spans)], dtype=np.int64)
    with open(path, "ab") as stream:
        stream.write(b"".join([
            header.tobytes(), np.asarray(positions, np.int64).tobytes(),
            lengths.tobytes(), np.asarray(y[rows], np.float64).tobytes(),
            X.indices[spans].astype(np.int32).tobytes(), X.data[spans].tobytes(),
        ]))


def _read_pieces(path: str, n_rows: int, n_features: int):
    """The rows of a pieces file as a canonical CSR matrix and labels, in position order."""
    raw = b""
    if os.path.exists(path):
        with open(path, "rb") as stream:
            raw = stream.read()
    positions, lengths, labels, columns, values = [], [], [], [], []
    offset = 0
    while offset < len(raw):
        rows, nnz = np.frombuffer(raw, np.int64, 2, offset)
        offset += 16
        for target, dtype, count in ((positions, np.int64, rows), (lengths, np.int64, rows),
                                     (labels, np.float64, rows), (columns, np.int32, nnz),
                                     (values, np.float64, nnz)):
            target.append(np.frombuffer(raw, dtype, int(count), offset))
            offset += int(count) * np.dtype(dtype).itemsize
    empty = [np.zeros(0, np.int64)]
    positions = np.concatenate(positions or empty)
    lengths = np.concatenate(lengths or empty)
    y = np.concatenate(labels or [np.zeros(0)])
    X = sp.csr_matrix((np.concatenate(values or [np.zeros(0)]),
                       np.concatenate(columns or [np.zeros(0, np.int32)]),
                       np.concatenate([[0], np.cumsum(lengths)])), shape=(n_rows, n_features))
    del raw, values, columns, labels  # the views of the file's bytes go: it is freed
    order = np.argsort(positions, kind="stable")
    if not np.array_equal(positions[order], np.arange(n_rows)):
        raise RuntimeError(f"{path}: rows missing or repeated (a bug of the shard writer)")
    X = X[order]
    X.has_canonical_format = True
    return X, y[order]


def _write_npz(path: str, X: sp.csr_matrix, y: np.ndarray) -> dict:
    """Write rows as an uncompressed npz (values left out when all are 1.0); its manifest
    entry (name, bytes, sha256, rows, nnz)."""
    binary = bool(np.all(X.data == 1.0))
    arrays = {"indptr": X.indptr.astype(np.int64),
              "indices": X.indices.astype(np.int32, copy=False),
              "data": np.zeros(0) if binary else X.data.astype(np.float64, copy=False),
              "y": np.asarray(y, np.float64), "binary": np.array(binary)}
    with open(path, "wb") as stream, zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED,
                                                     allowZip64=True) as archive:
        for key, value in arrays.items():
            with archive.open(zipfile.ZipInfo(key + ".npy", _ZIP_TIME), "w",
                              force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            digest.update(block)
    return {"name": os.path.basename(path), "bytes": os.path.getsize(path),
            "sha256": digest.hexdigest(), "rows": X.shape[0], "nnz": int(X.nnz)}


def _default_chunks(scan: _Scan, n_train: int) -> int:
    bytes_per_row = (12.0 * scan.nnz + 16.0 * scan.n_rows) / scan.n_rows
    return int(min(max(1, np.ceil(n_train * bytes_per_row / CHUNK_BYTES)),
                   min(n_train, MAX_CHUNKS)))


def _summarise(out: str, entries: list[dict], n_train: int, n_features: int):
    """sigma_max(X_train)^2 (power iteration summed over the chunks) and the fingerprint:
    checkpoint.data_fingerprint of the training rows, hashed while the iteration reads them."""
    nnz = sum(entry["nnz"] for entry in entries)
    index_dtype = np.int32 if max(nnz, n_features) < 2**31 else np.int64
    digest = hashlib.sha256(np.array([n_train, n_features], np.int64).tobytes())
    passes = [0]
    cache, cached_bytes = {}, 0

    def chunk(entry):
        nonlocal cached_bytes
        if entry["name"] in cache:
            return cache[entry["name"]]
        rows = _load_rows(os.path.join(out, entry["name"]), n_features)
        if cached_bytes + entry["bytes"] <= _SUMMARY_CACHE_BYTES:
            cache[entry["name"]] = rows
            cached_bytes += entry["bytes"]
        return rows

    def chunk_pass(vector=None):
        """One pass over the chunks: X^T (X vector) and, in the first four, one array
        (indptr, indices, data, y) of the training rows fed to the fingerprint."""
        total = np.zeros(n_features) if vector is not None else None
        offset = 0
        for number, entry in enumerate(entries):
            X, y = chunk(entry)
            if vector is not None:
                total += X.T @ (X @ vector)
            if passes[0] == 0:
                digest.update((X.indptr[(1 if number else 0):] + offset).astype(index_dtype)
                              .tobytes())
            elif passes[0] < 4:
                digest.update((X.indices, X.data, y)[passes[0] - 1].tobytes())
            offset += X.nnz
        passes[0] += 1
        return total

    sigma = largest_eigenvalue_of_gram(chunk_pass, n_features, POWER_ITERATIONS, POWER_SEED)
    while passes[0] < 4:
        chunk_pass()
    return sigma, digest.hexdigest()[:16]


def write_shards(source, out, *, test_fraction: float = 0.0, seed: int = 0, chunks=None,
                 loss_sample_rows: int = 50_000, block_bytes: int = BLOCK_BYTES
                 ) -> ShardedDataset:
    """Shard a data file into folder `out` (see the module docstring); its ShardedDataset.

    Parameters
    ----------
    source : path
        An svmlight/libsvm text file (.gz/.bz2 too) or an .npz data set (save_npz_dataset).
        Streamed: the writer holds about one block, one chunk and 8-16 bytes a row.
    out : path
        A new or empty folder, or one holding a previous sharded set (overwritten).
    test_fraction, seed : float, int
        The split of load_dataset(source, test_fraction=, seed=): the training rows are
        its X_train's, in its order.
    chunks : int, optional
        Number of chunk files (contiguous ranges of training rows, sizes differing by at
        most one); default about 4 MiB of CSR arrays each.
    loss_sample_rows : int
        Training rows kept for the training loss: all of them if there are at most this
        many, else a seeded sample of this many (rng(seed + 1)).
    block_bytes : int
        Bytes of text (or of non-zeros of an .npz) parsed at a time.

    Bad sources raise load_dataset's one-line errors; a bad `out`, ValueError.
    """
    source, out = os.fspath(source), os.fspath(out)
    _check_source(source, test_fraction)
    seed = _check_count("seed", seed, 0)
    loss_sample_rows = _check_count("loss_sample_rows", loss_sample_rows, 1)
    block_bytes = _check_count("block_bytes", block_bytes, 1)
    _check_out(out)
    reader = (_NpzSource if source.endswith(".npz") else _SvmlightSource)(source, block_bytes)
    scan = reader.scan()
    n_test = _check_rows(source, scan.n_rows, scan.finite, scan.labels, test_fraction)
    n_train = scan.n_rows - n_test
    n_chunks = (_default_chunks(scan, n_train) if chunks is None
                else _check_count("chunks", chunks, 1, n_train))
    bounds = partition_bounds(n_train, n_chunks)
    exact = n_train <= loss_sample_rows
    sample = (np.arange(n_train) if exact else np.sort(np.random.default_rng(seed + 1).choice(
        n_train, loss_sample_rows, replace=False)))
    # position[r]: where file row r goes in load_dataset's order (test rows first).
    position = np.empty(scan.n_rows, dtype=np.int64)
    position[np.random.default_rng(seed).permutation(scan.n_rows)] = np.arange(scan.n_rows)

    _clear_out(out)
    pieces = os.path.join(out, _PIECES)
    piece_file = [os.path.join(pieces, f"{c}.bin") for c in range(n_chunks)]
    test_piece, sample_piece = os.path.join(pieces, "test.bin"), os.path.join(pieces, "loss.bin")
    try:
        first = 0
        for X, y in reader.blocks():
            where = position[first : first + X.shape[0]]
            first += X.shape[0]
            train = where - n_test
            chunk = np.where(train >= 0, np.searchsorted(bounds, train, side="right") - 1, -1)
            by_chunk = np.argsort(chunk, kind="stable")
            cuts = np.flatnonzero(np.diff(chunk[by_chunk])) + 1
            for rows in np.split(by_chunk, cuts):
                if len(rows) == 0:
                    continue
                c = int(chunk[rows[0]])
                if c < 0:
                    _append_piece(test_piece, where[rows], X, y, rows)
                else:
                    _append_piece(piece_file[c], train[rows] - bounds[c], X, y, rows)
            slot = np.minimum(np.searchsorted(sample, train), len(sample) - 1)
            kept = np.flatnonzero((train >= 0) & (sample[slot] == train))
            if len(kept):
                _append_piece(sample_piece, slot[kept], X, y, kept)
            del X, y
        del position
        entries = []
        for c in range(n_chunks):
            X, y = _read_pieces(piece_file[c], int(bounds[c + 1] - bounds[c]), scan.n_features)
            os.remove(piece_file[c])
            entries.append(_write_npz(os.path.join(out, f"chunk-{c:05d}.npz"), X, y))
            del X, y
        test = _write_npz(os.path.join(out, TEST_FILE),
                          *_read_pieces(test_piece, n_test, scan.n_features))
        loss = _write_npz(os.path.join(out, LOSS_SAMPLE_FILE),
                          *_read_pieces(sample_piece, len(sample), scan.n_features))
    finally:
        shutil.rmtree(pieces, ignore_errors=True)
    sigma, fingerprint = _summarise(out, entries, n_train, scan.n_features)
    labels = scan.labels.tolist()
    manifest = {
        "format": FORMAT, "version": VERSION,
        "source": os.path.basename(source),
        "name": os.path.splitext(os.path.basename(source))[0],
        "n_rows": scan.n_rows, "n_train": n_train, "n_test": n_test,
        "n_features": scan.n_features, "nnz": sum(entry["nnz"] for entry in entries),
        "labels": "+-1", "source_labels": labels,
        "source_label_convention": "+-1" if set(labels) <= {-1.0, 1.0} else "0/1",
        "seed": seed, "test_fraction": float(test_fraction), "zero_based": scan.zero_based,
        "chunk_bounds": bounds.tolist(), "chunks": entries, "test": test, "loss_sample": loss,
        "loss_sample_rows": len(sample), "loss_sample_exact": bool(exact),
        "sigma_max_squared": sigma, "power_iterations": POWER_ITERATIONS,
        "fingerprint": fingerprint,
    }
    temporary = os.path.join(out, MANIFEST + ".tmp")
    with open(temporary, "w") as stream:
        json.dump(manifest, stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, os.path.join(out, MANIFEST))
    os.remove(os.path.join(out, _INCOMPLETE))
    return ShardedDataset(out)


# --- Reading -------------------------------------------------------------------------------


def _npz_arrays(source) -> dict:
    with np.load(source, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _rows_matrix(arrays: dict, n_features: int) -> tuple[sp.csr_matrix, np.ndarray]:
    indices = arrays["indices"]
    data = np.ones(len(indices)) if arrays["binary"] else arrays["data"]
    index_dtype = np.int32 if max(len(indices), n_features) < 2**31 else np.int64
    X = sp.csr_matrix((data, indices, arrays["indptr"].astype(index_dtype)),
                      shape=(len(arrays["indptr"]) - 1, n_features))
    X.indices = X.indices.astype(np.int32, copy=False)
    X.has_canonical_format = True
    return X, arrays["y"]


def _load_rows(path: str, n_features: int):
    """A file the writer has just written, unchecked, as (CSR, labels)."""
    return _rows_matrix(_npz_arrays(path), n_features)


# Manifest fields and their JSON types (bool is not accepted for an int).
_FIELDS = {
    "source": str, "name": str, "n_rows": int, "n_train": int, "n_test": int,
    "n_features": int, "nnz": int, "labels": str, "source_labels": list, "seed": int,
    "test_fraction": (int, float), "zero_based": (bool, type(None)), "chunk_bounds": list,
    "chunks": list, "test": dict, "loss_sample": dict, "loss_sample_rows": int,
    "loss_sample_exact": bool, "sigma_max_squared": (int, float), "fingerprint": str,
}
_ENTRY_FIELDS = {"name": str, "bytes": int, "sha256": str, "rows": int, "nnz": int}


def _has_type(value, kind) -> bool:
    return isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, (int, float)))


class ShardedDataset:
    """A sharded set's folder (written by write_shards): its manifest, then rows on demand.

    Opening reads and checks only manifest.json. ``rows(start, stop)`` reads just
    the chunks holding those training rows, one at a time; every file is checked
    against the manifest's size and sha256 the first time it is read (ShardError,
    one line naming the file and the fix, if missing, truncated or changed).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        manifest = self._read_manifest()
        for key in ("name", "n_train", "n_test", "n_features", "nnz", "fingerprint", "seed",
                    "test_fraction", "loss_sample_exact", "loss_sample_rows"):
            setattr(self, key, manifest[key])
        self.sigma_max_squared = float(manifest["sigma_max_squared"])
        self.test_fraction = float(self.test_fraction)
        self.chunk_bounds = np.asarray(manifest["chunk_bounds"], dtype=np.int64)
        self.manifest = manifest
        self._verified = set()

    def __repr__(self):
        return (f"ShardedDataset({self.path!r}: {self.n_train} training rows in "
                f"{len(self.chunk_bounds) - 1} chunks, {self.n_test} test rows, "
                f"{self.n_features} features)")

    def _bad(self, what: str) -> ShardError:
        return ShardError(f"{self.path}: {what}; {_FIX}")

    def _read_manifest(self) -> dict:
        where = os.path.join(self.path, MANIFEST)
        if not os.path.isdir(self.path):
            raise ShardError(f"{self.path}: no such folder of a sharded set; {_FIX}")
        try:
            with open(where) as stream:
                manifest = json.load(stream)
        except FileNotFoundError:
            raise self._bad(f"no {MANIFEST} (not a sharded set, or its shard run did not "
                            f"finish)") from None
        except (OSError, ValueError) as exc:
            raise self._bad(f"unreadable {MANIFEST} ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise self._bad(f"{MANIFEST} is not a gc_fast sharded set's manifest")
        if manifest.get("version") != VERSION:
            raise self._bad(f"{MANIFEST} is version {manifest.get('version')!r} of the layout, "
                            f"this gc_fast reads version {VERSION}")
        self._check_manifest(manifest)
        return manifest

    def _check_manifest(self, m: dict) -> None:
        wrong = [key for key, kind in _FIELDS.items() if not _has_type(m.get(key), kind)]
        if wrong:
            raise self._bad(f"{MANIFEST} lacks or has bad fields {wrong}")
        entries = [*m["chunks"], m["test"], m["loss_sample"]]
        for entry in entries:
            if not (isinstance(entry, dict) and all(_has_type(entry.get(key), kind)
                                                    for key, kind in _ENTRY_FIELDS.items())
                    and os.path.basename(entry["name"]) == entry["name"]
                    and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
                raise self._bad(f"{MANIFEST} has a bad file entry {entry!r}")
        bounds = m["chunk_bounds"]
        problems = []
        if not (m["n_train"] >= 1 and m["n_test"] >= 0 and m["n_rows"] == m["n_train"] + m["n_test"]
                and m["n_features"] >= 1):
            problems.append("row counts")
        if not (len(bounds) >= 2 and all(isinstance(b, int) for b in bounds) and bounds[0] == 0
                and bounds[-1] == m["n_train"] and all(np.diff(bounds) >= 1)
                and len(m["chunks"]) == len(bounds) - 1
                and all(entry["rows"] == b - a for entry, a, b in
                        zip(m["chunks"], bounds[:-1], bounds[1:], strict=False))):
            problems.append("chunk_bounds")
        if sum(entry["nnz"] for entry in m["chunks"]) != m["nnz"]:
            problems.append("nnz")
        if not (m["test"]["rows"] == m["n_test"] and 1 <= m["loss_sample_rows"] <= m["n_train"]
                and m["loss_sample"]["rows"] == m["loss_sample_rows"]
                and m["loss_sample_exact"] == (m["loss_sample_rows"] == m["n_train"])):
            problems.append("test or loss sample rows")
        if not (0.0 <= m["test_fraction"] < 1.0 and np.isfinite(m["sigma_max_squared"])
                and m["sigma_max_squared"] >= 0
                and re.fullmatch(r"[0-9a-f]{16}", m["fingerprint"])):
            problems.append("test_fraction, sigma_max_squared or fingerprint")
        if problems:
            raise self._bad(f"{MANIFEST} is inconsistent ({', '.join(problems)})")

    def _arrays(self, entry: dict) -> dict:
        """A file's arrays, its size and checksum checked the first time it is read."""
        path = os.path.join(self.path, entry["name"])
        name = entry["name"]
        source = path
        if name not in self._verified:
            try:
                with open(path, "rb") as stream:
                    raw = stream.read()
            except FileNotFoundError:
                raise ShardError(f"{path}: shard file missing; {_FIX}") from None
            except OSError as exc:
                raise ShardError(f"{path}: shard file unreadable ({exc.strerror}); "
                                 f"{_FIX}") from None
            if len(raw) != entry["bytes"]:
                raise ShardError(f"{path}: shard file truncated or resized ({len(raw)} bytes, "
                                 f"the manifest says {entry['bytes']}); {_FIX}")
            if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
                raise ShardError(f"{path}: shard file checksum mismatch (changed or damaged "
                                 f"since it was written); {_FIX}")
            source = io.BytesIO(raw)
        try:
            arrays = _npz_arrays(source)
            rows, nnz = entry["rows"], entry["nnz"]
            binary = bool(arrays["binary"])
            good = (arrays["indptr"].shape == (rows + 1,) and arrays["indptr"][0] == 0
                    and arrays["indptr"][-1] == nnz and arrays["indices"].shape == (nnz,)
                    and arrays["data"].shape == ((0,) if binary else (nnz,))
                    and arrays["y"].shape == (rows,))
        except Exception as exc:
            raise ShardError(f"{path}: shard file unreadable ({exc}); {_FIX}") from None
        if not good:
            raise ShardError(f"{path}: shard file does not match its manifest entry; {_FIX}")
        self._verified.add(name)
        return arrays

    def _matrix(self, entry: dict):
        return _rows_matrix(self._arrays(entry), self.n_features)

    def rows(self, start: int, stop: int) -> tuple[sp.csr_matrix, np.ndarray]:
        """Training rows [start, stop) as (canonical CSR with n_features columns, labels)."""
        start = _check_count("start", start, 0, self.n_train)
        stop = _check_count("stop", stop, start, self.n_train)
        bounds = self.chunk_bounds
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        last = int(np.searchsorted(bounds, stop, side="left"))
        chosen = range(first, last) if stop > start else range(0)
        # Upper bound of the non-zeros: pages past the ones filled are never touched.
        capacity = sum(self.manifest["chunks"][c]["nnz"] for c in chosen)
        indptr = np.zeros(stop - start + 1, dtype=np.int64)
        indices = np.empty(capacity, dtype=np.int32)
        data = np.empty(capacity)
        y = np.empty(stop - start)
        filled = 0
        for c in chosen:
            arrays = self._arrays(self.manifest["chunks"][c])
            first_row, stop_row = max(start, bounds[c]), min(stop, bounds[c + 1])
            low, high = first_row - bounds[c], stop_row - bounds[c]  # rows within the chunk
            a, b = arrays["indptr"][low], arrays["indptr"][high]
            indices[filled : filled + b - a] = arrays["indices"][a:b]
            data[filled : filled + b - a] = 1.0 if arrays["binary"] else arrays["data"][a:b]
            indptr[first_row - start + 1 : stop_row - start + 1] = (
                arrays["indptr"][low + 1 : high + 1] - a + filled)
            y[first_row - start : stop_row - start] = arrays["y"][low:high]
            filled += b - a
            del arrays
        return _rows_matrix({"indptr": indptr, "indices": indices[:filled], "data": data[:filled],
                             "binary": False, "y": y}, self.n_features)

    def test_set(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """The test rows (X_test, y_test): 0 x n_features when the split has none."""
        return self._matrix(self.manifest["test"])

    def loss_sample(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """The training rows the training loss is evaluated on: all of them, in order, when
        loss_sample_exact, else a seeded sample of loss_sample_rows rows."""
        return self._matrix(self.manifest["loss_sample"])


__all__ = ["FORMAT", "VERSION", "ShardError", "ShardedDataset", "is_sharded", "open_shards",
           "write_shards"]
