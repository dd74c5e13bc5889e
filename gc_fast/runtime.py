"""Master and worker loops over MPI: the only module that talks MPI.

Rank 0 is the master, rank w+1 is worker w. All messages are buffer-based
(no pickling on the hot path):

- master -> worker: the query point restricted to the worker's support,
  tag = iteration (mod the tag range); a zero-length message with STOP_TAG
  ends the run;
- worker -> master: message k of iteration t, tag = 2 * t + k (mod the tag
  range); after STOP, a zero-length DONE message, then a STATS message
  (messages sent, iterations abandoned, resident memory, CPU time, nice).

When every rank runs on one node, the point and the message slots live in an
MPI-3 shared-memory window (SharedBuffers) instead: the same messages, with the
same tags, are zero-length notifications, and nothing is copied between ranks.

The master keeps exactly one receive posted per worker (any tag), straight
into the slot of the message that worker should send next. A worker's
messages arrive in the order it sent them (MPI's non-overtaking rule), so a
late message lands before that worker's current one, and the decode reads a
slot only once its current message has arrived: a late message is recognised
as stale by its tag, counted and dropped. The same order makes the STOP/DONE handshake drain everything still
in flight.

Waiting ranks never spin in MPI's progress engine: they poll with Test and
sleep with a short exponential back-off, so ranks that compute keep the CPU.

Dead workers: under an MPI with ULFM fault tolerance (Open MPI 5 started with
`mpirun --with-ft ulfm`), a worker process that dies makes its pending
operations fail with MPI_ERR_PROC_FAILED instead of ending the job. The master
then asks MPI which ranks failed, stops sending to them, and decodes from the
others while the code allows it (WorkersLost otherwise). Under MPICH the
launcher ends the whole job when a rank dies.
"""
import os
import signal
import sys
import time
import traceback
from contextlib import contextmanager

import numpy as np
from mpi4py import MPI

from . import kernels, priority

POLL_MIN_SLEEP = 2e-5
POLL_MAX_SLEEP = 5e-4
MASTER_MAX_SLEEP = 1e-4  # the master is on the critical path: it looks more often
ABORT_GRACE_SECONDS = 0.5


def _tag_range(comm):
    """(iteration period, STOP tag, DONE tag, STATS tag): the top tags are reserved."""
    tag_ub = comm.Get_attr(MPI.TAG_UB)
    period = (tag_ub - 3) // 2
    return period, tag_ub, tag_ub - 1, tag_ub - 2


def exit_without_finalize(code):
    """End this process now, skipping MPI_Finalize. For fault-tolerant runs: once ranks
    have died, Open MPI's finalize can wait forever in a fence that counts the dead
    (open-mpi/ompi#11404), and a worker cannot know whether another worker died."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class WorkersLost(RuntimeError):
    """More workers have died than the code tolerates: no decodable set can arrive again."""

    def __init__(self, dead, n_stragglers, scheme):
        self.dead = dict(dead)  # 0-based worker -> iteration at which the master noticed
        names = ", ".join(f"{w + 1} (found dead at iteration {at})" for w, at in sorted(self.dead.items()))
        super().__init__(f"workers {names} died; {scheme} with s = {n_stragglers} cannot decode "
                         f"without them")


def _process_failure(error):
    """Whether an MPI.Exception reports a dead process (ULFM error classes)."""
    classes = {getattr(MPI, name) for name in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
               if hasattr(MPI, name)}
    return error.Get_error_class() in classes


def failed_ranks(comm):
    """Ranks of comm the MPI library knows to be dead (empty without ULFM support)."""
    try:
        group = comm.Get_failed()
    except (NotImplementedError, MPI.Exception):
        return []
    try:
        return [r for r in MPI.Group.Translate_ranks(group, list(range(group.Get_size())), comm.Get_group())
                if r != MPI.UNDEFINED]
    finally:
        group.Free()


def fault_tolerant():
    """True under an MPI that survives dead ranks: Open MPI started with --with-ft ulfm."""
    return ("Open MPI" in MPI.Get_library_version()
            and os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() in ("1", "true", "yes"))


class DeadlineExceeded(RuntimeError):
    """The master waited longer than its deadline for a decodable set of messages."""

    def __init__(self, iteration, silent_workers, last_heard, waited):
        self.iteration = iteration
        self.silent_workers = silent_workers  # 0-based workers whose message never came
        self.last_heard = last_heard          # per silent worker: last iteration heard from, or -1
        names = ", ".join(
            f"{w + 1} (last heard at iteration {last})" if last >= 0 else f"{w + 1} (never heard from)"
            for w, last in zip(silent_workers, last_heard))
        super().__init__(f"iteration {iteration}: no decodable set of messages after {waited:.1f} s; "
                         f"workers silent: {names}")


def resident_memory_bytes():
    """This process's resident set size (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Backoff:
    """Sleeps a little longer each time nothing happened, up to `longest` seconds."""

    def __init__(self, longest=POLL_MAX_SLEEP):
        self.pause = POLL_MIN_SLEEP
        self.longest = longest

    def wait(self):
        time.sleep(self.pause)
        self.pause = min(2.0 * self.pause, self.longest)


def _wait_all(requests, *, dead_ok=False):
    """Complete all requests without spinning; with dead_ok, one that failed because its
    peer died counts as complete."""
    backoff = _Backoff()
    if dead_ok:
        while not all([_test_or_failed(request) for request in requests]):
            backoff.wait()
    else:
        while not MPI.Request.Testall(requests):
            backoff.wait()


def barrier(comm):
    """MPI barrier that sleeps instead of spinning while other ranks work."""
    _wait_all([comm.Ibarrier()])


def prepare_node(comm, code, n_features, *, message_ptr=None, priorities="auto",
                 shared_memory="auto"):
    """Collective, once before the first iteration: rank the workers' CPU priority
    (gc_fast.priority; `priorities` "auto" = when this node runs more ranks than this
    process has cores) and return the SharedBuffers, or None when `shared_memory` is
    "off", the ranks span several nodes, or the run is fault-tolerant (ULFM does not
    promise that windows survive a dead rank). The master passes `message_ptr`, the
    assembler's message offsets (GradientAssembler.ptr); workers pass None."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    rank = comm.Get_rank()
    if rank != 0 and priority.wanted(priorities, node.Get_size(), priority.usable_cores()):
        position = int(np.flatnonzero(code.priority_order() == rank - 1)[0])
        priority.lower_priority(priority.worker_nice(position))
    if shared_memory == "off" or node.Get_size() != comm.Get_size() or fault_tolerant():
        node.Free()
        return None
    return SharedBuffers(node, code, n_features, message_ptr)


class SharedBuffers:
    """The query point and every message slot in one MPI-3 shared-memory window,
    when all ranks share a node.

    The optimiser keeps its query point in the window, so each step writes the
    next point where the workers read it; the master notifies every worker with
    a zero-length message; each worker gathers its own support from the window, computes its messages straight into their slots (the master's
    GradientAssembler stores its messages in the same slots) and notifies the
    master with a zero-length message. Nothing is copied between processes.

    Why no slot is read while it is written: the master reads a worker's slot
    for iteration t only after that worker's notification for t, and publishes
    point t+1 only after it has decoded t; a worker writes its slots only for the
    iteration it is computing, one at a time, after the notification of that
    point. A worker that reads a point newer than its notification (the master
    has decoded that iteration without it) sends a stale message, dropped by tag.
    Window.Sync before each notification and after each received one orders the
    copies.
    """

    def __init__(self, node, code, n_features, message_ptr):
        """Collective over `node` (every rank of the run), whose rank 0 is the master."""
        self.code = code
        self.n_features = int(n_features)
        self.ptr = (np.asarray(message_ptr, dtype=np.int64) if node.Get_rank() == 0
                    else np.empty(code.n_messages + 1, dtype=np.int64))
        broadcast(node, self.ptr)
        total = self.n_features + int(self.ptr[-1])
        self.window = MPI.Win.Allocate_shared(8 * total if node.Get_rank() == 0 else 0, 8, comm=node)
        buffer, _ = self.window.Shared_query(0)
        self.window.Lock_all(MPI.MODE_NOCHECK)  # one passive epoch; Sync orders the copies
        values = np.frombuffer(buffer, dtype=np.float64, count=total)
        self.point = values[:self.n_features]
        self.messages = values[self.n_features:]

    def message(self, m):
        """The slot of message m (a view into the window)."""
        return self.messages[self.ptr[m]:self.ptr[m + 1]]

    def worker_slots(self, worker):
        """The slots of `worker`'s messages, in the order it sends them."""
        return [self.message(m) for m in self.code.messages_of(worker)]

    def publish(self):
        """Master: make the point the optimiser's step wrote into self.point visible."""
        self.window.Sync()

    def gather(self, support, out, backend):
        """Worker: out <- the published point on `support`."""
        self.window.Sync()
        kernels.gather(self.point, support, out, backend=backend, check=False)

    def sync(self):
        """Order this rank's slot writes or reads against the notifications."""
        self.window.Sync()


def world():
    """MPI.COMM_WORLD, for modules that do not import mpi4py themselves."""
    return MPI.COMM_WORLD


def broadcast(comm, buffer, root=0):
    """Copy root's numpy `buffer` into every rank's `buffer` (buffer-based); never spins."""
    _wait_all([comm.Ibcast(buffer, root=root)])


@contextmanager
def abort_on_error(comm):
    """An exception on one rank ends every rank, instead of leaving the others waiting forever."""
    try:
        yield
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)  # mpiexec forwards our stderr before it tears the job down
        comm.Abort(1)
        raise


def pingpong(comm, sizes, think_seconds, *, repeats=30, poll_seconds=0.3):
    """Wall and CPU time of messages between ranks 0 and 1, waited for as the loops here wait.

    First each rank waits poll_seconds for a message (its CPU time over that
    wait: the polling load). Then for each think time and size: rank 0
    sleeps `think`, sends, waits for the reply; rank 1 waits, sleeps `think`,
    replies. Returns on rank 0 {"poll_load": [per rank], "rounds": [per
    (think, bytes): median one-way wall seconds and each rank's median CPU
    seconds per round]}, None on rank 1. For gc_fast.simulate --calibrate.
    """
    rank = comm.Get_rank()
    token = np.zeros(1)
    poll_load = []
    for waiting in (0, 1):
        cpu = time.process_time()
        if rank == waiting:
            _wait_all([comm.Irecv([token, MPI.DOUBLE], source=1 - rank, tag=3)])
            poll_load.append((time.process_time() - cpu) / poll_seconds)
        else:
            time.sleep(poll_seconds)
            _wait_all([comm.Isend([token, MPI.DOUBLE], dest=1 - rank, tag=3)])
    rounds = []
    for think in think_seconds:
        for size in sizes:
            buffer = np.zeros(size // 8)
            walls, cpus = [], []
            for _ in range(repeats + 2):
                cpu = time.process_time()
                if rank == 0:
                    time.sleep(think)
                    started = time.perf_counter()
                    _wait_all([comm.Isend([buffer, MPI.DOUBLE], dest=1, tag=1)])
                    _wait_all([comm.Irecv([buffer, MPI.DOUBLE], source=1, tag=2)])
                    walls.append((time.perf_counter() - started - think) / 2)
                else:
                    _wait_all([comm.Irecv([buffer, MPI.DOUBLE], source=0, tag=1)])
                    time.sleep(think)
                    _wait_all([comm.Isend([buffer, MPI.DOUBLE], dest=0, tag=2)])
                cpus.append(time.process_time() - cpu)
            both = comm.gather(float(np.median(cpus[2:])), root=0)
            if rank == 0:
                rounds.append({"think": think, "bytes": size, "one_way": float(np.median(walls[2:])),
                               "cpu": both})
    loads = comm.gather(poll_load[0], root=0)
    return {"poll_load": loads, "rounds": rounds} if rank == 0 else None


ERROR_BYTES = 1024


def gather_errors(comm, message):
    """Every rank's error message (or None), known on every rank; never spins.

    Buffer-based: each rank contributes a fixed-size UTF-8 field, so ranks
    that failed early wait asleep for the ones still setting up.
    """
    mine = np.zeros(ERROR_BYTES, dtype=np.uint8)
    if message:
        encoded = message.encode("utf-8")[:ERROR_BYTES - 1] or b"?"
        mine[:len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    everyone = np.zeros((comm.Get_size(), ERROR_BYTES), dtype=np.uint8)
    _wait_all([comm.Iallgather([mine, MPI.BYTE], [everyone, MPI.BYTE])])
    return [bytes(row).rstrip(b"\0").decode("utf-8", "replace") or None for row in everyone]


class _SendPool:
    """Send buffers of one length: a buffer is reused only once its Isend has completed."""

    def __init__(self, length):
        self.length = length
        self.in_flight = []  # (request, buffer)
        self.free = []

    def acquire(self):
        pending = []
        for request, buffer in self.in_flight:
            if _test_or_failed(request):
                self.free.append(buffer)
            else:
                pending.append((request, buffer))
        self.in_flight = pending
        return self.free.pop() if self.free else np.empty(self.length, dtype=np.float64)

    def sent(self, request, buffer):
        self.in_flight.append((request, buffer))

    def requests(self):
        return [request for request, _ in self.in_flight]


def _test_or_failed(request):
    """request.Test(), where a send to a dead process counts as completed (it has failed)."""
    try:
        return request.Test()
    except MPI.Exception as error:
        if not _process_failure(error):
            raise
        return True


def _sleep_unless(request, status, seconds):
    """Sleep up to `seconds` (inf allowed); return True as soon as `request` completes."""
    deadline = time.perf_counter() + seconds
    backoff = _Backoff()
    while True:
        if request.Test(status):
            return True
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return False
        time.sleep(min(backoff.pause, remaining))
        backoff.pause = min(2.0 * backoff.pause, backoff.longest)


class WorkerLoop:
    """Worker w: receive the newest point, compute the coded message(s), send them.

    A newer point (or STOP) arriving while the worker sleeps an injected delay
    or computes makes it abandon the stale iteration at once (checked between
    partitions), so nobody works for an iteration the master has finished.
    With `shared` (SharedBuffers) the point is read from, and the messages are
    written to, shared memory, and every MPI message is a zero-length notification.
    """

    def __init__(self, comm, worker, n_workers, task, delay_model, seed, *, shared=None,
                 backend="cython"):
        self.comm = comm
        self.worker = worker
        self.shared = shared
        self.backend = backend
        self.n_workers = n_workers
        self.task = task
        self.delay_model = delay_model
        self.seed = seed
        self.period, self.stop_tag, self.done_tag, self.stats_tag = _tag_range(comm)
        n_support = len(task.support)
        if shared is None:
            self.points = self.inbox = [np.empty(n_support), np.empty(n_support)]
            self.send_pools = [_SendPool(length) for length in task.message_lengths]
            self.slots = None
        else:  # notifications carry nothing; the point is gathered where the task reads it
            self.points = [task.point] * 2
            self.inbox = [np.empty(0)] * 2
            self.send_pools = [_SendPool(0) for _ in task.message_lengths]
            self.slots = shared.worker_slots(worker)
            if [len(slot) for slot in self.slots] != list(task.message_lengths):
                raise ValueError(f"worker {worker}: the master's message slots have lengths "
                                 f"{[len(slot) for slot in self.slots]}, the task's messages "
                                 f"{list(task.message_lengths)}: master and workers split the data differently")
            fits_int32 = n_support == 0 or task.support.max() <= np.iinfo(np.int32).max
            self.support = task.support.astype(np.int32 if fits_int32 else np.int64)  # half the traffic
        self.status = MPI.Status()
        self.slot = 0
        self.request = comm.Irecv([self.inbox[0], MPI.DOUBLE], source=0, tag=MPI.ANY_TAG)
        self.n_sent = 0
        self.n_abandoned = 0
        self.rss_start = None  # resident memory after the first iteration

    def _take(self):
        """The completed receive's (tag, point); repost into the other buffer unless STOP."""
        tag = self.status.Get_tag()
        point = self.points[self.slot]
        if tag != self.stop_tag:
            self.slot ^= 1
            self.request = self.comm.Irecv([self.inbox[self.slot], MPI.DOUBLE],
                                           source=0, tag=MPI.ANY_TAG)
        return tag, point

    def run(self):
        _sleep_unless(self.request, self.status, np.inf)
        cpu_started = time.process_time()
        tag, point = self._take()
        while tag != self.stop_tag:
            while self.request.Test(self.status):  # skip to the newest point
                tag, point = self._take()
                if tag == self.stop_tag:
                    break
            else:
                if not self._iteration(tag, point):
                    _sleep_unless(self.request, self.status, np.inf)
                tag, point = self._take()
                if self.rss_start is None:
                    self.rss_start = resident_memory_bytes()
        stats = np.array([self.n_sent, self.n_abandoned, self.rss_start or resident_memory_bytes(),
                          resident_memory_bytes(), time.process_time() - cpu_started, os.nice(0)],
                         dtype=np.float64)
        done = self.comm.Isend([np.empty(0), MPI.DOUBLE], dest=0, tag=self.done_tag)
        report = self.comm.Isend([stats, MPI.DOUBLE], dest=0, tag=self.stats_tag)
        _wait_all([done, report] + [r for pool in self.send_pools for r in pool.requests()])

    def _iteration(self, iteration, point):
        """Compute and send; True if abandoned because a newer point (or STOP) arrived."""
        if self.delay_model.killed(iteration, self.worker):
            os.kill(os.getpid(), signal.SIGKILL)  # injected fault: a real process death
        delay = self.delay_model.delays(self.seed, iteration, self.n_workers)[self.worker]
        if delay > 0 and _sleep_unless(self.request, self.status, delay):
            self.n_abandoned += 1
            return True
        if self.shared is not None:
            self.shared.gather(self.support, point, self.backend)
        factor = self.delay_model.compute_factor(self.worker)
        outs = self.slots or [pool.acquire() for pool in self.send_pools]
        unsent = set(range(len(outs)))
        started = time.perf_counter()
        for kind in self.task.run(point, outs):
            if factor > 1.0:
                extra = (factor - 1.0) * (time.perf_counter() - started)
                if _sleep_unless(self.request, self.status, extra):
                    break
            if kind is not None:
                frozen = self.delay_model.pause(iteration, self.worker) if kind == 0 else 0.0
                if frozen:
                    time.sleep(frozen)  # deaf on purpose: a stalled VM notices nothing
                if self.shared is None:
                    payload = outs[kind]
                else:  # the message is in its slot already
                    self.shared.sync()
                    payload = self.send_pools[kind].acquire()
                request = self.comm.Isend([payload, MPI.DOUBLE], dest=0,
                                          tag=2 * (iteration % self.period) + kind)
                self.send_pools[kind].sent(request, payload)
                unsent.discard(kind)
                self.n_sent += 1
            if self.request.Test(self.status):
                break
            started = time.perf_counter()
        else:
            return False
        if self.shared is None:
            for kind in unsent:
                self.send_pools[kind].free.append(outs[kind])
        self.n_abandoned += bool(unsent)
        return True


class MasterLoop:
    """Rank 0: send the query point, decode on the earliest decodable set, step.

    Each worker has one receive posted at all times, straight into the slot of
    the message it is expected to send next, so the common case copies nothing.
    A message that lands in the wrong slot (the worker skipped one) is copied to
    its own slot; a stale one (older iteration) is counted and dropped. With
    `shared` (SharedBuffers) the assembler's slots are in shared memory, workers
    write them directly, and every receive is a zero-length notification.
    `deadline` (seconds, or None) bounds the wait for a decodable set.
    """

    def __init__(self, comm, code, supports, assembler, optimizer, *, backend="cython", deadline=None,
                 shared=None):
        self.comm = comm
        self.code = code
        self.supports = supports
        self.assembler = assembler
        self.optimizer = optimizer
        self.backend = backend
        self.deadline = deadline
        self.shared = shared
        if shared is not None:
            assembler.store_in(shared.messages)
            optimizer.keep_query_point_in(shared.point)
        self.no_data = np.empty(0)
        self.period, self.stop_tag, self.done_tag, self.stats_tag = _tag_range(comm)
        n_workers = code.n_workers
        self.worker_messages = [list(code.messages_of(w)) for w in range(n_workers)]
        self.send_pools = [_SendPool(0 if shared else len(s)) for s in supports]
        self.status = MPI.Status()
        self.expected_kind = [0] * n_workers
        self.requests = [self._post(w, 0) for w in range(n_workers)]
        self.last_heard = np.full(n_workers, -1, dtype=np.int64)  # iteration of the newest message
        self.gradient = np.zeros(assembler.n_features)
        self.n_received = 0
        self.n_stale = 0
        self.worker_stats = {}
        self.dead = {}  # worker -> iteration at which the master learnt it had died
        self.iteration_now = -1
        self.stopping = False

    def _post(self, worker, kind):
        self.expected_kind[worker] = kind
        view = (self.no_data if self.shared
                else self.assembler.message_view(self.worker_messages[worker][kind]))
        try:
            return self.comm.Irecv([view, MPI.DOUBLE], source=worker + 1, tag=MPI.ANY_TAG)
        except MPI.Exception as error:
            self._bury_on_failure(error)
            return MPI.REQUEST_NULL

    def _bury_on_failure(self, error):
        """Re-raise `error` unless it reports a dead process; else _bury. True when MPI named
        workers not known dead before."""
        if not _process_failure(error):
            raise error
        return bool(self._bury())

    def _bury(self):
        """Stop waiting for and sending to the workers MPI reports dead; WorkersLost when
        the survivors' messages can no longer decode."""
        newly = [rank - 1 for rank in failed_ranks(self.comm) if rank > 0 and rank - 1 not in self.dead]
        for worker in newly:
            self.dead[worker] = self.iteration_now
            self.requests[worker] = MPI.REQUEST_NULL
            self.send_pools[worker].in_flight = []
        alive = [m for w, messages in enumerate(self.worker_messages) if w not in self.dead for m in messages]
        if self.dead and not self.stopping and not self.code.is_decodable(alive):
            raise WorkersLost(self.dead, self.code.n_stragglers, self.code.scheme)
        return newly

    def _next_arrival(self, give_up_at=np.inf):
        """Index of the next completed receive, or None once `give_up_at` has passed."""
        backoff = _Backoff(MASTER_MAX_SLEEP)
        while True:
            try:
                index, completed = MPI.Request.Testany(self.requests, self.status)
            except MPI.Exception as error:
                if not self._bury_on_failure(error):
                    raise  # a failure MPI does not attribute to a dead worker
                continue
            if completed:  # index UNDEFINED: no receive left to wait for
                return None if index == MPI.UNDEFINED else index
            if time.perf_counter() > give_up_at:
                return None
            backoff.wait()

    def iteration(self, iteration):
        """Run one iteration; returns its record (timing, arrivals, decode)."""
        started = time.perf_counter()
        self.iteration_now = iteration
        point = self.optimizer.query_point()
        bytes_sent = 0
        if self.shared is not None:
            self.shared.publish()  # the optimiser keeps its query point in the window
            bytes_sent = 8 * len(point)
        for worker, support in enumerate(self.supports):
            if worker in self.dead:
                continue
            pool = self.send_pools[worker]
            buffer = pool.acquire()
            if self.shared is None:
                bytes_sent += 8 * len(support)
                kernels.gather(point, support, buffer, backend=self.backend, check=False)
            try:
                pool.sent(self.comm.Isend([buffer, MPI.DOUBLE], dest=worker + 1,
                                          tag=iteration % self.period), buffer)
            except MPI.Exception as error:
                self._bury_on_failure(error)
        self.assembler.start(self.gradient)
        arrival = np.full(self.code.n_messages, np.nan)
        n_stale = bytes_received = 0
        base_tag = 2 * (iteration % self.period)
        give_up_at = started + self.deadline if self.deadline else np.inf
        while True:
            worker = self._next_arrival(give_up_at)
            if worker is None:
                raise self._deadline_error(iteration, arrival, time.perf_counter() - started)
            tag = self.status.Get_tag()
            bytes_received += 8 * self.status.Get_count(MPI.DOUBLE)
            self.n_received += 1
            kind = tag - base_tag
            messages = self.worker_messages[worker]
            if not 0 <= kind < len(messages):
                n_stale += 1
                self.last_heard[worker] = max(self.last_heard[worker], iteration - 1)
                self.requests[worker] = self._post(worker, 0)
                continue
            self.last_heard[worker] = iteration
            if self.shared is not None:  # the message is in its slot: count what the decode reads
                self.shared.sync()
                bytes_received += 8 * len(self.assembler.message_view(messages[kind]))
            elif kind != self.expected_kind[worker]:
                landed = self.assembler.message_view(messages[self.expected_kind[worker]])
                self.assembler.message_view(messages[kind])[:] = landed
            next_kind = kind + 1 if kind + 1 < len(messages) else 0
            self.requests[worker] = self._post(worker, next_kind)
            arrival[messages[kind]] = time.perf_counter() - started
            if self.assembler.add(messages[kind]):
                break
        self.assembler.combine(self.gradient)
        self.optimizer.step(self.gradient)
        self.n_stale += n_stale
        return {
            "time": time.perf_counter() - started,
            "arrival": arrival,
            "used": list(self.assembler.arrived),
            "residual": self.assembler.residual(),
            "stale": n_stale,
            "bytes_sent": bytes_sent,
            "bytes_received": bytes_received,
        }

    def _deadline_error(self, iteration, arrival, waited):
        silent = [w for w in range(self.code.n_workers)
                  if any(np.isnan(arrival[m]) for m in self.worker_messages[w])]
        return DeadlineExceeded(iteration, silent, [int(self.last_heard[w]) for w in silent], waited)

    def shutdown(self, timeout=10.0):
        """STOP every worker and drain what is in flight until each has said DONE.

        Each worker then reports (messages sent, iterations abandoned, resident
        memory after its first iteration and at the end, CPU seconds from its
        first point to STOP, nice) into `worker_stats`.
        Returns the workers that did not answer within `timeout` seconds.
        """
        self.stopping = True
        alive = [w for w in range(self.code.n_workers) if w not in self.dead]
        stops = [self.comm.Isend([np.empty(0), MPI.DOUBLE], dest=w + 1, tag=self.stop_tag) for w in alive]
        stats = np.zeros((self.code.n_workers, 6))
        pending = set(alive)
        give_up_at = time.perf_counter() + timeout
        while pending - set(self.dead):
            worker = self._next_arrival(give_up_at)
            if worker is None:
                break
            tag = self.status.Get_tag()
            if tag == self.done_tag:
                self.requests[worker] = self.comm.Irecv([stats[worker], MPI.DOUBLE],
                                                        source=worker + 1, tag=self.stats_tag)
            elif tag == self.stats_tag:
                pending.discard(worker)
                self.requests[worker] = MPI.REQUEST_NULL
                sent, abandoned, rss_start, rss_end, cpu, nice = stats[worker]
                self.worker_stats[worker] = {"messages_sent": int(sent), "abandoned": int(abandoned),
                                             "rss_start_bytes": int(rss_start),
                                             "rss_end_bytes": int(rss_end), "cpu_seconds": cpu,
                                             "nice": int(nice)}
            else:
                self.n_received += 1
                self.n_stale += 1
                self.requests[worker] = self._post(worker, 0)
        pending -= set(self.dead)
        if not pending:
            _wait_all(stops + [r for pool in self.send_pools for r in pool.requests()], dead_ok=True)
        return sorted(pending)
