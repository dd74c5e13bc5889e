"""Real process deaths: workers SIGKILLed mid-run under Open MPI 5 with ULFM.

These runs need the fault-tolerant MPI of the `ft` extra, which cannot share a
venv with the mpich wheel, so they use a second venv: GC_FAST_FT_VENV, else
.venv-ft beside the checkout (.ci/run makes it; the README says how).
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import mpi_env

ROOT = Path(__file__).resolve().parent.parent
FT_VENV = Path(os.environ.get("GC_FAST_FT_VENV", ROOT / ".venv-ft"))
FT_MPIRUN, FT_PYTHON = FT_VENV / "bin" / "mpirun", FT_VENV / "bin" / "python"
# 100 short iterations: the master learns of a death a few ms after it, well before the end.
SMALL = ["--rows", "1200", "--features", "3000", "--iterations", "100", "--quiet"]

pytestmark = pytest.mark.skipif(
    not (FT_MPIRUN.exists() and FT_PYTHON.exists()),
    reason=f"no fault-tolerant MPI venv at {FT_VENV}: python3 -m venv .venv-ft && "
           f".venv-ft/bin/pip install -e '.[ft]' (or set GC_FAST_FT_VENV)")


def run_ft(n_ranks, args, cwd, timeout=120):
    env = mpi_env()
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [str(FT_MPIRUN), "--with-ft", "ulfm", "--oversubscribe", "-n", str(n_ranks),
               str(FT_PYTHON), "-m", "gc_fast.train", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def train_ft(n_ranks, args, tmp_path, name):
    out, trajectory = tmp_path / f"{name}.json", tmp_path / f"{name}.npy"
    result = run_ft(n_ranks, [*SMALL, *args, "--out", out, "--save-trajectory", trajectory], tmp_path)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(out.read_text()), np.load(trajectory), result


def assert_same_trajectory(a, b):
    assert a.shape == b.shape
    scale = np.maximum(np.abs(a).max(axis=1, keepdims=True), 1e-300)
    assert np.max(np.abs(a - b) / scale) <= 1e-9


@pytest.mark.parametrize("n_workers, n_stragglers, kill", [
    (4, 1, "kill:workers=2,at=5"),          # one worker dies
    (6, 2, "kill:workers=2,5,at=3,10"),     # one, then a second: s of them
])
def test_crc_trains_exactly_through_killed_workers(tmp_path, n_workers, n_stragglers, kill):
    naive, naive_path, _ = train_ft(n_workers + 1, ["--scheme", "naive"], tmp_path, "naive")
    coded, coded_path, result = train_ft(
        n_workers + 1, ["--scheme", "crc", "--stragglers", n_stragglers, "--delay", kill], tmp_path, "crc")
    killed = kill.split("workers=")[1].split(",at=")[0].split(",")
    assert sorted(coded["summary"]["dead_workers"]) == sorted(killed)
    assert "training went on without them" in result.stderr
    for rank in killed:  # no message from a dead worker after its death was noticed
        found = coded["summary"]["dead_workers"][rank]
        worker_messages = [m for m, w in enumerate(coded["message_worker"]) if w == int(rank)]
        for record in coded["iterations"][found:]:
            assert not set(record["used"]) & set(worker_messages)
            assert all(record["arrival"][m] is None for m in worker_messages)
    assert_same_trajectory(naive_path, coded_path)


def test_more_deaths_than_s_stop_with_one_line_and_a_checkpoint(tmp_path):
    rescue = tmp_path / "rescue.npz"
    result = run_ft(5, [*SMALL, "--scheme", "crc", "--stragglers", "1",
                        "--delay", "kill:workers=2,3,at=4,8", "--checkpoint", rescue], tmp_path)
    assert result.returncode == 3
    # Open MPI's runtime may add a line of its own as the job ends ("pmix_ptl_base: send_msg:
    # write failed", "Old events were ..."): gc_fast's own output is one line, no traceback.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines), result.stderr
    errors = [line for line in lines if line.startswith("gc_fast")]
    assert len(errors) == 1 and errors[0].startswith("gc_fast.train: error: workers 2 "), result.stderr
    assert "cannot decode without them" in errors[0] and f"--resume {rescue}" in errors[0]
    with np.load(rescue) as saved:
        assert 8 <= int(saved["iteration"]) < 100
    # The rescued run resumes with healthy workers and finishes.
    resumed = run_ft(5, [*SMALL, "--scheme", "crc", "--stragglers", "1", "--resume", rescue], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
