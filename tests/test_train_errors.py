"""Bad input to the trainer: one clear error line, non-zero exit, no hang, no traceback."""
import subprocess
import sys

import pytest
from helpers import mpi_env, run_mpi

SMALL = ["--rows", "400", "--features", "500", "--iterations", "3", "--quiet"]


def assert_clean_failure(result, *expected):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if "gc_fast.train: error:" in line]
    assert len(error_lines) == 1, result.stderr
    for word in expected:
        assert word in error_lines[0], error_lines[0]


@pytest.mark.parametrize("n_ranks, args, expected", [
    (4, ["--scheme", "frc", "--stragglers", "1"], ["divid", "mpirun -n"]),
    (4, ["--scheme", "crc", "--stragglers", "3"], ["s", "mpirun -n"]),
    (4, ["--scheme", "bogus"], ["invalid choice", "--help"]),
    (4, ["--delay", "fixed:p=2,seconds=1"], ["p"]),
    (4, ["--delay", "sometimes"], ["none | fixed"]),
    (4, ["--delay", "fail:workers=9,at=2"], ["9"]),
    (4, ["--delay", "kill:workers=2,at=3"], ["ft", "mpirun --with-ft ulfm"]),  # MPICH cannot survive it
    (4, ["--delay", "kill:workers=2,3,at=1,2,3"], ["one per worker"]),
    (4, ["--stragglers", "-1"], ["s"]),
    (4, ["--no-such-option"], ["unrecognized", "--help"]),
    (4, ["--scheme", "partial-crc", "--partitions-per-worker", "2"], ["partitions_per_worker", ">="]),
    (4, ["--partitions-per-worker", "3"], ["partial"]),
    (4, ["--wait", "2"], ["--wait", "expander"]),
    (4, ["--wait-ms", "20"], ["--wait-ms", "expander"]),
    (4, ["--scheme", "expander", "--wait", "9"], ["wait"]),
    (4, ["--scheme", "expander", "--wait-ms", "-3"], ["--wait-ms", "positive"]),
    (4, ["--scheme", "pairwise", "--stragglers", "2"], ["pairwise"]),
    (4, ["--scheme", "hetero-crc"], ["--speeds"]),
    (4, ["--scheme", "hetero-crc", "--speeds", "1,2"], ["one speed per worker", "3"]),
    (4, ["--scheme", "hetero-crc", "--speeds", "1,x,1"], ["comma-separated"]),
    (4, ["--scheme", "hetero-crc", "--speeds", "1,0,1"], ["speed"]),
    (4, ["--split", "2"], ["--split", "comm-efficient"]),
    (4, ["--scheme", "comm-efficient", "--stragglers", "2", "--split", "2"], ["split"]),
    (4, ["--gradient-error-every", "-1"], ["--gradient-error-every"]),
])
def test_bad_options(tmp_path, n_ranks, args, expected):
    result = run_mpi(n_ranks, [*SMALL, *args], tmp_path, timeout=60)
    assert_clean_failure(result, *expected)


def test_missing_file(tmp_path):
    result = run_mpi(3, ["--dataset", tmp_path / "nope.svm", "--quiet"], tmp_path, timeout=60)
    assert_clean_failure(result, "nope.svm")


def test_malformed_file(tmp_path):
    path = tmp_path / "bad.svm"
    path.write_text("1 1:0.5 2:1\n-1 this is not svmlight\n")
    result = run_mpi(3, ["--dataset", path, "--quiet"], tmp_path, timeout=60)
    assert_clean_failure(result, "bad.svm")


def test_nan_in_data(tmp_path):
    path = tmp_path / "nan.svm"
    path.write_text("".join(f"{1 if i % 2 else -1} 1:1 2:{'nan' if i == 5 else i}\n" for i in range(40)))
    result = run_mpi(3, ["--dataset", path, "--quiet"], tmp_path, timeout=60)
    assert_clean_failure(result, "nan.svm")


def test_more_workers_than_rows(tmp_path):
    path = tmp_path / "tiny.svm"
    path.write_text("".join(f"{1 if i % 2 else -1} 1:1 2:{i}\n" for i in range(6)))
    result = run_mpi(8, ["--dataset", path, "--scheme", "naive", "--quiet"], tmp_path, timeout=60)
    assert_clean_failure(result, "rows")


def test_without_mpirun(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gc_fast.train", "--quiet"], cwd=tmp_path,
                            env=mpi_env(), capture_output=True, text=True, timeout=60)
    assert_clean_failure(result, "mpirun -n")


def test_help_documents_objective_and_delays(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gc_fast.train", "--help"], cwd=tmp_path,
                            env=mpi_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for text in ("(l2 / 2) ||w||^2", "fixed:p=P,seconds=D", "count:k=K,seconds=D",
                 "exp:shift=A,mean=M", "slow:workers=1,3,factor=F", "fail:workers=2,at=T",
                 "--partitions-per-worker", "--save-model"):
        assert text in result.stdout


@pytest.mark.parametrize("flag", ["--out", "--save-model", "--save-trajectory", "--checkpoint"])
def test_an_unwritable_output_stops_before_training(tmp_path, flag):
    result = run_mpi(3, [*SMALL, "--iterations", "100000", flag, tmp_path / "missing" / "x"],
                     tmp_path, timeout=60)
    assert result.returncode == 2
    assert_clean_failure(result, flag, "does not exist")


def test_an_unwritable_working_folder_is_named_for_the_rescue_checkpoint(tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: make it a file's name instead
        locked.chmod(0o700)
        (tmp_path / "gc_fast-rescue.npz").mkdir()
        locked = tmp_path
    result = run_mpi(3, SMALL, locked, timeout=60)
    assert result.returncode == 2
    assert_clean_failure(result, "rescue checkpoint")


def test_a_failed_write_at_the_end_keeps_the_result(tmp_path, monkeypatch):
    """The folder of --out vanished while training: the results go to a fallback file."""
    import json

    from gc_fast import train

    monkeypatch.chdir(tmp_path)
    gone = tmp_path / "gone" / "r.json"
    payload = {"final": 1.5}

    def write(path):
        with open(path, "w") as handle:
            json.dump(payload, handle)

    assert train.save("--out", str(gone), write) is False
    assert json.loads((tmp_path / "gc_fast-unsaved-r.json").read_text()) == payload
    assert train.save("--out", str(tmp_path / "ok.json"), write) is True


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0,
                    reason="writes to /dev/full, which only root may open for writing here")
def test_a_full_disk_at_the_end_saves_the_results_elsewhere(tmp_path):
    import json

    result = run_mpi(3, [*SMALL, "--out", "/dev/full"], tmp_path, timeout=120)
    assert result.returncode == 4, result.stderr
    assert_clean_failure(result, "/dev/full", "gc_fast-unsaved-full")
    saved = json.loads((tmp_path / "gc_fast-unsaved-full").read_text())
    assert len(saved["iterations"]) == 3
