"""Sharded data sets in the trainer, gc_fast.run and the estimators: each worker reads only its
partitions, and the result equals training on the whole file."""
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import max_relative_difference, run_mpi, train

import gc_fast
from gc_fast.data import dump_svmlight, load_dataset, partition_bounds
from gc_fast.data.shards import ShardedDataset, write_shards
from gc_fast.estimators import GradientCodedLogisticRegression
from gc_fast.objective import logistic_gradient, logistic_loss

ITERATIONS = ["--iterations", "12"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """An Amazon-shaped svmlight file of 1500 rows."""
    path = tmp_path_factory.mktemp("file") / "small.svm"
    dump_svmlight(path, gc_fast.data.amazon_like(n_train=1200, n_test=300, n_features=3000,
                                                 seed=3))
    return path


@pytest.fixture(scope="module")
def folder(data_file, tmp_path_factory):
    """data_file sharded as the trainer's default split (test fraction 0.2, seed 0)."""
    out = tmp_path_factory.mktemp("shards") / "small"
    write_shards(data_file, out, test_fraction=0.2, seed=0, chunks=7)
    return out


@pytest.fixture(scope="module")
def file_naive(data_file, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("naive")
    return train(5, ["--dataset", data_file, *ITERATIONS, "--scheme", "naive"], tmp_path, "naive")


@pytest.mark.parametrize("extra", [
    ["--scheme", "naive"],
    ["--scheme", "crc", "--stragglers", "1", "--delay", "count:k=1,seconds=0.03"],
    ["--scheme", "frc", "--stragglers", "1", "--delay", "count:k=1,seconds=0.03",
     "--shared-memory", "off"],
    ["--scheme", "partial-crc", "--stragglers", "1", "--partitions-per-worker", "3"],
], ids=["naive", "crc", "frc-messages", "partial-crc"])
def test_sharded_folder_trains_like_the_whole_file(folder, file_naive, tmp_path, extra):
    results, trajectory = train(5, ["--dataset", folder, *ITERATIONS, *extra], tmp_path, "run")
    reference, reference_trajectory = file_naive
    assert max_relative_difference(trajectory, reference_trajectory) <= 1e-9
    summary, expected = results["summary"], reference["summary"]
    # The step size comes from the manifest's power iteration: the file's up to rounding.
    assert summary["lr"] == pytest.approx(expected["lr"], rel=1e-12)
    # Every training row is in the loss sample of this small set: the loss is exact.
    assert summary["train_loss_sampled"] is False
    assert summary["train_loss_rows"] == 1200
    assert summary["final_train_loss"] == pytest.approx(expected["final_train_loss"], rel=1e-10)
    assert summary["final_test_auc"] == pytest.approx(expected["final_test_auc"], rel=1e-10)
    assert results["config"]["test_fraction"] == 0.2
    for stats in summary["worker_stats"]:
        assert stats["peak_rss_bytes"] > 0
        assert stats["setup_seconds"] > 0


def test_a_sampled_training_loss_says_so(data_file, tmp_path):
    out = tmp_path / "sampled"
    write_shards(data_file, out, loss_sample_rows=100)
    result = run_mpi(3, ["--dataset", out, "--iterations", "3", "--out", tmp_path / "r.json"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train loss on a sample of 100 training rows" in result.stdout
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["train_loss_sampled"] is True and summary["train_loss_rows"] == 100
    # The reported loss is the mean over the sample's rows at the final model.
    result = run_mpi(3, ["--dataset", out, "--iterations", "3", "--out", tmp_path / "r.json",
                         "--save-model", tmp_path / "w.npy", "--quiet"], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    X, y = ShardedDataset(out).loss_sample()
    w = np.load(tmp_path / "w.npy")
    assert summary["final_train_loss"] == pytest.approx(logistic_loss(X, y, w, 1e-4), rel=1e-12)


def _one_error_line(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_damaged_shard_stops_the_trainer_with_one_line(data_file, tmp_path):
    out = tmp_path / "damaged"
    write_shards(data_file, out, chunks=4)
    chunk = sorted(out.glob("chunk-*"))[2]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    line = _one_error_line(run_mpi(5, ["--dataset", out, "--iterations", "2"], tmp_path))
    assert chunk.name in line and "shard" in line


def test_a_sharded_folder_keeps_its_split(folder, tmp_path):
    line = _one_error_line(run_mpi(3, ["--dataset", folder, "--test-fraction", "0.1"], tmp_path))
    assert "--test-fraction 0.2" in line and "gc_fast.data shard" in line
    line = _one_error_line(run_mpi(3, ["--dataset", folder, "--rows", "10"], tmp_path))
    assert "sharded folder" in line


def test_run_reads_each_partition_from_the_folder(folder, data_file):
    shards = ShardedDataset(folder)
    n_train, n_partitions = shards.n_train, 4

    def partition_gradient(j, w, rows):
        X, y = rows
        return logistic_gradient(X, y, w, 0.0) * X.shape[0] / n_train

    loaded = []

    def load(j):
        loaded.append(j)
        bounds = partition_bounds(n_train, n_partitions)
        return shards.rows(int(bounds[j]), int(bounds[j + 1]))

    common = {"lr": 2.0, "iterations": 15, "scheme": "crc", "n_stragglers": 1, "l2": 1e-3,
              "local": True, "delay": "count:k=1,seconds=0.01"}
    w0 = np.zeros(shards.n_features)
    from_folder = gc_fast.run(partition_gradient, w0, n_partitions, partition_data=folder,
                              **common)
    from_callable = gc_fast.run(partition_gradient, w0, n_partitions, partition_data=load,
                                **common)
    # Each of the 4 workers loads the s + 1 = 2 partitions it holds, once.
    assert sorted(loaded) == [0, 0, 1, 1, 2, 2, 3, 3]
    # The oracle: plain Nesterov on the whole training set (load_dataset's split).
    data = load_dataset(data_file, test_fraction=0.2, seed=0)
    naive = gc_fast.run(lambda j, w: logistic_gradient(data.X_train, data.y_train, w, 0.0),
                        w0, 1, lr=2.0, iterations=15, scheme="naive", l2=1e-3, local=True)
    np.testing.assert_allclose(from_folder.w, naive.w, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(from_callable.w, naive.w, rtol=1e-10, atol=1e-14)


def test_the_estimator_fits_a_sharded_folder_like_the_arrays(folder, data_file):
    data = load_dataset(data_file, test_fraction=0.2, seed=0)
    options = {"scheme": "crc", "n_stragglers": 1, "n_workers": 4, "max_iter": 30,
               "random_state": 0, "local": True}
    from_folder = GradientCodedLogisticRegression(**options).fit(str(folder))
    from_arrays = GradientCodedLogisticRegression(**options).fit(data.X_train, data.y_train)
    assert from_folder.lr_ == pytest.approx(from_arrays.lr_, rel=1e-12)
    np.testing.assert_allclose(from_folder.coef_, from_arrays.coef_, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(from_folder.predict(data.X_test),
                                  np.where(from_arrays.predict(data.X_test) > 0, 1.0, -1.0))
    with pytest.raises(ValueError, match="without y"):
        GradientCodedLogisticRegression().fit(str(folder), data.y_train)
    with pytest.raises(ValueError, match="fit_intercept"):
        GradientCodedLogisticRegression(fit_intercept=True).fit(str(folder))


def test_shard_command_then_train_in_two_commands(data_file, tmp_path):
    """The documented way: python -m gc_fast.data shard FILE OUT/, then --dataset OUT/."""
    out = tmp_path / "out"
    shard = subprocess.run([sys.executable, "-m", "gc_fast.data", "shard", data_file, out,
                            "--test-fraction", "0.2"], capture_output=True, text=True)
    assert shard.returncode == 0, shard.stderr
    result = run_mpi(3, ["--dataset", out, "--iterations", "3"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data: small" in result.stdout
