"""Run `python -m gc_fast.train` (or any module) under the environment's mpiexec."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def mpi_env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


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
