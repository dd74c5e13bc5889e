"""Gradient coding for your own model: ``gc_fast.run``.

``run(partition_gradient, w0, n_partitions, ...)`` minimises

    F(w) = sum_j f_j(w) + (l2 / 2) ||w||^2,    j = 0 .. n_partitions - 1,

given ``partition_gradient(j, w)``, the gradient of f_j at w (for a mean loss
over N rows, f_j is the sum of partition j's row losses divided by N). The
partitions are placed on the workers by a gradient code (gc_fast.codes), each
worker sends coded combinations of its partitions' gradients, the master
decodes the exact gradient from the earliest decodable set of messages and
steps the optimiser: gc_fast.driver.solve on a gc_fast.problems.DenseProblem.

Started with ``mpirun -n N python script.py``, every rank calls ``run``: rank 0
masters, ranks 1..N-1 work, and every rank returns the same RunResult. In a
plain process (or with local=True) the workers live in-process and time is
virtual (gc_fast.local).
"""
import os
import sys

import numpy as np

from .codes import check_integer
from .driver import RunResult, Settings, solve
from .problems import DenseProblem

__all__ = ["run", "RunResult", "resolve_comm"]

_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # MPICH/Hydra, Open MPI


def run(partition_gradient, w0, n_partitions, *, lr, scheme="crc", n_stragglers=1,
        optimizer="nag", iterations=100, l2=0.0, delay="none", seed=0, local=None, comm=None,
        n_workers=None, backend="cython", support=None, objective=None, eval_every=1,
        keep_trajectory=False, code_options=None, costs=None, deadline=None,
        message_dtype="float64", partition_data=None, wait_seconds=None):
    """Minimise sum_j f_j(w) + (l2/2)||w||^2 by gradient-coded distributed GD (or NAG).

    Parameters
    ----------
    partition_gradient : callable
        ``partition_gradient(j, w)``: gradient of partition j's term at w, an
        array of w's shape (float64). The full gradient is the sum over j.
        With partition_data: ``partition_gradient(j, w, data_j)``.
    w0 : array_like
        Starting point (1-D).
    n_partitions : int
        Number of partitions k: a multiple of n_workers (of n_workers/(s+1)
        for frc; of n(P-s) for the partial schemes).
    lr : float
        Step size.
    scheme : str
        The gradient code, one of gc_fast.codes.SCHEMES: the paper's "crc",
        "frc", "naive", "ignore", "partial-frc", "partial-crc"; the exact
        "hetero-crc" (code_options speeds) and "comm-efficient" (code_options
        split); the approximate "expander", "pairwise", "bernoulli"
        (code_options wait, decoder). naive always uses n_stragglers=0.
    n_stragglers : int
        s, the stragglers tolerated.
    optimizer : {"nag", "gd"}
        Nesterov (gradient at the look-ahead point) or plain gradient descent.
    iterations : int
        Optimiser steps.
    l2 : float
        L2 weight (added by the optimiser).
    delay : str
        Injected stragglers, a gc_fast.stragglers spec ("none",
        "count:k=1,seconds=0.05", ...): real sleeps under MPI, virtual time in
        local mode.
    seed : int
        Code construction and delay draws.
    local : {None, True, False}
        None: MPI when started under mpirun with >= 2 ranks or given a comm of
        size >= 2, local otherwise; True: always local; False: require MPI.
    comm : mpi4py communicator, optional
        Default COMM_WORLD; rank 0 is the master, rank w+1 worker w.
    n_workers : int, optional
        Workers of local mode (default n_partitions); under MPI the workers
        are the ranks 1..size-1, whatever n_workers says.
    backend : {"cython", "numba", "reference"}
        Kernels of the gather, decode and step.
    support : sequence of index arrays, optional
        Per partition, where its gradient can be non-zero
        (gc_fast.problems.DenseProblem): shorter messages.
    objective : callable, optional
        w -> float, evaluated after the timed loop on the iterates after
        every eval_every-th iteration and the last.
    eval_every : int
    keep_trajectory : bool
        Keep every iterate in result.trajectory.
    code_options : dict, optional
        Extra make_code options (construction, partitions_per_worker, speeds,
        split, wait, decoder).
    costs : gc_fast.simulate.CostModel, optional
        Local mode's virtual clock (default: the calibrated cost file if
        present, else built-in defaults); a partition gradient costs
        costs.partition_seconds per 1/n of the data (default 1 ms).
    deadline : float, optional
        Seconds the master waits for a decodable set before giving up
        (None: forever); then gc_fast.driver.RunFailed is raised.
    message_dtype : {"float64", "float32"}
        What the point and the messages travel as: float64 (default, exact)
        or float32, half the bytes both ways but INEXACT (the point and the
        messages are rounded to float32; computing, decoding and stepping stay
        float64). Local mode rounds the same way.
    partition_data : path or callable, optional
        Data that no rank needs whole. A sharded folder (``python -m
        gc_fast.data shard FILE OUT/``): data_j is (X_j, y_j), the CSR rows
        and labels of partition j when the training rows are split into
        n_partitions contiguous ranges (gc_fast.data.partition_bounds; the
        folder's ShardedDataset tells n_train, for a mean over rows). Or a
        callable ``load(j)`` returning data_j. Each worker loads only the
        partitions it holds, once.

    wait_seconds : float, optional
        Approximate schemes: decode what has arrived this many seconds into
        an iteration (or at the first arrival after), unless code_options'
        wait arrivals came first.
    Returns
    -------
    RunResult
        The same on every MPI rank. Under an exact scheme (and float64
        messages) the trajectory equals plain synchronous GD's up to float
        rounding, whichever tolerated stragglers occur.

    Examples
    --------
    >>> import numpy as np, gc_fast
    >>> A, b = np.eye(4), np.arange(4.0)
    >>> result = gc_fast.run(lambda j, w: (A[j] @ w - b[j]) * A[j], np.zeros(4), 4,
    ...                      lr=0.5, iterations=60, n_workers=4)
    >>> bool(np.allclose(result.w, b, atol=1e-6))
    True
    """
    w0 = np.array(w0, dtype=np.float64, copy=True)
    if w0.ndim != 1 or w0.size == 0 or not np.all(np.isfinite(w0)):
        raise ValueError(f"w0 must be a non-empty 1-D array of finite numbers, "
                         f"got shape {w0.shape}")
    comm = resolve_comm(local, comm)
    if n_workers is None and comm is None:
        n_workers = check_integer("n_partitions", n_partitions, 1)
    settings = Settings(lr=lr, scheme=scheme, n_stragglers=n_stragglers,
                        n_partitions=n_partitions, n_workers=n_workers, code_options=code_options,
                        optimizer=optimizer, iterations=iterations, l2=l2, w0=w0, delay=delay,
                        seed=seed, backend=backend, deadline=deadline, eval_every=eval_every,
                        objective=objective, keep_trajectory=keep_trajectory,
                        message_dtype=message_dtype, wait_seconds=wait_seconds)
    return solve(lambda: DenseProblem(partition_gradient, len(w0), support,
                                      _partition_loader(partition_data, n_partitions)),
                 settings, comm=comm, costs=costs)


def _partition_loader(partition_data, n_partitions):
    """load(j) for run's partition_data: a callable as given, a sharded folder's rows of
    partition j, or None."""
    if partition_data is None or callable(partition_data):
        return partition_data
    from .data import partition_bounds
    from .data.shards import ShardedDataset

    shards = ShardedDataset(partition_data)
    bounds = partition_bounds(shards.n_train, check_integer("n_partitions", n_partitions, 1))

    def load(j):
        return shards.rows(int(bounds[j]), int(bounds[j + 1]))

    return load


def _launched_size():
    """Number of ranks the MPI launcher started, from its environment (1 without one)."""
    for variable in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(variable, "")
        if value.isdigit():
            return int(value)
    return 1


def resolve_comm(local, comm):
    """The communicator to run on, or None for local mode.

    mpi4py is imported only when a launcher (or the caller) provides MPI, so
    a plain process (a notebook) never initialises MPI.
    """
    if local not in (None, True, False):
        raise ValueError(f"local must be None (auto), True or False, got {local!r}")
    if local is True:
        return None
    if comm is None and (_launched_size() > 1 or "mpi4py.MPI" in sys.modules):
        from .transports import world

        comm = world()
    if comm is not None and comm.Get_size() > 1:
        return comm
    if local is False:
        raise ValueError("local=False needs MPI with a master and >= 1 worker: start the script "
                         "with mpirun -n N python script.py, N >= 2 (or pass local=None)")
    return None
