"""The sharded layout (gc_fast.data.shards): rows equal load_dataset's, streamed writing, checked
reading, the command line, and the cgroup-aware memory check of plain files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from gc_fast import data as data_module
from gc_fast.checkpoint import data_fingerprint
from gc_fast.data import amazon_like, dump_svmlight, load_dataset, save_npz_dataset
from gc_fast.data.shards import MANIFEST, ShardedDataset, ShardError, is_sharded, write_shards
from gc_fast.objective import _largest_singular_value_squared


@pytest.fixture(scope="module")
def amazon_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("amazon") / "amazon.svm"
    dump_svmlight(path, amazon_like(n_train=3000, n_test=700, seed=1))
    return path


# Hand-written svmlight files: {0, 1} labels, explicit zeros, comments, blank lines, qid.
ZERO_BASED = b"""# zero-based: index 0 is present
1 0:1.5 3:2 7:0
0 2:1 5:-3

0 qid:4 0:0 1:1 # a comment
1 4:2.5 6:1
1
0 1:1 2:1 3:1
1 0:2 7:1
"""
ONE_BASED = ZERO_BASED.replace(b"qid:4 0:0", b"qid:4").replace(b"1 0:1.5", b"1 1:1.5") \
    .replace(b"1 0:2", b"1 2:2")


def assert_same_rows(X, y, X_ref, y_ref):
    assert X.shape == X_ref.shape
    assert np.array_equal(X.indptr, X_ref.indptr)
    assert np.array_equal(X.indices, X_ref.indices) and X.indices.dtype == np.int32
    assert np.array_equal(X.data, X_ref.data) and X.data.dtype == np.float64
    assert np.array_equal(y, y_ref) and y.dtype == np.float64


def assert_matches_load_dataset(shards, source, test_fraction, seed, n_ranges=40):
    ref = load_dataset(source, test_fraction=test_fraction, seed=seed)
    n = ref.X_train.shape[0]
    assert (shards.n_train, shards.n_test, shards.n_features) == (n, ref.X_test.shape[0],
                                                                   ref.n_features)
    assert shards.nnz == ref.X_train.nnz and shards.name == ref.name
    bounds = shards.chunk_bounds
    ranges = [(0, n), (0, 0), (n, n), (0, 1), (n - 1, n)]
    ranges += [(int(b) - 1, int(b) + 1) for b in bounds[1:-1]]  # across each chunk boundary
    ranges += [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)][:5]
    rng = np.random.default_rng(0)
    ranges += [tuple(sorted(rng.integers(0, n + 1, 2).tolist())) for _ in range(n_ranges)]
    for start, stop in ranges:
        assert_same_rows(*shards.rows(start, stop), ref.X_train[start:stop],
                         ref.y_train[start:stop])
    assert_same_rows(*shards.test_set(), ref.X_test, ref.y_test)
    X_loss, y_loss = shards.loss_sample()
    if shards.loss_sample_exact:
        assert_same_rows(X_loss, y_loss, ref.X_train, ref.y_train)
    assert shards.sigma_max_squared == pytest.approx(
        _largest_singular_value_squared(ref.X_train, 20, 0), rel=1e-12)
    # The fingerprint is the checkpoint's of the same rows (int32 index pointers, as scipy
    # gives them for a file's rows): a run resumes across the file and its shards.
    X_ref = ref.X_train.copy()
    X_ref.indptr = X_ref.indptr.astype(np.int32)
    assert shards.fingerprint == data_fingerprint(X_ref, ref.y_train)
    return ref


@pytest.mark.parametrize("test_fraction,seed,chunks", [
    (0.0, 0, None), (0.2, 0, 7), (0.2, 5, 1), (0.0, 3, 64), (0.2, 2, 97),
])
def test_rows_equal_load_dataset(amazon_file, tmp_path, test_fraction, seed, chunks):
    shards = write_shards(amazon_file, tmp_path / "out", test_fraction=test_fraction, seed=seed,
                          chunks=chunks)
    assert len(shards.chunk_bounds) - 1 == (chunks or 1)
    sizes = np.diff(shards.chunk_bounds)
    assert sizes.max() - sizes.min() <= 1
    assert_matches_load_dataset(shards, amazon_file, test_fraction, seed, n_ranges=15)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [f"chunk-{c:05d}.npz" for c in range(len(sizes))] + ["test.npz", "loss-sample.npz",
                                                              MANIFEST])


@pytest.mark.parametrize("text", [ZERO_BASED, ONE_BASED], ids=["zero-based", "one-based"])
@pytest.mark.parametrize("test_fraction,seed,chunks", [(0.0, 0, 1), (0.2, 1, 3), (0.25, 4, 5)])
def test_small_svmlight_files(tmp_path, text, test_fraction, seed, chunks):
    source = tmp_path / "small.txt"
    source.write_bytes(text)
    shards = write_shards(source, tmp_path / "out", test_fraction=test_fraction, seed=seed,
                          chunks=chunks)
    ref = assert_matches_load_dataset(shards, source, test_fraction, seed)
    assert set(np.unique(ref.y_train)) <= {-1.0, 1.0}
    manifest = shards.manifest
    assert manifest["zero_based"] == (text == ZERO_BASED)
    assert manifest["source_labels"] == [0.0, 1.0] and manifest["labels"] == "+-1"
    # Streaming: tiny blocks (a line or two each) give the very same folder.
    tiny = write_shards(source, tmp_path / "tiny", test_fraction=test_fraction, seed=seed,
                        chunks=chunks, block_bytes=7)
    assert tiny.manifest == manifest


def test_small_blocks_give_the_same_shards(amazon_file, tmp_path):
    default = write_shards(amazon_file, tmp_path / "default", test_fraction=0.2, seed=1, chunks=5,
                           loss_sample_rows=500)
    streamed = write_shards(amazon_file, tmp_path / "streamed", test_fraction=0.2, seed=1,
                            chunks=5, loss_sample_rows=500, block_bytes=20_000)
    assert streamed.manifest == default.manifest


def test_a_sampled_loss_sample(amazon_file, tmp_path):
    shards = write_shards(amazon_file, tmp_path / "out", test_fraction=0.2, seed=3,
                          loss_sample_rows=100)
    ref = load_dataset(amazon_file, test_fraction=0.2, seed=3)
    assert not shards.loss_sample_exact and shards.loss_sample_rows == 100
    rows = np.sort(np.random.default_rng(4).choice(ref.X_train.shape[0], 100, replace=False))
    assert_same_rows(*shards.loss_sample(), ref.X_train[rows], ref.y_train[rows])


def test_npz_sources(amazon_file, tmp_path):
    ref = load_dataset(amazon_file, test_fraction=0.0)
    source = tmp_path / "amazon.npz"
    save_npz_dataset(source, ref.X_train, ref.y_train)
    shards = write_shards(source, tmp_path / "out", test_fraction=0.2, seed=2, chunks=4,
                          block_bytes=5000)
    assert_matches_load_dataset(shards, source, 0.2, 2, n_ranges=10)
    # Not canonical: duplicates, unsorted indices, explicit zeros, integer values, {0, 1}
    # labels, stored uncompressed.
    raw = tmp_path / "raw.npz"
    np.savez(raw, data=np.array([3, 0, 2, 5, 1, 1, 4]), indices=np.array([4, 1, 0, 4, 2, 2, 0]),
             indptr=np.array([0, 2, 2, 6, 7]), shape=np.array([4, 6]), y=np.array([0, 1, 1, 0]))
    for seed in range(3):
        shards = write_shards(raw, tmp_path / f"raw{seed}", test_fraction=0.25, seed=seed,
                              chunks=2, block_bytes=10)
        assert_matches_load_dataset(shards, raw, 0.25, seed)


@pytest.mark.parametrize("text,message", [
    (b"1 3:1 2:1\n", "sorted and unique"),
    (b"1 2:1 2:1\n", "sorted and unique"),
    (b"2 1:1\n1 2:1\n", "labels must be in"),
    (b"1 1:nan\n1 2:1\n", "NaN or infinite"),
    (b"inf 1:1\n1 2:1\n", "NaN or infinite"),
    (b"", "empty data set"),
    (b"# only a comment\n", "empty data set"),
    (b"1 1:1\n", "too few rows"),
    (b"1 x:1\n", "not a valid svmlight"),
])
def test_bad_sources_fail_as_load_dataset_does(tmp_path, text, message):
    source = tmp_path / "bad.txt"
    source.write_bytes(text)
    with pytest.raises(ValueError) as expected:
        load_dataset(source, test_fraction=0.5)
    with pytest.raises(ValueError) as error:
        write_shards(source, tmp_path / "out", test_fraction=0.5, block_bytes=3)
    assert str(error.value) == str(expected.value)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not is_sharded(tmp_path / "out")


@pytest.fixture
def folder(amazon_file, tmp_path):
    return write_shards(amazon_file, tmp_path / "shards", test_fraction=0.2, chunks=4).path


def one_line_error(function, *names):
    with pytest.raises(ShardError) as error:
        function()
    message = str(error.value)
    assert "\n" not in message and "python -m gc_fast.data shard" in message
    for name in names:
        assert name in message
    return message


@pytest.mark.parametrize("damage,what", [
    (lambda path: os.remove(path), "missing"),
    (lambda path: open(path, "r+b").truncate(1000), "truncated"),
    (lambda path: flip_byte(path, 5000), "checksum"),
], ids=["missing", "truncated", "flipped"])
def test_damaged_chunks_are_refused(folder, damage, what):
    shards = ShardedDataset(folder)
    shards.rows(0, 10)  # chunk 0 is fine and now verified
    damage(os.path.join(folder, "chunk-00002.npz"))
    bounds = shards.chunk_bounds
    message = one_line_error(lambda: shards.rows(int(bounds[1]), int(bounds[2]) + 1),
                             "chunk-00002.npz", what)
    assert message.startswith(os.path.join(folder, "chunk-00002.npz"))
    damage(os.path.join(folder, "test.npz"))
    one_line_error(shards.test_set, "test.npz", what)


def flip_byte(path, offset):
    with open(path, "r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0x40]))


def test_each_file_is_verified_once(folder, monkeypatch):
    shards = ShardedDataset(folder)
    hashed = []
    real = data_module.shards.hashlib.sha256
    monkeypatch.setattr(data_module.shards.hashlib, "sha256",
                        lambda *args: hashed.append(1) or real(*args))
    for _ in range(3):
        shards.rows(0, shards.n_train)
        shards.test_set()
    assert len(hashed) == 5  # four chunks and the test file


def test_bad_manifests_are_refused(folder, tmp_path):
    manifest_path = os.path.join(folder, MANIFEST)
    manifest = json.loads(open(manifest_path).read())
    manifest["version"] = 99
    with open(manifest_path, "w") as stream:
        json.dump(manifest, stream)
    one_line_error(lambda: ShardedDataset(folder), folder, "version 99")
    manifest["version"] = 1
    manifest["chunk_bounds"][1] += 1
    with open(manifest_path, "w") as stream:
        json.dump(manifest, stream)
    one_line_error(lambda: ShardedDataset(folder), folder, "chunk_bounds")
    del manifest["fingerprint"]
    with open(manifest_path, "w") as stream:
        json.dump(manifest, stream)
    one_line_error(lambda: ShardedDataset(folder), folder, "fingerprint")
    os.remove(manifest_path)
    assert not is_sharded(folder)
    one_line_error(lambda: ShardedDataset(folder), folder, "no manifest.json")
    one_line_error(lambda: ShardedDataset(tmp_path / "nowhere"), "nowhere")


def test_the_output_folder(amazon_file, folder, tmp_path):
    # A previous sharded set is overwritten, a stale chunk of it removed.
    open(os.path.join(folder, "chunk-00009.npz"), "w").close()
    shards = write_shards(amazon_file, folder, chunks=2)
    assert sorted(os.listdir(folder)) == ["chunk-00000.npz", "chunk-00001.npz",
                                          "loss-sample.npz", MANIFEST, "test.npz"]
    assert shards.n_test == 0 and shards.test_set()[0].shape == (0, shards.n_features)
    # A folder of other files is refused, untouched.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no gc_fast sharded set") as error:
        write_shards(amazon_file, other)
    assert str(other) in str(error.value) and "\n" not in str(error.value)
    assert os.listdir(other) == ["notes.txt"]
    # A killed run leaves its marker and no manifest: not a set, but shard can re-use the folder.
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / ".gc_fast-shards-incomplete").touch()
    (killed / "chunk-00000.npz").write_bytes(b"half")
    assert not is_sharded(killed)
    assert write_shards(amazon_file, killed, chunks=1).n_train == 3700
    with pytest.raises(ValueError, match="chunks must be in"):
        write_shards(amazon_file, tmp_path / "many", chunks=3701)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gc_fast.data", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_command_line(amazon_file, tmp_path):
    result = run_cli("shard", tmp_path / "missing.svm", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("gc_fast.data: error: ") and "missing.svm" in result.stderr
    result = run_cli("shard", amazon_file, tmp_path / "out", "--test-fraction", "0.2",
                     "--seed", "4", "--chunks", "3", "--loss-sample-rows", "1000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "3700 rows (2960 train, 740 test)" in result.stdout and "3 chunks" in result.stdout
    shards = ShardedDataset(tmp_path / "out")
    assert (shards.seed, shards.test_fraction, shards.loss_sample_rows) == (4, 0.2, 1000)


def test_command_line_errors_in_process(amazon_file, tmp_path, capsys):
    from gc_fast.data.__main__ import main

    for args in (["--chunks", "0"], ["--test-fraction", "1.5"], ["--seed", "x"]):
        with pytest.raises(SystemExit) as exit_status:
            main(["shard", str(amazon_file), str(tmp_path / "out"), *args])
        assert exit_status.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("gc_fast.data: error: ") and err.count("\n") == 1


# --- The memory check of plain files -------------------------------------------------------


@pytest.fixture
def fake_system(tmp_path, monkeypatch):
    """Fake /proc/meminfo, /proc/self/cgroup and /sys/fs/cgroup under tmp_path."""
    root = tmp_path / "cgroup"
    monkeypatch.setattr(data_module, "_MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(data_module, "_PROC_CGROUP", str(tmp_path / "proc-cgroup"))
    monkeypatch.setattr(data_module, "_CGROUP_ROOT", str(root))
    (tmp_path / "meminfo").write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")

    def write(relative, text):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return tmp_path, write


def test_cgroup_v2_limit(fake_system):
    tmp_path, write = fake_system
    (tmp_path / "proc-cgroup").write_text("0::/user.slice/job\n")
    write("user.slice/job/memory.max", "max\n")  # no limit here: the parent's applies
    write("user.slice/job/memory.current", "100\n")
    write("user.slice/memory.max", f"{2**30}\n")
    write("user.slice/memory.current", f"{2**28}\n")
    assert data_module._cgroup_memory_bytes() == 2**30 - 2**28
    assert data_module._available_memory_bytes() == 2**30 - 2**28
    write("user.slice/memory.max", f"{2**40}\n")  # more than MemAvailable: MemAvailable counts
    assert data_module._available_memory_bytes() == 4000000 * 1024


def test_cgroup_v1_limit(fake_system):
    tmp_path, write = fake_system
    (tmp_path / "proc-cgroup").write_text("12:cpu,cpuacct:/docker/x\n4:memory:/docker/x\n")
    write("memory/docker/x/memory.limit_in_bytes", f"{2**30}\n")
    write("memory/docker/x/memory.usage_in_bytes", f"{2**29}\n")
    write("memory/memory.limit_in_bytes", "9223372036854771712\n")  # unlimited
    write("memory/memory.usage_in_bytes", "5\n")
    assert data_module._available_memory_bytes() == 2**29


def test_no_cgroup_limit(fake_system):
    tmp_path, write = fake_system
    assert data_module._cgroup_memory_bytes() is None  # no /proc/self/cgroup
    (tmp_path / "proc-cgroup").write_text("0::/\n")  # the root: no memory.max file
    assert data_module._cgroup_memory_bytes() is None
    (tmp_path / "proc-cgroup").write_text("0::/a\n")
    write("a/memory.max", "garbage\n")
    write("a/memory.current", "1\n")
    assert data_module._available_memory_bytes() == 4000000 * 1024


def test_a_file_too_large_names_the_shard_command(amazon_file, monkeypatch):
    monkeypatch.setattr(data_module, "_available_memory_bytes", lambda: 1000)
    with pytest.raises(ValueError) as error:
        load_dataset(amazon_file)
    message = str(error.value)
    assert "too large to load" in message and "\n" not in message
    assert f"python -m gc_fast.data shard {amazon_file} OUT/" in message
    assert "--dataset OUT/" in message


def test_a_folder_is_not_a_data_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m gc_fast.data shard FILE"):
        load_dataset(tmp_path)


def test_empty_rows_of_a_sharded_set_are_canonical(folder):
    X, y = ShardedDataset(folder).rows(3, 3)
    assert X.shape == (0, ShardedDataset(folder).n_features) and len(y) == 0
    assert sp.isspmatrix_csr(X)
