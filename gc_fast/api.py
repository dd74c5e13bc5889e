"""Gradient coding for your own model: `gc_fast.run` and its local (in-process) mode.

`run(partition_gradient, w0, n_partitions, ...)` minimises

    F(w) = sum_j f_j(w) + (l2 / 2) ||w||^2,    j = 0 .. n_partitions - 1,

given `partition_gradient(j, w)`, the gradient of f_j at w (for a mean loss
over N rows, f_j is the sum of partition j's row losses divided by N). The
partitions are placed on the workers by a gradient code (gc_fast.codes), each
worker sends coded combinations of its partitions' gradients
(tasks.DenseGradientTask), the master decodes the exact gradient from the
earliest decodable set of messages (assembly.GradientAssembler) and steps the
optimiser (gc_fast.optim). One master logic, two transports:

* MPI (SPMD): started with `mpirun -n N python script.py`, every rank calls
  `run`; rank 0 drives runtime.MasterLoop, ranks 1..N-1 run
  runtime.WorkerLoop, and the result is broadcast, so every rank returns the
  same RunResult.
* local: in a plain process (or with local=True) the workers live in-process
  and time is virtual: gc_fast.simulate's timing model turns the injected
  delays (gc_fast.stragglers), compute and message sizes into per-message
  arrival times, the GradientAssembler decodes at the earliest decodable set
  in that order, and only the messages the decode uses are computed. The
  trajectory is the MPI run's (exact decoding); the iteration times are
  gc_fast.simulate.simulate_iterations's for the same run.

Estimators (gc_fast.estimators) use the same driver, `solve`, with sparse
linear-model tasks instead of user gradients.
"""
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .assembly import GradientAssembler
from .codes import make_code
from .optim import make_optimizer
from .stragglers import parse_delay
from .tasks import DenseGradientTask

DEFAULT_LOCAL_WORKERS = 4
DEFAULT_PARTITION_SECONDS = 1e-3  # virtual compute of 1/n of a user's data, unless costs say
_RECORD_SCALARS = ("time", "residual", "stale", "bytes_sent", "bytes_received")
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # MPICH/Hydra, Open MPI


@dataclass
class RunResult:
    """What `run` (and an estimator's fit) returns; identical on every MPI rank.

    w: final iterate. history: one record per iteration, as
    runtime.MasterLoop.iteration returns it: "time" (seconds; virtual in local
    mode), "arrival" (per message: seconds into the iteration, nan if the
    decode did not wait for it), "used" (the messages that arrived before the
    decode, in arrival order), "residual" (max |a B - 1| of the decode),
    "stale", "bytes_sent", "bytes_received". objective_iterations /
    objective_values: objective(w) after those iterations (None without an
    objective). trajectory: every iterate, (iterations, dim), if requested.
    wall_seconds: wall time of the iteration loop (the master's, under MPI).
    rank: this process's MPI rank (0 in local mode), e.g. to print once.
    """

    w: np.ndarray
    history: list
    code: object
    lr: float
    mode: str
    wall_seconds: float
    objective_iterations: np.ndarray
    objective_values: np.ndarray | None = None
    trajectory: np.ndarray | None = None
    rank: int = 0

    @property
    def times(self):
        """Per-iteration time in seconds (virtual in local mode)."""
        return np.array([record["time"] for record in self.history])

    @property
    def residuals(self):
        """Per-iteration decode residual max |a B - 1|."""
        return np.array([record["residual"] for record in self.history])

    @property
    def n_skipped(self):
        """Messages the decode did not wait for, over the whole run."""
        return int(sum(np.isnan(record["arrival"]).sum() for record in self.history))


class DenseProblem:
    """User-supplied partition gradients as worker tasks (tasks.DenseGradientTask).

    support: optional per-partition index arrays; partition j's gradient is
    zero outside support[j] and depends on w only through w[support[j]].
    Worker w then receives and sends only the union of its partitions'
    supports; partition_gradient still gets a full-length w (zero outside
    that union) and returns a full-length gradient.
    """

    def __init__(self, partition_gradient, n_features, support=None):
        if not callable(partition_gradient):
            raise ValueError("partition_gradient must be a callable (j, w) -> gradient array")
        self.partition_gradient = partition_gradient
        self.n_features = int(n_features)
        self.partition_support = None if support is None else self._check_support(support)

    def _check_support(self, support):
        normalised = []
        for j, indices in enumerate(support):
            indices = np.unique(np.asarray(indices, dtype=np.int64).ravel())
            if indices.size and (indices[0] < 0 or indices[-1] >= self.n_features):
                raise ValueError(f"support[{j}] must hold indices in [0, {self.n_features}), "
                                 f"got {indices[0]}..{indices[-1]}")
            normalised.append(indices)
        return normalised

    def bind(self, code):
        """Check the problem fits `code` (one support per partition)."""
        if self.partition_support is not None and len(self.partition_support) != code.n_partitions:
            raise ValueError(f"support must hold one index array per partition: "
                             f"{code.n_partitions}, got {len(self.partition_support)}")

    def worker_support(self, code, worker):
        if self.partition_support is None:
            return np.arange(self.n_features, dtype=np.int64)
        chunks = [self.partition_support[j] for j in code.partitions_of(worker)]
        return np.unique(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)

    def supports(self, code):
        """Per worker, the coordinates it receives and sends."""
        return [self.worker_support(code, w) for w in range(code.n_workers)]

    def _gradient(self, j, w):
        gradient = np.asarray(self.partition_gradient(j, w), dtype=np.float64)
        if gradient.shape != (self.n_features,):
            raise ValueError(f"partition_gradient({j}, w) returned shape {gradient.shape}; "
                             f"it must return the gradient as an array of shape ({self.n_features},)")
        return gradient

    def task(self, code, worker):
        """Worker `worker`'s task: its coded messages on its support."""
        if self.partition_support is None:
            return DenseGradientTask(self._gradient, code, worker, self.n_features)
        support = self.worker_support(code, worker)
        full_point = np.zeros(self.n_features)

        def gradient_on_support(j, point):
            full_point[support] = point
            return self._gradient(j, full_point)[support]

        task = DenseGradientTask(gradient_on_support, code, worker, len(support))
        task.support = support
        return task

    def message_load(self, code):
        """(non-zeros, fraction of the data) each message covers: equal partitions, no nnz."""
        fraction = np.count_nonzero(code.B, axis=1) / code.n_partitions
        return np.zeros(code.n_messages), fraction

    def local_costs(self, costs):
        """User gradients are costed per share of the data (costs.partition_seconds)."""
        if costs.partition_seconds is None:
            return dataclasses.replace(costs, partition_seconds=DEFAULT_PARTITION_SECONDS)
        return costs

    def warm_up(self, task):
        """Nothing to compile: user gradients are not called before the clock starts."""


def run(partition_gradient, w0, n_partitions, *, lr, scheme="crc", n_stragglers=1,
        optimizer="nag", iterations=100, l2=0.0, delay="none", seed=0, local=None, comm=None,
        n_workers=None, backend="cython", support=None, objective=None, eval_every=1,
        keep_trajectory=False, code_options=None, costs=None, deadline=None):
    """Minimise sum_j f_j(w) + (l2/2)||w||^2 by gradient-coded distributed GD (or NAG).

    partition_gradient(j, w): gradient of partition j's term at w, an array
        of w's shape (float64). The full gradient is the sum over j.
    w0: starting point (1-D). n_partitions: number of partitions k; a
        multiple of n_workers (of n_workers/(s+1) for frc; n(P-s) for the
        partial schemes).
    lr: step size. scheme: "naive", "ignore", "frc", "crc", "partial-frc" or
        "partial-crc" (naive always uses n_stragglers=0). n_stragglers: s.
    optimizer: "nag" (Nesterov, gradient at the look-ahead point) or "gd".
    iterations: optimiser steps. l2: L2 weight (added by the optimiser).
    delay: injected stragglers, a gc_fast.stragglers spec ("none",
        "count:k=1,seconds=0.05", ...); real sleeps under MPI, virtual time
        in local mode. seed: code construction and delay draws.
    local: None (auto: MPI when started under mpirun with >= 2 ranks or given
        a comm of size >= 2, local otherwise), True (always local), False
        (require MPI). comm: an mpi4py communicator (default COMM_WORLD);
        rank 0 is the master, rank w+1 worker w.
    n_workers: workers of local mode (default n_partitions); under MPI the
        workers are the ranks 1..size-1, whatever n_workers says.
    backend: kernels for gather/decode/step ("cython", "numba", "reference").
    support: optional per-partition index arrays where each partition's
        gradient can be non-zero (see DenseProblem): shorter messages.
    objective: optional callable w -> float, evaluated after the timed loop
        on the iterates after every eval_every-th iteration and the last.
    keep_trajectory: keep every iterate in result.trajectory.
    code_options: extra make_code options (construction, partitions_per_worker).
    costs: gc_fast.simulate.CostModel of local mode's virtual clock (default:
        the simulator's, i.e. the calibrated ~/.cache/gc_fast/costs.json if
        present, else built-in defaults); a user partition gradient costs
        costs.partition_seconds per 1/n of the data (default 1 ms).
    deadline: seconds the master waits for a decodable set before giving up
        (None: forever). Under MPI, runtime.DeadlineExceeded then ends every
        rank; in local mode (virtual seconds) a RuntimeError is raised.

    Returns a RunResult (the same on every MPI rank). Under an exact scheme
    the trajectory equals plain synchronous GD's up to float rounding,
    whichever tolerated stragglers occur.
    """
    w0 = _check_point(w0)
    problem = DenseProblem(partition_gradient, len(w0), support)
    if n_workers is None and _resolve_comm(local, comm) is None:
        n_workers = _integer("n_partitions", n_partitions, 1)
    return solve(problem, w0, scheme=scheme, n_stragglers=n_stragglers,
                 n_partitions=n_partitions, n_workers=n_workers, lr=lr, optimizer=optimizer,
                 iterations=iterations, l2=l2, delay=delay, seed=seed, local=local, comm=comm,
                 backend=backend, objective=objective, eval_every=eval_every,
                 keep_trajectory=keep_trajectory, code_options=code_options, costs=costs,
                 deadline=deadline)


def solve(problem, w0, *, scheme, n_stragglers, n_partitions, n_workers, lr, optimizer="nag",
          iterations=100, l2=0.0, delay="none", seed=0, local=None, comm=None, backend="cython",
          objective=None, eval_every=1, keep_trajectory=False, code_options=None, costs=None,
          deadline=None):
    """The driver behind `run` and the estimators, for any problem object.

    A problem provides n_features, bind(code) (validation), supports(code)
    (per worker, for the master), task(code, worker) (a tasks-style
    generator of the worker's messages), message_load(code) (per message:
    non-zeros and fraction of the data, for the simulator's compute costs),
    local_costs(costs) (the CostModel to use) and warm_up(task) (before the
    MPI clock starts). lr may be a callable () -> float, evaluated once per rank.
    See `run` for the other parameters.
    """
    comm = _resolve_comm(local, comm)
    message = None
    try:
        setup = _setup(problem, w0, comm, scheme=scheme, n_stragglers=n_stragglers,
                       n_partitions=n_partitions, n_workers=n_workers, lr=lr, optimizer=optimizer,
                       iterations=iterations, l2=l2, delay=delay, seed=seed, backend=backend,
                       eval_every=eval_every, code_options=code_options, deadline=deadline)
    except (ValueError, TypeError, MemoryError) as error:
        if comm is None:
            raise
        message = str(error) or type(error).__name__
    if comm is None:
        return _run_local(problem, setup, problem.local_costs(costs or _default_costs()),
                          objective, keep_trajectory)
    from .runtime import gather_errors

    failed = [m for m in gather_errors(comm, message) if m]
    if failed:
        raise ValueError(failed[0])
    return _run_mpi(problem, setup, comm, objective, keep_trajectory)


@dataclass
class _Setup:
    code: object
    optimizer: object
    delay_model: object
    lr: float
    seed: int
    iterations: int
    eval_every: int
    backend: str
    deadline: float | None
    snapshot_iterations: np.ndarray = field(init=False)

    def __post_init__(self):
        last = self.iterations - 1
        self.snapshot_iterations = np.array(
            [t for t in range(self.iterations) if (t + 1) % self.eval_every == 0 or t == last],
            dtype=np.int64)


def _setup(problem, w0, comm, *, scheme, n_stragglers, n_partitions, n_workers, lr, optimizer,
           iterations, l2, delay, seed, backend, eval_every, code_options, deadline):
    """Validate everything and build the code, delay model and optimiser (every rank)."""
    if comm is None:
        n_workers = DEFAULT_LOCAL_WORKERS if n_workers is None else _integer("n_workers", n_workers, 1)
    else:
        n_workers = comm.Get_size() - 1  # n_workers is local mode's: a script runs at any -n
    iterations = _integer("iterations", iterations, 1)
    eval_every = _integer("eval_every", eval_every, 1)
    if backend not in kernels.BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(kernels.BACKENDS)}")
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    if deadline is not None and not deadline > 0:
        raise ValueError(f"deadline must be a positive number of seconds or None, got {deadline}")
    n_stragglers = 0 if scheme == "naive" else n_stragglers
    code = make_code(scheme, n_workers, n_stragglers, n_partitions=n_partitions, seed=seed,
                     **(code_options or {}))
    delay_model = parse_delay(delay)
    delay_model.validate(n_workers)
    problem.bind(code)
    lr = float(lr() if callable(lr) else lr)
    optimizer = make_optimizer(optimizer, w0, lr, l2=l2, backend=backend)
    return _Setup(code, optimizer, delay_model, lr, int(seed), iterations, eval_every, backend,
                  deadline)


def _run_local(problem, setup, costs, objective, keep_trajectory):
    """In-process workers on the simulator's virtual clock; the MPI master's shared pieces."""
    from .simulate import Workload, compute_factors, simulate_iterations, straggler_delays

    code, optimizer, backend = setup.code, setup.optimizer, setup.backend
    n_workers = code.n_workers
    tasks = [problem.task(code, w) for w in range(n_workers)]
    supports = [task.support for task in tasks]
    assembler = GradientAssembler(code, supports, problem.n_features, backend=backend)
    worker_messages = [code.messages_of(w) for w in range(n_workers)]
    outs = [[assembler.message_view(m) for m in messages] for messages in worker_messages]
    kind = np.zeros(code.n_messages, dtype=np.int64)
    for messages in worker_messages:
        kind[messages] = np.arange(len(messages))
    points = [np.empty(len(s)) for s in supports]
    message_bytes = 8.0 * np.diff(assembler.ptr)
    point_bytes = 8.0 * np.array([len(s) for s in supports], dtype=np.float64)
    message_nnz, message_fraction = problem.message_load(code)
    workload = Workload(scheme=code.scheme, n_workers=n_workers, n_stragglers=code.n_stragglers,
                        partitions_per_worker=None, message_worker=code.message_worker,
                        message_nnz=message_nnz, message_fraction=message_fraction,
                        message_bytes=message_bytes, point_bytes=point_bytes,
                        n_features=problem.n_features, supports="exact supports")
    delays = straggler_delays(setup.delay_model, setup.seed, setup.iterations, n_workers)
    times, arrivals = simulate_iterations(workload, costs, delays, code=code,
                                          compute_factor=compute_factors(setup.delay_model, n_workers))
    gradient = np.zeros(problem.n_features)
    recorder = _Recorder(setup, optimizer, keep_trajectory)
    started = time.perf_counter()
    deadline = np.inf if setup.deadline is None else setup.deadline
    for iteration, arrival in enumerate(arrivals):
        assembler.start()
        for message in np.argsort(arrival, kind="stable"):
            if not np.isfinite(arrival[message]) or arrival[message] > deadline:
                break
            if assembler.add(message):
                break
        if assembler.decode_vector is None:
            heard = set(code.message_worker[assembler.arrived].tolist())
            silent = ", ".join(str(w + 1) for w in range(n_workers) if w not in heard)
            raise RuntimeError(f"iteration {iteration}: no decodable set of messages "
                               f"{'ever' if deadline == np.inf else f'within {deadline} s (virtual)'}; "
                               f"workers silent: {silent} ({code.scheme} tolerates "
                               f"{code.n_stragglers} stragglers)")
        _compute_used(assembler, code, kind, tasks, outs, points, optimizer.query_point(), backend)
        assembler.combine(gradient)
        optimizer.step(gradient)
        used = list(assembler.arrived)
        waited = np.full(code.n_messages, np.nan)
        waited[used] = arrival[used]
        recorder.add(iteration, {
            "time": float(times[iteration]), "arrival": waited, "used": used,
            "residual": assembler.residual(), "stale": 0, "bytes_sent": int(point_bytes.sum()),
            "bytes_received": int(message_bytes[used].sum()),
        })
    wall_seconds = time.perf_counter() - started
    return recorder.result(code, setup.lr, "local", wall_seconds, objective, rank=0)


def _default_costs():
    """The simulator's default costs: this machine's calibration if saved, else built-in."""
    from .simulate import DEFAULT_COSTS_PATH, CostModel

    return CostModel.load(DEFAULT_COSTS_PATH) if DEFAULT_COSTS_PATH.exists() else CostModel()


def _compute_used(assembler, code, kind, tasks, outs, points, point, backend):
    """Compute only the arrived messages the decode uses (non-zero coefficient).

    A worker's task computes its messages in send order, so message k needs
    messages 0..k-1 computed first; they arrived before it and are used too.
    """
    coefficients = assembler.decode_vector
    last_kind = {}
    for message in assembler.arrived:
        if coefficients[message] != 0.0:
            worker = int(code.message_worker[message])
            last_kind[worker] = max(last_kind.get(worker, 0), int(kind[message]))
    for worker, last in last_kind.items():
        kernels.gather(point, tasks[worker].support, points[worker], backend=backend)
        steps = tasks[worker].run(points[worker], outs[worker])
        for done in steps:
            if done == last:
                steps.close()
                break


def _run_mpi(problem, setup, comm, objective, keep_trajectory):
    """SPMD: rank 0 masters, the others work; the result is broadcast to every rank."""
    from .runtime import MasterLoop, WorkerLoop, abort_on_error, barrier, broadcast, prepare_node

    code, rank = setup.code, comm.Get_rank()
    recorder = _Recorder(setup, setup.optimizer, keep_trajectory)
    with abort_on_error(comm):
        if rank == 0:
            supports = problem.supports(code)
            assembler = GradientAssembler(code, supports, problem.n_features,
                                          backend=setup.backend)
            shared = prepare_node(comm, code, problem.n_features, message_ptr=assembler.ptr)
            master = MasterLoop(comm, code, supports, assembler, setup.optimizer,
                                backend=setup.backend, deadline=setup.deadline, shared=shared)
            barrier(comm)
            started = time.perf_counter()
            for iteration in range(setup.iterations):
                recorder.add(iteration, master.iteration(iteration))
            wall_seconds = time.perf_counter() - started
            master.shutdown()
            result = recorder.result(code, setup.lr, "mpi", wall_seconds, objective, rank=0)
            buffer = _pack(result, setup, problem.n_features, keep_trajectory)
        else:
            task = problem.task(code, rank - 1)
            problem.warm_up(task)
            shared = prepare_node(comm, code, problem.n_features)
            barrier(comm)
            WorkerLoop(comm, rank - 1, code.n_workers, task, setup.delay_model, setup.seed,
                       shared=shared, backend=setup.backend).run()
            buffer = np.empty(_packed_length(setup, problem.n_features, objective,
                                             keep_trajectory))
    broadcast(comm, buffer)
    return _unpack(buffer, setup, problem.n_features, objective, keep_trajectory, rank)


class _Recorder:
    """Per-iteration records and the snapshots taken for objective/trajectory."""

    def __init__(self, setup, optimizer, keep_trajectory):
        self.optimizer = optimizer
        self.records = []
        self.iterations = setup.snapshot_iterations
        self.snapshot_iterations = set(setup.snapshot_iterations.tolist())
        self.snapshots = []
        self.trajectory = [] if keep_trajectory else None

    def add(self, iteration, record):
        self.records.append(record)
        if iteration in self.snapshot_iterations:
            self.snapshots.append(self.optimizer.x.copy())
        if self.trajectory is not None:
            self.trajectory.append(self.optimizer.x.copy())

    def result(self, code, lr, mode, wall_seconds, objective, rank):
        values = None if objective is None else np.array([float(objective(x)) for x in self.snapshots])
        return RunResult(
            w=self.optimizer.x.copy(), history=self.records, code=code, lr=lr, mode=mode,
            wall_seconds=wall_seconds,
            objective_iterations=self.iterations,
            objective_values=values,
            trajectory=None if self.trajectory is None else np.array(self.trajectory), rank=rank)


def _packed_length(setup, n_features, objective, keep_trajectory):
    per_record = len(_RECORD_SCALARS) + 2 * setup.code.n_messages
    return (n_features + 1 + setup.iterations * per_record
            + (len(setup.snapshot_iterations) if objective is not None else 0)
            + (setup.iterations * n_features if keep_trajectory else 0))


def _pack(result, setup, n_features, keep_trajectory):
    """The master's result as one float64 buffer (for a buffer-based broadcast)."""
    n_messages = setup.code.n_messages
    rows = np.full((setup.iterations, len(_RECORD_SCALARS) + 2 * n_messages), -1.0)
    for row, record in zip(rows, result.history):
        row[:len(_RECORD_SCALARS)] = [record[key] for key in _RECORD_SCALARS]
        row[len(_RECORD_SCALARS):-n_messages] = record["arrival"]
        row[len(row) - n_messages:][:len(record["used"])] = record["used"]
    parts = [result.w, [result.wall_seconds], rows.ravel()]
    if result.objective_values is not None:
        parts.append(result.objective_values)
    if keep_trajectory:
        parts.append(result.trajectory.ravel())
    return np.concatenate(parts).astype(np.float64)


def _unpack(buffer, setup, n_features, objective, keep_trajectory, rank):
    """Rebuild the RunResult from the broadcast buffer (the same on every rank)."""
    n_messages, n_scalars = setup.code.n_messages, len(_RECORD_SCALARS)
    w, wall_seconds = buffer[:n_features].copy(), float(buffer[n_features])
    offset = n_features + 1
    width = n_scalars + 2 * n_messages
    rows = buffer[offset:offset + setup.iterations * width].reshape(setup.iterations, width)
    offset += rows.size
    history = []
    for row in rows:
        record = {key: float(value) for key, value in zip(_RECORD_SCALARS, row)}
        for key in ("stale", "bytes_sent", "bytes_received"):
            record[key] = int(record[key])
        record["arrival"] = row[n_scalars:n_scalars + n_messages].copy()
        used = row[n_scalars + n_messages:]
        record["used"] = [int(m) for m in used[used >= 0]]
        history.append(record)
    values = None
    if objective is not None:
        values = buffer[offset:offset + len(setup.snapshot_iterations)].copy()
        offset += len(values)
    trajectory = None
    if keep_trajectory:
        trajectory = buffer[offset:].reshape(setup.iterations, n_features).copy()
    return RunResult(w=w, history=history, code=setup.code, lr=setup.lr, mode="mpi",
                     wall_seconds=wall_seconds, objective_iterations=setup.snapshot_iterations,
                     objective_values=values, trajectory=trajectory, rank=rank)


def _launched_size():
    """Number of ranks the MPI launcher started, from its environment (1 without one)."""
    for variable in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(variable, "")
        if value.isdigit():
            return int(value)
    return 1


def _resolve_comm(local, comm):
    """The communicator to run on, or None for local mode.

    mpi4py is imported only when a launcher (or the caller) provides MPI, so
    a plain process (a notebook) never initialises MPI.
    """
    if local not in (None, True, False):
        raise ValueError(f"local must be None (auto), True or False, got {local!r}")
    if local is True:
        return None
    if comm is None and (_launched_size() > 1 or "mpi4py.MPI" in sys.modules):
        from .runtime import world

        comm = world()
    if comm is not None and comm.Get_size() > 1:
        return comm
    if local is False:
        raise ValueError("local=False needs MPI with a master and >= 1 worker: start the script "
                         "with mpirun -n N python script.py, N >= 2 (or pass local=None)")
    return None


def _check_point(w0):
    w0 = np.array(w0, dtype=np.float64, copy=True)
    if w0.ndim != 1 or w0.size == 0 or not np.all(np.isfinite(w0)):
        raise ValueError(f"w0 must be a non-empty 1-D array of finite numbers, got shape {w0.shape}")
    return w0


def _integer(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
