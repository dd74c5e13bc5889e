"""How the bench scripts launch MPI jobs: the environment's mpiexec, one thread per rank."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else "mpiexec"


def environment():
    """One BLAS/Numba thread per rank (ranks share the cores) and this checkout importable."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
