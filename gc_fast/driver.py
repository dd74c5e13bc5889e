"""The one driver: a problem, a code and an optimiser run over a transport, with hooks.

Every way of training goes through ``solve``: the trainer's CLI, the
estimators and ``gc_fast.run``. One iteration, whatever the transport:

1. the master's ``Master.iteration`` asks the optimiser for its query point
   and the transport sends every worker its share (``transport.start``);
2. each worker's ``serve`` loop computes its coded messages for the newest
   point (gc_fast.problems) and sends them, abandoning a stale iteration;
3. the transport hands the master each arrival (``transport.receive``) and
   the assembler (gc_fast.assembly) decodes at the earliest decodable set;
4. the decoded gradient goes to the optimiser's step (gc_fast.optim).

Transports: over MPI (gc_fast.transports: point-to-point messages, or one
node's shared memory) when started under mpirun, in-process on a virtual
clock (gc_fast.local) otherwise. Points and messages are float64 (exact) unless
Settings.message_dtype asks for float32 (half the bytes, inexact). Records,
snapshots, checkpoints and progress are ``Hook``s on the master's loop, not
copies in each caller.
"""
import os
import resource
import time
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .assembly import GradientAssembler
from .codes import APPROXIMATE_SCHEMES, check_integer, make_code
from .optim import make_optimizer
from .stragglers import parse_delay

DEFAULT_LOCAL_WORKERS = 4
SETUP_ERRORS = (ValueError, TypeError, OSError, MemoryError, ImportError)
RECORD_SCALARS = ("iteration", "time", "residual", "decode_error", "gradient_error", "stale",
                  "bytes_sent", "bytes_received")
GRADIENT_ERROR_WAIT = 10.0  # a sampled iteration waits this many times its decode for the rest
MESSAGE_DTYPES = ("float64", "float32")


class DeadlineExceeded(RuntimeError):
    """The master waited longer than its deadline for a decodable set of messages."""

    def __init__(self, iteration, silent_workers, last_heard, when, code):
        self.iteration = iteration
        self.silent_workers = silent_workers  # 0-based workers whose message never came
        self.last_heard = last_heard  # per silent worker: last iteration heard from, or None
        names = ", ".join(_worker_name(w, last) for w, last in zip(silent_workers, last_heard,
                                                                     strict=True))
        super().__init__(f"iteration {iteration}: no decodable set of messages {when}; workers "
                         f"silent: {names} ({code.scheme} tolerates {code.n_stragglers} "
                         f"stragglers)")


def _worker_name(worker, last_heard):
    """Worker `worker` as its MPI rank, with when it was last heard from if known."""
    if last_heard is None:
        return str(worker + 1)
    heard = f"last heard at iteration {last_heard}" if last_heard >= 0 else "never heard from"
    return f"{worker + 1} ({heard})"


class WorkersLost(RuntimeError):
    """More workers have died than the code tolerates: no decodable set can arrive again."""

    def __init__(self, dead, code):
        self.dead = dict(dead)  # 0-based worker -> iteration at which the master noticed
        names = ", ".join(f"{w + 1} (found dead at iteration {at})"
                          for w, at in sorted(self.dead.items()))
        super().__init__(f"workers {names} died; {code.scheme} with s = {code.n_stragglers} "
                         f"cannot decode without them")


class RunFailed(RuntimeError):
    """Training could not go on: the deadline passed or too many workers died."""


def resident_memory_bytes():
    """This process's resident set size (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_memory_bytes():
    """This process's peak resident set size so far (getrusage: Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Settings:
    """What to run: the code, the optimiser, the stragglers, the records.

    Parameters
    ----------
    scheme, n_stragglers, n_partitions, code_options
        The gradient code (gc_fast.codes.make_code); naive always uses s = 0.
    n_workers : int or None
        Workers of local mode (default 4); under MPI the workers are ranks
        1..size-1.
    lr : float or callable
        Step size, or a callable () -> float evaluated once, on the master.
    optimizer : {"nag", "gd"}
    iterations : int
        Optimiser steps (the last iteration index + 1, counted from 0 even
        when a hook resumes at a later iteration).
    l2 : float
        L2 weight, added by the optimiser.
    w0 : ndarray or None
        Starting point (default zeros).
    delay : str
        Injected stragglers (gc_fast.stragglers): real sleeps under MPI,
        virtual seconds in local mode.
    seed : int
        Code construction and delay draws.
    backend : str
        Kernels of the master's gather, decode and step (gc_fast.kernels).
    deadline : float or None
        Seconds the master waits for a decodable set (None: forever).
    wait_seconds : float or None
        A time budget (approximate schemes): the master decodes what has arrived
        wait_seconds into the iteration (or at the first arrival after it),
        unless the code's ``wait`` arrivals came first.
    gradient_error_every : int
        Every gradient_error_every-th iteration (0: never) the master also
        waits for every message and records the decoded gradient's relative
        error against the full-set (exact) gradient; the step still uses the
        decoded one.
    priorities, shared_memory : str
        MPI only: gc_fast.transports.connect's options.
    message_dtype : {"float64", "float32"}
        What the point and the messages travel as. float32 halves the bytes
        both ways but is INEXACT: the point and the messages are rounded to
        float32 (the workers compute, and the master decodes and steps, in
        float64). Under MPI it always uses point-to-point messages (no shared
        memory); local mode rounds and counts the bytes the same way.
    eval_every : int
        Snapshots of the iterate after every eval_every-th iteration and the last.
    objective : callable or None
        Evaluated on every snapshot after the timed loop.
    keep_trajectory : bool
        Keep every iterate.
    everywhere : bool
        MPI only: return the result (or raise the failure) on every rank;
        False returns None on the workers.
    """

    lr: object
    scheme: str = "crc"
    n_stragglers: int = 1
    n_partitions: int | None = None
    n_workers: int | None = None
    code_options: dict | None = None
    optimizer: str = "nag"
    iterations: int = 100
    l2: float = 0.0
    w0: np.ndarray | None = None
    delay: str = "none"
    seed: int = 0
    backend: str = "cython"
    deadline: float | None = None
    wait_seconds: float | None = None
    gradient_error_every: int = 0
    priorities: str = "auto"
    shared_memory: str = "auto"
    message_dtype: str = "float64"
    eval_every: int = 1
    objective: object = None
    keep_trajectory: bool = False
    everywhere: bool = True


@dataclass
class Run:
    """Everything the master's hooks see: the code and problem, the optimiser and where
    the loop starts (a hook may resume at a later iteration)."""

    settings: Settings
    problem: object
    code: object
    delay_model: object
    n_features: int
    lr: float | None = None
    optimizer: object = None
    start: int = 0
    task: object = None  # a worker's
    records: list = field(default_factory=list)


class Hook:
    """Called by the master's loop; every method is optional (override what you need)."""

    def setup(self, run):
        """Before any MPI traffic, on the master: may raise ValueError (reported on every
        rank) and may change run.start and the optimiser's state (resume)."""

    def after_iteration(self, run, iteration, record):
        """After the optimiser's step of `iteration`."""

    def failed(self, run, iteration, error):
        """The run stops at `iteration` (DeadlineExceeded or WorkersLost)."""

    def finished(self, run, result):
        """After the loop and the workers' shutdown; may add to `result`."""


def is_snapshot(settings, iteration):
    """Whether the iterate after `iteration` is kept: every eval_every-th and the last."""
    return (iteration + 1) % settings.eval_every == 0 or iteration + 1 == settings.iterations


class Snapshots(Hook):
    """The iterate after every eval_every-th iteration and the last (objective evaluated
    after the timed loop), and every iterate if asked for."""

    def __init__(self, settings):
        self.settings = settings
        self.iterations = []
        self.points = []
        self.trajectory = [] if settings.keep_trajectory else None

    def after_iteration(self, run, iteration, record):
        x = run.optimizer.x
        if is_snapshot(self.settings, iteration):
            self.iterations.append(iteration)
            self.points.append(x.copy())
        if self.trajectory is not None:
            self.trajectory.append(x.copy())

    def finished(self, run, result):
        objective = self.settings.objective
        result.objective_iterations = np.array(self.iterations, dtype=np.int64)
        result.objective_values = (None if objective is None else
                                   np.array([objective(x) for x in self.points], dtype=np.float64))
        result.trajectory = None if self.trajectory is None else np.array(self.trajectory)


@dataclass
class RunResult:
    """What ``solve`` (``gc_fast.run``, an estimator's fit, the trainer) returns.

    Attributes
    ----------
    w : ndarray
        The final iterate.
    history : list of dict
        One record per iteration: "iteration", "time" (seconds; virtual in local mode),
        "arrival" (per message: seconds into the iteration, nan if the decode
        did not wait for it), "used" (the messages that arrived before the
        decode, in arrival order), "residual" (max |a B - 1| of the decode),
        "decode_error" (||a B - 1||^2 / k), "gradient_error" (relative error of
        the decoded gradient, measured every gradient_error_every-th iteration,
        nan otherwise), "stale", "bytes_sent", "bytes_received".
    code : GradientCode
    lr : float
    mode : {"local", "mpi"}
    wall_seconds : float
        Wall time of the iteration loop (the master's, under MPI).
    objective_iterations, objective_values : ndarray
        objective(w) after those iterations (values None without an objective).
    trajectory : ndarray or None
        Every iterate, (iterations, dim), if asked for.
    rank : int
        This process's MPI rank (0 in local mode), e.g. to print once.
    stats : dict or None
        The master's counters (rank 0 only): messages received and stale,
        the workers' reports, dead workers, shared memory, the message dtype,
        master CPU and memory.

    Everything but ``stats`` is identical on every MPI rank.
    """

    w: np.ndarray
    history: list
    code: object
    lr: float
    mode: str
    wall_seconds: float
    objective_iterations: np.ndarray = None
    objective_values: np.ndarray | None = None
    trajectory: np.ndarray | None = None
    rank: int = 0
    stats: dict | None = None

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


class Master:
    """One iteration on the master: send the point, decode at the earliest decodable set of
    arrivals, step. Knows nothing of how the transport moves points and messages."""

    def __init__(self, code, assembler, optimizer, transport, *, deadline=None,
                 wait_seconds=None, gradient_error_every=0):
        self.code = code
        self.assembler = assembler
        self.optimizer = optimizer
        self.transport = transport
        self.deadline = deadline
        self.wait_seconds = wait_seconds
        self.gradient_error_every = gradient_error_every
        self.gradient = np.zeros(assembler.n_features)
        self._full_gradient = np.zeros(assembler.n_features) if gradient_error_every else None

    def iteration(self, iteration):
        """Run one iteration; returns its record (timing, arrivals, decode, bytes)."""
        transport, assembler = self.transport, self.assembler
        transport.start(iteration, self.optimizer.query_point())
        assembler.start(self.gradient if transport.readable_on_arrival else None)
        arrival = np.full(self.code.n_messages, np.nan)
        while True:
            got = transport.receive(self._limit())
            if got is None:
                if self.wait_seconds is not None and assembler.arrived:
                    assembler.decode_now()  # the time budget is spent
                    break
                raise self._deadline_error(iteration, arrival)
            message, seconds = got
            arrival[message] = seconds
            if assembler.add(message):
                break
        transport.complete(assembler)
        assembler.combine(self.gradient)
        seconds, residual = transport.seconds(), assembler.residual()
        decode_error = assembler.decode_error()
        sampled = self.gradient_error_every and iteration % self.gradient_error_every == 0
        gradient_error = self._gradient_error(seconds) if sampled else np.nan
        self.optimizer.step(self.gradient)
        return {"iteration": iteration, "time": seconds, "arrival": arrival,
                "used": [m for m in assembler.arrived if not np.isnan(arrival[m])],
                "residual": residual, "decode_error": decode_error,
                "gradient_error": gradient_error, "stale": transport.stale,
                "bytes_sent": transport.bytes_sent, "bytes_received": transport.bytes_received}

    def _limit(self):
        """How long into the iteration the next receive may wait: the deadline, or the time
        budget once a message has arrived."""
        if self.wait_seconds is None or not self.assembler.arrived:
            return self.deadline
        return self.wait_seconds if self.deadline is None else min(self.deadline,
                                                                   self.wait_seconds)

    def _gradient_error(self, decode_seconds):
        """||decoded - full|| / ||full||, the full gradient decoded from every message of the
        iteration (nan if they do not all come within GRADIENT_ERROR_WAIT times the decode)."""
        transport, assembler = self.transport, self.assembler
        used = assembler.decode_vector
        limit = max(GRADIENT_ERROR_WAIT * decode_seconds, 1.0)
        if self.deadline is not None:
            limit = min(limit, self.deadline)
        while len(assembler.arrived) < self.code.n_messages:
            got = transport.receive(limit)
            if got is None:
                assembler.decode_vector = used
                return np.nan
            assembler.record(got[0])
        assembler.decode_all()
        transport.complete(assembler)
        full = assembler.combine(self._full_gradient)
        assembler.decode_vector = used
        norm = np.linalg.norm(full)
        difference = np.linalg.norm(self.gradient - full)
        return float(difference / norm) if norm > 0 else float(difference)

    def _deadline_error(self, iteration, arrival):
        silent = [w for w in range(self.code.n_workers)
                  if np.isnan(arrival[self.code.messages_of(w)]).any()]
        heard = self.transport.last_heard
        last = [None if heard is None else int(heard[w]) for w in silent]
        when = ("ever" if self.deadline is None
                else f"within {self.deadline:g} s{self.transport.clock}")
        return DeadlineExceeded(iteration, silent, last, when, self.code)


def lost_check(code):
    """The transports' on_deaths callback: WorkersLost once the survivors cannot decode."""

    def check(dead):
        alive = [m for w in range(code.n_workers) if w not in dead for m in code.messages_of(w)]
        if not code.is_decodable(alive):
            raise WorkersLost(dead, code)

    return check


def drive(master, run, hooks):
    """The master's loop from run.start to the last iteration, calling the hooks; returns
    (wall seconds, master CPU seconds, resident memory after the first iteration)."""
    transport = master.transport
    iteration = run.start
    rss_first = None
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        for iteration in range(run.start, run.settings.iterations):
            record = master.iteration(iteration)
            run.records.append(record)
            if rss_first is None:
                rss_first = resident_memory_bytes()
            for hook in hooks:
                hook.after_iteration(run, iteration, record)
    except (DeadlineExceeded, WorkersLost) as error:
        for hook in hooks:
            hook.failed(run, iteration, error)
        transport.shutdown(timeout=5.0)
        raise RunFailed(str(error)) from error
    return time.perf_counter() - started, time.process_time() - cpu_started, rss_first


def serve(transport, task, delay_model, seed, worker, n_workers, setup_seconds=0.0):
    """Worker `worker`'s loop: compute and send the coded messages for the newest point until
    STOP, then report its counters (transports.STATS_FIELDS; setup_seconds: its set-up, data
    loading included)."""
    counts = {"sent": 0, "abandoned": 0}
    point = transport.next_point()
    cpu_started = time.process_time()
    rss_start = None
    while point is not None:
        _compute(transport, task, delay_model, seed, worker, n_workers, *point, counts)
        if rss_start is None:
            rss_start = resident_memory_bytes()
        point = transport.next_point()
    rss_end = resident_memory_bytes()
    transport.finish(np.array([counts["sent"], counts["abandoned"], rss_start or rss_end, rss_end,
                               time.process_time() - cpu_started, os.nice(0), peak_memory_bytes(),
                               setup_seconds], dtype=np.float64))


def _compute(transport, task, delay_model, seed, worker, n_workers, iteration, point, counts):
    """One iteration of a worker, with its injected delays; abandoned (between partitions)
    as soon as a newer point or STOP arrives."""
    if delay_model.killed(iteration, worker):
        os.kill(os.getpid(), 9)  # injected fault: a real process death (SIGKILL)
    delay = delay_model.delays(seed, iteration, n_workers)[worker]
    if delay > 0 and transport.sleep(delay):
        counts["abandoned"] += 1
        return
    point = transport.load(point)
    factor = delay_model.compute_factor(worker)
    buffers = transport.buffers()
    unsent = set(range(len(buffers)))
    started = time.perf_counter()
    for index in task.run(point, buffers):
        if factor > 1.0 and transport.sleep((factor - 1.0) * (time.perf_counter() - started)):
            break
        if index is not None:
            frozen = delay_model.pause(iteration, worker) if index == 0 else 0.0
            if frozen:
                time.sleep(frozen)  # deaf on purpose: a stalled VM notices nothing
            transport.send(iteration, index, buffers)
            unsent.discard(index)
            counts["sent"] += 1
        if transport.interrupted():
            break
        started = time.perf_counter()
    else:
        return
    transport.release(unsent, buffers)
    counts["abandoned"] += bool(unsent)


def setup(problem, settings, *, n_workers, rank=0, mpi=False, hooks=()):
    """Validate everything and build what this rank needs (raises SETUP_ERRORS).

    problem: a problem (gc_fast.problems) or a callable that returns one, so that
    loading it fails like any other setup error.
    """
    if not hasattr(problem, "task"):
        problem = problem()
    _check_settings(settings)
    n_stragglers = 0 if settings.scheme == "naive" else settings.n_stragglers
    try:
        code = make_code(settings.scheme, n_workers, n_stragglers,
                         n_partitions=settings.n_partitions, seed=settings.seed,
                         **(settings.code_options or {}))
    except ValueError as error:
        if not mpi:
            raise
        raise ValueError(f"{error} (this run has n = {n_workers} workers: "
                         f"mpirun -n {n_workers + 1})") from None
    delay_model = parse_delay(settings.delay)
    delay_model.validate(n_workers)
    if mpi and delay_model.kind == "kill":
        from .transports import fault_tolerant

        if not fault_tolerant():
            raise ValueError("--delay kill: kills worker processes, which only an MPI with ULFM "
                             "fault tolerance survives: install the ft extra (Open MPI 5) in its "
                             "own venv and start with mpirun --with-ft ulfm (see "
                             "docs/fault-tolerance.md)")
    problem.bind(code)
    run = Run(settings, problem, code, delay_model, problem.n_features)
    if rank == 0:
        run.lr = float(settings.lr() if callable(settings.lr) else settings.lr)
        w0 = np.zeros(problem.n_features) if settings.w0 is None else settings.w0
        run.optimizer = make_optimizer(settings.optimizer, w0, run.lr, l2=settings.l2,
                                       backend=settings.backend)
        for hook in hooks:
            hook.setup(run)
    else:
        run.task = problem.task(code, rank - 1)
        problem.warm_up(run.task)
        run.problem = None  # a worker keeps only its own partitions
    return run


def _check_settings(settings):
    check_integer("iterations", settings.iterations, 1)
    check_integer("eval_every", settings.eval_every, 1)
    if settings.backend not in kernels.BACKENDS:
        raise ValueError(f"unknown backend {settings.backend!r}; valid backends: "
                         f"{', '.join(kernels.BACKENDS)}")
    if not (np.isfinite(settings.l2) and settings.l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0, got {settings.l2}")
    if settings.message_dtype not in MESSAGE_DTYPES:
        raise ValueError(f"message_dtype must be one of {', '.join(MESSAGE_DTYPES)}, "
                         f"got {settings.message_dtype!r}")
    check_integer("gradient_error_every", settings.gradient_error_every, 0)
    if settings.wait_seconds is not None:
        if not settings.wait_seconds > 0:
            raise ValueError(f"wait_seconds must be a positive number of seconds or None, "
                             f"got {settings.wait_seconds}")
        if settings.scheme not in APPROXIMATE_SCHEMES:
            raise ValueError(f"a time budget (wait_seconds, --wait-ms) applies to the approximate "
                             f"schemes ({', '.join(APPROXIMATE_SCHEMES)}), not to "
                             f"{settings.scheme}")
    if settings.deadline is not None and not settings.deadline > 0:
        raise ValueError(f"deadline must be a positive number of seconds or None, "
                         f"got {settings.deadline}")


def solve(problem, settings, *, comm=None, hooks=(), costs=None):
    """Train `problem` with `settings`: over MPI on `comm`, or in-process when comm is None.

    Parameters
    ----------
    problem : problem or callable
        A problem of gc_fast.problems (n_features, bind, supports, task,
        message_load, local_costs, warm_up), or a callable returning one.
    settings : Settings
    comm : mpi4py communicator or None
        Rank 0 is the master, rank w + 1 worker w; None runs local mode.
    hooks : sequence of Hook
        Called by the master's loop, after the built-in Snapshots.
    costs : gc_fast.simulate.CostModel or None
        Local mode's virtual clock (default: the simulator's default costs).

    Returns
    -------
    RunResult on the master (and on every rank with settings.everywhere),
    None on the workers otherwise.

    Raises
    ------
    ValueError
        Bad input, with one line (under MPI: the first failing rank's, on
        every rank).
    RunFailed
        The deadline passed or more workers died than the code tolerates.
    """
    hooks = [Snapshots(settings), *hooks]
    if comm is not None:
        return _solve_over_mpi(problem, settings, comm, hooks)
    from .local import LocalTransport

    n_workers = (DEFAULT_LOCAL_WORKERS if settings.n_workers is None
                 else check_integer("n_workers", settings.n_workers, 1))
    run = setup(problem, settings, n_workers=n_workers, hooks=hooks)
    supports = run.problem.supports(run.code)
    assembler = _assembler(run, supports)
    transport = LocalTransport(run, supports, assembler, costs)
    master = _master(run, assembler, transport)
    return _finish(run, master, hooks, drive(master, run, hooks), "local")


def _solve_over_mpi(problem, settings, comm, hooks):
    """SPMD: every rank sets up (errors gathered), rank 0 masters, the others serve. Under
    ULFM the set-up goes point to point through the master (_fault_tolerant_setup), so that
    workers dead before the first iteration count as dead from it."""
    from . import transports

    rank, n_workers = comm.Get_rank(), comm.Get_size() - 1
    message, started = None, time.perf_counter()
    try:
        run = setup(problem, settings, n_workers=n_workers, rank=rank, mpi=True, hooks=hooks)
    except SETUP_ERRORS as error:
        message = str(error) or type(error).__name__
    setup_seconds = time.perf_counter() - started
    fault_tolerant = transports.fault_tolerant()
    if fault_tolerant:
        failed, supports, lost = _fault_tolerant_setup(comm, message, run if not message else None)
    else:
        failed, lost = [m for m in transports.gather_errors(comm, message) if m], []
    if failed:
        raise ValueError(failed[0])
    if not fault_tolerant:
        # The workers tell the master their supports: the master needs none of their data.
        supports = transports.gather_supports(comm, None if rank == 0 else run.task.support)
    code, result, failure = run.code, None, None
    with transports.abort_on_error(comm):
        options = {"priorities": settings.priorities, "shared_memory": settings.shared_memory,
                   "message_dtype": settings.message_dtype}
        if rank == 0:
            master = _mpi_master(comm, run, supports, options)
            if not fault_tolerant:
                transports.barrier(comm)
            try:
                _lost_at_setup(master, run, hooks, lost)
                result = _finish(run, master, hooks, drive(master, run, hooks), "mpi")
            except RunFailed as error:
                failure = error
        else:
            window = transports.connect(comm, code, run.n_features, **options)
            _, point_to_point = transports.MESSAGE_TRANSPORTS[settings.message_dtype]
            transport = (point_to_point(comm, run.task) if window is None else
                         transports.SharedMemoryWorkerTransport(comm, run.task, window, rank - 1,
                                                               backend=settings.backend))
            if not fault_tolerant:
                transports.barrier(comm)
            serve(transport, run.task, run.delay_model, settings.seed, rank - 1, code.n_workers,
                  setup_seconds)
    if not settings.everywhere:
        if failure is not None:
            raise failure
        return result
    message = transports.broadcast_text(comm, "" if failure is None else str(failure))
    if message:
        raise failure if failure is not None else RunFailed(message)
    return _broadcast_result(comm, result, run, transports)


def _fault_tolerant_setup(comm, message, run):
    """Under ULFM: each worker reports its set-up error (`message`, or None) and support to
    the master, which answers with the run's first error (gather_errors and gather_supports
    point to point). Returns (errors: [first] or [], the supports on the master, the workers
    found dead on the master). A worker of `--delay kill:...,at=setup` dies here."""
    from . import transports

    if comm.Get_rank() == 0:
        verdict, supports, dead = transports.collect_setup(comm, message)
        return [verdict] if verdict else [], supports, dead
    if run is not None and run.delay_model.killed_at_setup(comm.Get_rank() - 1):
        os.kill(os.getpid(), 9)  # injected fault: a real process death (SIGKILL)
    verdict = transports.report_setup(comm, message, None if run is None else run.task.support)
    return [verdict] if verdict else [], None, []


def _lost_at_setup(master, run, hooks, dead):
    """Workers found dead at set-up are dead from the first iteration: the master's transport
    stops sending to them and the run goes on if the others can decode, else stops as
    drive does (hooks' failed, the others stopped, RunFailed)."""
    if not dead:
        return
    from .transports import mark_dead

    transport = master.transport
    mark_dead(transport, dead, run.start)
    try:
        transport.on_deaths(transport.dead)
    except WorkersLost as error:
        for hook in hooks:
            hook.failed(run, run.start, error)
        transport.shutdown(timeout=5.0)
        raise RunFailed(str(error)) from error


def _mpi_master(comm, run, supports, options):
    """The master's Master over the transport `connect` picks (shared memory on one node,
    else messages of settings.message_dtype), for the workers' `supports`."""
    from . import transports

    code, settings = run.code, run.settings
    assembler = _assembler(run, supports)
    window = transports.connect(comm, code, run.n_features, message_ptr=assembler.ptr, **options)
    common = {"backend": settings.backend, "on_deaths": lost_check(code)}
    if window is None:
        point_to_point, _ = transports.MESSAGE_TRANSPORTS[settings.message_dtype]
        transport = point_to_point(comm, code, supports, assembler, **common)
    else:
        transport = transports.SharedMemoryMasterTransport(comm, code, supports, assembler,
                                                           window, run.optimizer, **common)
    return _master(run, assembler, transport)


def _master(run, assembler, transport):
    """The Master of `run` over `transport`."""
    settings = run.settings
    return Master(run.code, assembler, run.optimizer, transport, deadline=settings.deadline,
                  wait_seconds=settings.wait_seconds,
                  gradient_error_every=settings.gradient_error_every)


def _assembler(run, supports):
    """The GradientAssembler of the master of `run` for the workers' `supports`."""
    return GradientAssembler(run.code, supports, run.n_features, backend=run.settings.backend)


def _finish(run, master, hooks, measured, mode, rank=0):
    """The master's RunResult after the loop: shut the workers down, let the hooks add."""
    wall_seconds, master_cpu, rss_first = measured
    transport = master.transport
    silent, worker_reports = transport.shutdown()
    stats = {"messages_received": transport.n_received, "messages_stale": transport.n_stale,
             "worker_stats": [worker_reports.get(w, {}) for w in range(run.code.n_workers)],
             "silent_workers": silent, "dead_workers": dict(transport.dead),
             "shared_memory": transport.shared_memory,
             "message_dtype": run.settings.message_dtype, "master_cpu_seconds": master_cpu,
             "master_rss_bytes": {"after_first_iteration": rss_first,
                                  "end": resident_memory_bytes()}}
    result = RunResult(w=run.optimizer.x.copy(), history=run.records, code=run.code, lr=run.lr,
                       mode=mode, wall_seconds=wall_seconds, rank=rank, stats=stats)
    for hook in hooks:
        hook.finished(run, result)
    return result


def _broadcast_result(comm, result, run, transports):
    """The master's RunResult on every rank, as one buffer-based broadcast."""
    settings, code = run.settings, run.code
    snapshots = np.array([t for t in range(settings.iterations) if is_snapshot(settings, t)])
    width = len(RECORD_SCALARS) + 2 * code.n_messages
    layout = {"w": run.n_features, "lr_and_wall_seconds": 2, "history": settings.iterations * width,
              "objective_values": len(snapshots) if settings.objective is not None else 0,
              "trajectory": settings.iterations * run.n_features if settings.keep_trajectory else 0}
    if comm.Get_rank() == 0:
        buffer = np.concatenate([np.ravel(part) for part in _pack(result, width)])
    else:
        buffer = np.empty(sum(layout.values()))
    transports.broadcast(comm, buffer)
    parts = dict(zip(layout, np.split(buffer, np.cumsum(list(layout.values()))[:-1]), strict=True))
    if comm.Get_rank() == 0:
        return result
    lr, wall_seconds = parts["lr_and_wall_seconds"]
    return RunResult(
        w=parts["w"].copy(), history=_unpack_history(parts["history"].reshape(-1, width), code),
        code=code, lr=float(lr), mode="mpi", wall_seconds=float(wall_seconds),
        objective_iterations=snapshots,
        objective_values=parts["objective_values"].copy() if settings.objective else None,
        trajectory=(parts["trajectory"].reshape(settings.iterations, run.n_features).copy()
                    if settings.keep_trajectory else None),
        rank=comm.Get_rank())


def _pack(result, width):
    """The parts of the master's result that every rank gets, as float64 arrays."""
    n_messages = result.code.n_messages
    rows = np.full((len(result.history), width), -1.0)
    for row, record in zip(rows, result.history, strict=True):
        row[:len(RECORD_SCALARS)] = [record[key] for key in RECORD_SCALARS]
        row[len(RECORD_SCALARS):-n_messages] = record["arrival"]
        row[len(row) - n_messages:][:len(record["used"])] = record["used"]
    parts = [result.w, [result.lr, result.wall_seconds], rows]
    if result.objective_values is not None:
        parts.append(result.objective_values)
    if result.trajectory is not None:
        parts.append(result.trajectory)
    return [np.asarray(part, dtype=np.float64) for part in parts]


def _unpack_history(rows, code):
    n_messages, n_scalars = code.n_messages, len(RECORD_SCALARS)
    history = []
    for row in rows:
        record = {key: float(value) for key, value in zip(RECORD_SCALARS, row, strict=False)}
        for key in ("iteration", "stale", "bytes_sent", "bytes_received"):
            record[key] = int(record[key])
        record["arrival"] = row[n_scalars:n_scalars + n_messages].copy()
        used = row[n_scalars + n_messages:]
        record["used"] = [int(m) for m in used[used >= 0]]
        history.append(record)
    return history
