"""What the tests share: MPI launches of the trainer (or any module) and trajectory checks."""
import json
import subprocess
import sys

import numpy as np

from gc_fast.launch import mpiexec, single_thread_environment

MPIEXEC = mpiexec()


def mpi_env():
    """The environment of every child MPI job: one thread per rank, unbuffered output."""
    return single_thread_environment()


def max_relative_difference(a, b):
    """Largest relative distance between matching rows (iterates) of two trajectories."""
    scale = np.maximum(np.linalg.norm(b, axis=1), 1e-300)
    return float(np.max(np.linalg.norm(a - b, axis=1) / scale))


def run_mpi(n_ranks, args, cwd, *, module="gc_fast.train", timeout=180):
    """mpiexec -n n_ranks python -m module args; cwd outside the source tree."""
    command = [MPIEXEC, "-n", str(n_ranks), sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=mpi_env(), capture_output=True, text=True,
                          timeout=timeout)


def train(n_ranks, args, tmp_path, name):
    """Run the trainer; return (results JSON, trajectory array)."""
    out = tmp_path / f"{name}.json"
    trajectory = tmp_path / f"{name}.npy"
    result = run_mpi(n_ranks, [*args, "--out", out, "--save-trajectory", trajectory, "--quiet"],
                     tmp_path)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    with open(out) as handle:
        return json.load(handle), np.load(trajectory)
