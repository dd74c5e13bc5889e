"""How the bench scripts launch MPI jobs: gc_fast.launch's mpiexec and environment, plus this
checkout on PYTHONPATH."""
import os
from pathlib import Path

from gc_fast import launch

ROOT = Path(__file__).resolve().parent.parent


def mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    return launch.mpiexec() or "mpiexec"


def environment():
    """One thread per rank (ranks share the cores) and this checkout importable."""
    env = launch.single_thread_environment()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
