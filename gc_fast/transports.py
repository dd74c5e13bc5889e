"""Moving points and messages between the master and the workers: the only MPI code.

Rank 0 is the master, rank w+1 is worker w. Two transports carry the same
protocol, every message buffer-based (no pickling on the hot path):

- ``MessageTransport`` (any number of hosts; survives dead workers under
  ULFM): master -> worker, the query point restricted to the worker's
  support, tag = iteration (mod the tag range); worker -> master, message k
  of iteration t, tag = 2 t + k (mod the tag range).
- ``SharedMemoryTransport`` (every rank on one node): the point and every
  message slot live in one MPI-3 shared-memory window; the same messages,
  with the same tags, are zero-length notifications, and nothing is copied
  between ranks.

Points and messages travel as float64 (exact). The ``Float32`` variants of the
message transport round them to float32 on the wire: half the bytes each way,
INEXACT (the worker computes in float64 at the rounded point, the master
decodes the rounded messages in float64; bench/float32_error.py measures the
error). Shared memory has no wire to save bytes on, so float32 runs use messages.

A zero-length STOP ends the run; each worker answers with DONE, then a STATS
message. The master keeps exactly one receive posted per worker (any tag). A
worker's messages arrive in the order it sent them (MPI's non-overtaking
rule), so a late message lands before that worker's current one and is
recognised as stale by its tag, counted and dropped; the same order makes the
STOP/DONE handshake drain everything in flight.

Waiting ranks never spin in MPI's progress engine: they poll with Test and
sleep with a short exponential back-off, so ranks that compute keep the CPU.

Dead workers: under an MPI with ULFM fault tolerance (Open MPI 5 started with
``mpirun --with-ft ulfm``), a worker that dies makes pending operations fail
with MPI_ERR_PROC_FAILED instead of ending the job. The master transport asks
MPI which ranks failed, stops sending to them and reports them to the driver
(``on_deaths``), which decides whether the survivors can still decode. Under
MPICH the launcher ends the whole job when a rank dies.
"""
import collections
import os
import sys
import time
import traceback
from contextlib import contextmanager

import numpy as np
from mpi4py import MPI

from . import kernels, schedule

POLL_MIN_SLEEP = 2e-5
POLL_MAX_SLEEP = 5e-4
MASTER_MAX_SLEEP = 1e-4  # the master is on the critical path: it looks more often
# A worker waiting for its next point first sleeps this fraction of its shortest recent wait at
# once, then polls at most every POLL_MAX_SLEEP or 1/WAIT_POLLS of that wait: a host with a
# tenth of a core spends it computing, not polling (each poll costs ~30 us of CPU).
QUIET_FRACTION = 0.8
WAIT_POLLS = 50
RECENT_WAITS = 8
ABORT_GRACE_SECONDS = 0.5
SPEED_SECONDS = 0.6  # measure_speeds: several CPU-quota periods (100 ms), short next to training
ERROR_BYTES = 1024
STATS_FIELDS = ("messages_sent", "abandoned", "rss_start_bytes", "rss_end_bytes", "cpu_seconds",
                "nice", "peak_rss_bytes", "setup_seconds")


def world():
    """MPI.COMM_WORLD, for modules that do not import mpi4py themselves."""
    return MPI.COMM_WORLD


def fault_tolerant():
    """True under an MPI that survives dead ranks: Open MPI started with --with-ft ulfm."""
    return ("Open MPI" in MPI.Get_library_version()
            and os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() in ("1", "true", "yes"))


def exit_without_finalize(code):
    """End this process now, skipping MPI_Finalize. For fault-tolerant runs: once ranks
    have died, Open MPI's finalize can wait forever in a fence that counts the dead
    (open-mpi/ompi#11404), and a worker cannot know whether another worker died."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _process_failure(error):
    """Whether an MPI.Exception reports a dead process (ULFM error classes)."""
    names = ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
    return error.Get_error_class() in {getattr(MPI, name) for name in names if hasattr(MPI, name)}


def failed_ranks(comm):
    """Ranks of comm the MPI library knows to be dead (empty without ULFM support)."""
    try:
        group = comm.Get_failed()
    except (NotImplementedError, MPI.Exception):
        return []
    try:
        ranks = MPI.Group.Translate_ranks(group, list(range(group.Get_size())), comm.Get_group())
        return [r for r in ranks if r != MPI.UNDEFINED]
    finally:
        group.Free()


class _Backoff:
    """Sleeps a little longer each time nothing happened, up to `longest` seconds."""

    def __init__(self, longest=POLL_MAX_SLEEP):
        self.pause = min(POLL_MIN_SLEEP, longest)
        self.longest = longest

    def wait(self, at_most=np.inf):
        time.sleep(min(self.pause, at_most))
        self.pause = min(2.0 * self.pause, self.longest)


def _test_or_failed(request):
    """request.Test(), where a send to a dead process counts as completed (it has failed)."""
    try:
        return request.Test()
    except MPI.Exception as error:
        if not _process_failure(error):
            raise
        return True


def wait_all(requests, *, dead_ok=False):
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
    wait_all([comm.Ibarrier()])


def broadcast(comm, buffer, root=0):
    """Copy root's numpy `buffer` into every rank's `buffer` (buffer-based); never spins.
    Under ULFM, point to point from root, so that dead ranks are skipped (a worker whose
    root died exits: worker_lost_master)."""
    if not fault_tolerant():
        wait_all([comm.Ibcast(buffer, root=root)])
    elif comm.Get_rank() == root:  # a send to a rank known dead might never complete
        dead = set(failed_ranks(comm)) | {root}
        wait_all([comm.Isend(buffer, dest=rank, tag=_BROADCAST_TAG)
                  for rank in range(comm.Get_size()) if rank not in dead], dead_ok=True)
    else:
        _wait_for_master(comm, [comm.Irecv(buffer, source=root, tag=_BROADCAST_TAG)])


def gather_errors(comm, message):
    """Every rank's error message (or None), known on every rank; never spins.

    Buffer-based: each rank contributes a fixed-size UTF-8 field, so ranks
    that failed early wait asleep for the ones still setting up.
    """
    mine = _encode_text(message)
    everyone = np.zeros((comm.Get_size(), ERROR_BYTES), dtype=np.uint8)
    wait_all([comm.Iallgather([mine, MPI.BYTE], [everyone, MPI.BYTE])])
    return [_decode_text(row) for row in everyone]


def gather_supports(comm, support):
    """On the master (rank 0), the list of every worker's support (int64 arrays, worker
    order; None elsewhere): the workers read their own data, so the master needs none to
    size the messages. Buffer-based, never spins; support is ignored on the master."""
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = np.zeros(0, dtype=np.int64) if rank == 0 else np.ascontiguousarray(support, np.int64)
    lengths = np.zeros(size, dtype=np.int64) if rank == 0 else None
    wait_all([comm.Igather([np.array([len(mine)], dtype=np.int64), MPI.INT64_T],
                           [lengths, MPI.INT64_T] if rank == 0 else None, root=0)])
    if rank != 0:
        wait_all([comm.Igatherv([mine, MPI.INT64_T], None, root=0)])
        return None
    everything = np.empty(int(lengths.sum()), dtype=np.int64)
    wait_all([comm.Igatherv([mine, MPI.INT64_T], [everything, (lengths, None), MPI.INT64_T],
                            root=0)])
    return np.split(everything, np.cumsum(lengths)[:-1])[1:]


def broadcast_text(comm, text, root=0):
    """Root's `text` (at most ERROR_BYTES - 1 bytes of UTF-8) on every rank; never spins."""
    buffer = _encode_text(text if comm.Get_rank() == root else None)
    broadcast(comm, buffer, root=root)
    return _decode_text(buffer) or ""


def _encode_text(text):
    """`text` (or None) as a fixed-size NUL-padded UTF-8 field of ERROR_BYTES."""
    buffer = np.zeros(ERROR_BYTES, dtype=np.uint8)
    if text:
        encoded = text.encode("utf-8")[:ERROR_BYTES - 1] or b"?"
        buffer[:len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    return buffer


def _decode_text(buffer):
    """The text of an _encode_text field, None if empty."""
    return bytes(buffer).rstrip(b"\0").decode("utf-8", "replace") or None


# Under ULFM the set-up is point to point, through the master: a collective over a
# communicator with a dead member fails on some ranks and completes on others, or hangs.
# Its messages are all received before any transport posts a receive (any tag).
_HELLO_TAG, _SUPPORT_TAG, _VERDICT_TAG, _BROADCAST_TAG = 1, 2, 3, 4
MASTER_LOST_STATUS = 3  # a worker's exit status once its master has died


def worker_lost_master(comm, error=None):
    """A worker's master (rank 0) has died: say so in one line and end this process (no
    finalize: it would wait for the dead). Re-raises `error` unless it reports a dead process."""
    if error is not None and not _process_failure(error):
        raise error
    print(f"gc_fast: worker rank {comm.Get_rank()}: the master (rank 0) died; this worker "
          f"stops", file=sys.stderr, flush=True)
    exit_without_finalize(MASTER_LOST_STATUS)


def _wait_for_master(comm, requests):
    """Complete a worker's requests, all with the master, without spinning; exit quietly if
    it has died. (Each is tested alone: Testall would report MPI_ERR_IN_STATUS instead.)"""
    backoff = _Backoff()
    while requests:
        try:
            requests = [request for request in requests if not request.Test()]
        except MPI.Exception as error:
            worker_lost_master(comm, error)
        if requests:
            backoff.wait()


def report_setup(comm, message, support):
    """A worker's set-up under ULFM (gather_errors and gather_supports point to point): send
    the master its error `message` (or None) and, without one, its `support`; return the
    master's verdict, the run's first error (None: go on). Exits if the master dies."""
    hello = np.zeros(1 + ERROR_BYTES // 8, dtype=np.int64)  # support length, then the text
    hello[1:].view(np.uint8)[:] = _encode_text(message)
    hello[0] = -1 if message else len(support)
    sends = [comm.Isend([hello, MPI.INT64_T], dest=0, tag=_HELLO_TAG)]
    if not message:
        support = np.ascontiguousarray(support, dtype=np.int64)
        sends.append(comm.Isend([support, MPI.INT64_T], dest=0, tag=_SUPPORT_TAG))
    verdict = np.zeros(ERROR_BYTES, dtype=np.uint8)
    _wait_for_master(comm, [comm.Irecv([verdict, MPI.BYTE], source=0, tag=_VERDICT_TAG)])
    verdict = _decode_text(verdict)
    if verdict is None:
        _wait_for_master(comm, sends)  # the master has received them all
    return verdict


def collect_setup(comm, message):
    """The master's side of report_setup: (the run's first error in rank order or None, per
    worker its support, the workers found dead). Waits for every worker's report or its
    death; a dead worker's support is empty. Tells every live worker the verdict."""
    size = comm.Get_size()
    hellos = np.zeros((size, 1 + ERROR_BYTES // 8), dtype=np.int64)
    supports = [np.zeros(0, dtype=np.int64) for _ in range(size - 1)]
    pending = {(rank, _HELLO_TAG): comm.Irecv([hellos[rank], MPI.INT64_T], source=rank,
                                              tag=_HELLO_TAG) for rank in range(1, size)}
    dead = set()
    backoff = _Backoff()
    while pending:
        completed = False
        for (rank, tag), request in list(pending.items()):
            try:
                if not request.Test():
                    continue
            except MPI.Exception as error:
                if not _process_failure(error):
                    raise
                dead.add(rank)
            completed = True
            del pending[rank, tag]
            if tag == _HELLO_TAG and rank not in dead and hellos[rank, 0] >= 0:
                supports[rank - 1] = np.empty(hellos[rank, 0], dtype=np.int64)
                pending[rank, _SUPPORT_TAG] = comm.Irecv([supports[rank - 1], MPI.INT64_T],
                                                         source=rank, tag=_SUPPORT_TAG)
        if not completed:
            backoff.wait()
    dead.update(failed_ranks(comm))
    errors = [message] + [None if rank in dead else _decode_text(hellos[rank, 1:].view(np.uint8))
                          for rank in range(1, size)]
    verdict = next((error for error in errors if error), None)
    encoded = _encode_text(verdict)
    wait_all([comm.Isend([encoded, MPI.BYTE], dest=rank, tag=_VERDICT_TAG)
              for rank in range(1, size) if rank not in dead], dead_ok=True)
    dead.update(failed_ranks(comm))
    for rank in dead - {0}:
        supports[rank - 1] = np.zeros(0, dtype=np.int64)
    return verdict, supports, sorted(rank - 1 for rank in dead if rank > 0)


def mark_dead(transport, workers, iteration):
    """Tell a MasterTransport that `workers` are dead from `iteration` on (found dead at
    set-up): it neither sends to them nor waits for them (on_deaths is not called)."""
    for worker in workers:
        transport.dead[worker] = iteration
        transport.requests[worker] = MPI.REQUEST_NULL
        transport.send_pools[worker].in_flight = []


@contextmanager
def abort_on_error(comm):
    """An unexpected exception on one rank ends every rank, instead of leaving the others
    waiting forever."""
    try:
        yield
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_SECONDS)  # mpiexec forwards our stderr before it tears the job down
        comm.Abort(1)
        raise


def _tag_range(comm):
    """(iteration period, STOP tag, DONE tag, STATS tag): the top tags are reserved."""
    tag_ub = comm.Get_attr(MPI.TAG_UB)
    return (tag_ub - 3) // 2, tag_ub, tag_ub - 1, tag_ub - 2


class _SendPool:
    """Send buffers of one length and dtype: a buffer is reused only once its Isend has
    completed."""

    def __init__(self, length, dtype=np.float64):
        self.length = length
        self.dtype = dtype
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
        return self.free.pop() if self.free else np.empty(self.length, dtype=self.dtype)

    def sent(self, request, buffer):
        self.in_flight.append((request, buffer))

    def requests(self):
        return [request for request, _ in self.in_flight]


def connect(comm, code, n_features, *, message_ptr=None, priorities="auto",
            shared_memory="auto", message_dtype="float64"):
    """Collective (local under ULFM), once before the first iteration: rank the workers' CPU
    priority, and return the SharedMemoryWindow for this run, or None for point-to-point
    messages.

    priorities: "auto" ranks them (gc_fast.schedule) when this node runs more
    ranks than this process has cores, "on" always, "off" never. The window is
    None when `shared_memory` is "off", the ranks span several nodes, the
    run is fault-tolerant (ULFM does not promise that windows survive a dead
    rank) or `message_dtype` is "float32" (only a wire has bytes to halve: see
    MESSAGE_TRANSPORTS). The master passes `message_ptr`, the assembler's
    message offsets (GradientAssembler.ptr); workers pass None.
    """
    rank = comm.Get_rank()
    if fault_tolerant():
        # No collective (a dead rank would fail it) and no window: Open MPI tells each rank
        # how many ranks share its node.
        node, node_size = None, int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", comm.Get_size()))
    else:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        node_size = node.Get_size()
    if rank != 0 and schedule.wanted(priorities, node_size, schedule.usable_cores()):
        position = int(np.flatnonzero(schedule.priority_order(code) == rank - 1)[0])
        schedule.lower_priority(schedule.worker_nice(position))
    if node is None:
        return None
    if shared_memory == "off" or message_dtype != "float64" or node_size != comm.Get_size():
        node.Free()
        return None
    return SharedMemoryWindow(node, code, n_features, message_ptr)


class SharedMemoryWindow:
    """The query point and every message slot in one MPI-3 shared-memory window.

    Why no slot is read while it is written: the master reads a worker's slot
    for iteration t only after that worker's notification for t, and publishes
    point t+1 only after it has decoded t; a worker writes its slots only for
    the iteration it is computing, one at a time, after the notification of
    that point. A worker that reads a point newer than its notification (the
    master has decoded that iteration without it) sends a stale message,
    dropped by tag. Win.Sync before each notification and after each received
    one orders the copies.
    """

    def __init__(self, node, code, n_features, message_ptr):
        """Collective over `node` (every rank of the run), whose rank 0 is the master."""
        self.code = code
        self.ptr = (np.asarray(message_ptr, dtype=np.int64) if node.Get_rank() == 0
                    else np.empty(code.n_messages + 1, dtype=np.int64))
        broadcast(node, self.ptr)
        total = int(n_features) + int(self.ptr[-1])
        self.window = MPI.Win.Allocate_shared(8 * total if node.Get_rank() == 0 else 0, 8,
                                              comm=node)
        buffer, _ = self.window.Shared_query(0)
        self.window.Lock_all(MPI.MODE_NOCHECK)  # one passive epoch; Sync orders the copies
        values = np.frombuffer(buffer, dtype=np.float64, count=total)
        self.point = values[:n_features]
        self.messages = values[n_features:]

    def slot(self, message):
        """Where message `message` is stored (a view into the window)."""
        return self.messages[self.ptr[message]:self.ptr[message + 1]]

    def sync(self):
        """Order this rank's window writes or reads against the notifications."""
        self.window.Sync()


class MasterTransport:
    """The master's side of the protocol over point-to-point MPI messages.

    ``start(iteration, point)`` sends every live worker its share of the
    point; ``receive(deadline)`` returns the next arrival of this iteration
    (stale messages are counted and dropped), or None once `deadline` seconds
    have passed; ``shutdown`` stops the workers and collects their STATS.
    Messages land in the assembler's slots (one receive posted per worker,
    straight into the slot of the message it should send next), so the common
    case copies nothing; a message that lands in the wrong slot (the worker
    skipped one) is copied to its own.

    Counters: ``bytes_sent``, ``bytes_received``, ``stale`` of the current
    iteration; ``n_received``, ``n_stale`` over the run; ``last_heard`` (per
    worker, the newest iteration heard from); ``dead`` (worker -> iteration at
    which MPI reported it dead). ``on_deaths(dead)`` is called whenever MPI
    reports new dead workers (it may raise to end the run).
    """

    readable_on_arrival = True
    shared_memory = False
    clock = ""  # wall-clock seconds
    dtype = np.dtype(np.float64)  # of the points and messages on the wire

    def __init__(self, comm, code, supports, assembler, *, backend="cython", on_deaths=None):
        self.comm = comm
        self.wire = MPI.Datatype.fromcode(self.dtype.char)
        self.code = code
        self.supports = supports
        self.assembler = assembler
        self.backend = backend
        self.on_deaths = on_deaths or (lambda dead: None)
        self.period, self.stop_tag, self.done_tag, self.stats_tag = _tag_range(comm)
        n_workers = code.n_workers
        self.worker_messages = [list(code.messages_of(w)) for w in range(n_workers)]
        self.send_pools = [self._point_pool(worker) for worker in range(n_workers)]
        self.status = MPI.Status()
        self.expected_index = [0] * n_workers
        self.requests = [self._post(w, 0) for w in range(n_workers)]
        self.last_heard = np.full(n_workers, -1, dtype=np.int64)
        self.n_received = self.n_stale = 0
        self.bytes_sent = self.bytes_received = self.stale = 0
        self.dead = {}
        self.iteration = -1
        self.started = time.perf_counter()
        self.stopping = False

    # -- what the two transports do differently

    def _point_pool(self, worker):
        return _SendPool(len(self.supports[worker]), self.dtype)

    def _receive_buffer(self, worker, index):
        return self.assembler.message_view(self.worker_messages[worker][index])

    def _publish(self, point):
        """Hand the point to every live worker; bytes sent."""
        sent = 0
        for worker, support in enumerate(self.supports):
            if worker not in self.dead:
                buffer = self.send_pools[worker].acquire()
                self._gather(point, support, buffer)
                sent += buffer.nbytes
                self._send(worker, buffer, self.iteration % self.period)
        return sent

    def _gather(self, point, support, buffer):
        """buffer <- point[support], a worker's share of the point as it travels."""
        kernels.gather(point, support, buffer, backend=self.backend, check=False)

    def _landed(self, worker, index, count):
        """A current message of `worker` has arrived; bytes it brought."""
        expected = self.expected_index[worker]
        if index != expected:
            self._receive_buffer(worker, index)[:] = self._receive_buffer(worker, expected)
        return count

    # -- the protocol

    def start(self, iteration, point):
        """Begin `iteration`: send every live worker its share of `point`."""
        self.iteration = iteration
        self.started = time.perf_counter()
        self.bytes_received = self.stale = 0
        self.bytes_sent = self._publish(point)

    def receive(self, deadline=None):
        """(message, seconds since the iteration started) of the current iteration's next
        arrival, or None after `deadline` seconds."""
        give_up_at = np.inf if deadline is None else self.started + deadline
        base_tag = 2 * (self.iteration % self.period)
        while True:
            worker = self._next_completed(give_up_at)
            if worker is None:
                return None
            count = self.dtype.itemsize * self.status.Get_count(self.wire)
            index = self.status.Get_tag() - base_tag
            messages = self.worker_messages[worker]
            self.n_received += 1
            if not 0 <= index < len(messages):
                self.stale += 1
                self.n_stale += 1
                self.bytes_received += count
                self.last_heard[worker] = max(self.last_heard[worker], self.iteration - 1)
                self.requests[worker] = self._post(worker, 0)
                continue
            self.last_heard[worker] = self.iteration
            self.bytes_received += self._landed(worker, index, count)
            self.requests[worker] = self._post(worker, (index + 1) % len(messages))
            return messages[index], time.perf_counter() - self.started

    def seconds(self):
        """Seconds since the current iteration started."""
        return time.perf_counter() - self.started

    def complete(self, assembler):
        """Every message the decode uses is in its slot already."""

    def _send(self, worker, buffer, tag):
        try:
            request = self.comm.Isend([buffer, self.wire], dest=worker + 1, tag=tag)
        except MPI.Exception as error:
            self._on_failure(error)
            return
        self.send_pools[worker].sent(request, buffer)

    def _post(self, worker, index):
        self.expected_index[worker] = index
        try:
            return self.comm.Irecv([self._receive_buffer(worker, index), self.wire],
                                   source=worker + 1, tag=MPI.ANY_TAG)
        except MPI.Exception as error:
            self._on_failure(error)
            return MPI.REQUEST_NULL

    def _on_failure(self, error):
        """Re-raise `error` unless it reports a dead process; then note the dead. True when
        MPI named workers not known dead before."""
        if not _process_failure(error):
            raise error
        newly = [r - 1 for r in failed_ranks(self.comm) if r > 0 and r - 1 not in self.dead]
        for worker in newly:
            self.dead[worker] = self.iteration
            self.requests[worker] = MPI.REQUEST_NULL
            self.send_pools[worker].in_flight = []
        if newly and not self.stopping:
            self.on_deaths(self.dead)
        return bool(newly)

    def _next_completed(self, give_up_at=np.inf):
        """Worker whose receive completed next, or None once `give_up_at` has passed (or
        no receive is left to wait for)."""
        backoff = _Backoff(MASTER_MAX_SLEEP)
        while True:
            try:
                index, completed = MPI.Request.Testany(self.requests, self.status)
            except MPI.Exception as error:
                if not self._on_failure(error):
                    raise  # a failure MPI does not attribute to a dead worker
                continue
            if completed:  # index UNDEFINED: no receive left to wait for
                return None if index == MPI.UNDEFINED else index
            if time.perf_counter() > give_up_at:
                return None
            backoff.wait()

    def shutdown(self, timeout=10.0):
        """STOP every worker and drain what is in flight until each has said DONE.

        Returns (workers that did not answer within `timeout` seconds, per
        worker its STATS as a dict of STATS_FIELDS). A worker whose STATS have
        arrived gets a second STOP, and only then ends: under ULFM a rank that
        has ended counts as failed, so a worker that dies before its STATS
        arrive is dead (in ``dead``), one that ends after them is not.
        """
        self.stopping = True
        alive = [w for w in range(self.code.n_workers) if w not in self.dead]
        known_dead = set(self.dead)
        nothing = np.empty(0, self.dtype)
        stops = [self.comm.Isend([nothing, self.wire], dest=w + 1, tag=self.stop_tag)
                 for w in alive]
        stats = np.zeros((self.code.n_workers, len(STATS_FIELDS)))
        reports, pending = {}, set(alive)
        give_up_at = time.perf_counter() + timeout
        while pending - set(self.dead):
            worker = self._next_completed(give_up_at)
            if worker is None:
                break
            tag = self.status.Get_tag()
            if tag == self.done_tag:
                self.requests[worker] = self.comm.Irecv([stats[worker], MPI.DOUBLE],
                                                        source=worker + 1, tag=self.stats_tag)
            elif tag == self.stats_tag:
                pending.discard(worker)
                self.requests[worker] = MPI.REQUEST_NULL
                report = dict(zip(STATS_FIELDS, stats[worker].tolist(), strict=True))
                reports[worker] = {key: value if key.endswith("_seconds") else int(value)
                                   for key, value in report.items()}
                stops.append(self._stop_again(worker))
            else:
                self.n_received += 1
                self.n_stale += 1
                self.requests[worker] = self._post(worker, 0)
        for worker in set(reports) - known_dead:  # ended after its STATS: no death
            self.dead.pop(worker, None)
        pending -= set(self.dead)
        if not pending:
            in_flight = [r for pool in self.send_pools for r in pool.requests()]
            wait_all(stops + in_flight, dead_ok=True)
        for worker in pending:  # silent: may it end if it answers after all
            self._stop_again(worker)
        return sorted(pending), reports

    def _stop_again(self, worker):
        """The second STOP, which lets `worker` end (a request; null if it has died)."""
        try:
            return self.comm.Isend([np.empty(0, self.dtype), self.wire], dest=worker + 1,
                                   tag=self.stop_tag)
        except MPI.Exception as error:
            self._on_failure(error)
            return MPI.REQUEST_NULL


class SharedMemoryMasterTransport(MasterTransport):
    """The master's side when every rank shares a node: the optimiser keeps its query
    point in the window and the assembler stores its messages in the window's slots, so
    every MPI message is a zero-length notification."""

    shared_memory = True

    def __init__(self, comm, code, supports, assembler, window, optimizer, **options):
        self.window = window
        assembler.store_in(window.messages)
        optimizer.keep_query_point_in(window.point)
        super().__init__(comm, code, supports, assembler, **options)

    def _point_pool(self, worker):
        return _SendPool(0)

    def _receive_buffer(self, worker, index):
        return np.empty(0)

    def _publish(self, point):
        self.window.sync()  # the optimiser's step wrote the point into the window
        for worker in range(self.code.n_workers):
            if worker not in self.dead:
                self._send(worker, self.send_pools[worker].acquire(), self.iteration % self.period)
        return 8 * len(point)

    def _landed(self, worker, index, count):
        self.window.sync()  # the message is in its slot: count what the decode reads
        return len(self.assembler.message_view(self.worker_messages[worker][index])) * 8


class WorkerTransport:
    """A worker's side of the protocol over point-to-point MPI messages.

    ``next_point()`` sleeps until a point (or STOP) has arrived and returns
    the newest one, skipping older ones, as (iteration, values) or None for
    STOP; ``interrupted()`` tells whether a newer point (or STOP) has arrived
    meanwhile, and ``sleep(seconds)`` waits unless one does. ``buffers()``
    gives the buffers to compute the messages into, ``send`` sends one, and
    ``finish(stats)`` reports at STOP. Points arrive in two buffers used in
    turn, so the one being computed on is never overwritten.
    """

    dtype = np.dtype(np.float64)  # of the points and messages on the wire

    def __init__(self, comm, task):
        self.comm = comm
        self.wire = MPI.Datatype.fromcode(self.dtype.char)
        self.task = task
        self.period, self.stop_tag, self.done_tag, self.stats_tag = _tag_range(comm)
        self.points = self.inbox = self._inboxes()
        self.send_pools = [self._message_pool(length) for length in task.message_lengths]
        self.status = MPI.Status()
        self.inbox_index = 0  # which of the two point buffers the posted receive fills
        self.request = comm.Irecv([self.inbox[0], self.wire], source=0, tag=MPI.ANY_TAG)
        self.ready = False  # the posted receive has completed (its status is in self.status)
        # Seconds each recent wait for a point took (the first, through set-up, is left out).
        self.recent_waits = collections.deque(maxlen=RECENT_WAITS)
        self.waited = False

    def _poll(self):
        """Whether the posted receive has completed; Test only while it has not."""
        if not self.ready:
            try:
                self.ready = self.request.Test(self.status)
            except MPI.Exception as error:  # under ULFM: the master has died
                worker_lost_master(self.comm, error)
        return self.ready

    def _inboxes(self):
        return [np.empty(len(self.task.support), self.dtype) for _ in range(2)]

    def _message_pool(self, length):
        return _SendPool(length, self.dtype)

    def _take(self):
        """The completed receive's (tag, point); repost into the other buffer unless STOP."""
        tag = self.status.Get_tag()
        point = self.points[self.inbox_index]
        self.ready = False
        if tag != self.stop_tag:
            self.inbox_index ^= 1
            self.request = self.comm.Irecv([self.inbox[self.inbox_index], self.wire],
                                           source=0, tag=MPI.ANY_TAG)
        return tag, point

    def next_point(self):
        """The newest (iteration tag, point) that has arrived, or None for STOP."""
        self._await_point()
        tag, point = self._take()
        while tag != self.stop_tag and self._poll():
            tag, point = self._take()
        return None if tag == self.stop_tag else (tag, point)

    def interrupted(self):
        """Whether a newer point (or STOP) has arrived."""
        return self._poll()

    def _await_point(self):
        """Sleep until a point arrives. None comes much sooner than the shortest of the recent
        waits, so most of that is slept at once and the rest polled sparsely."""
        started = time.perf_counter()
        if self._poll():
            return
        shortest = min(self.recent_waits, default=0.0)
        time.sleep(QUIET_FRACTION * shortest)
        self.sleep(np.inf, longest=max(POLL_MAX_SLEEP, shortest / WAIT_POLLS))
        if self.waited:
            self.recent_waits.append(time.perf_counter() - started)
        self.waited = True

    def sleep(self, seconds, longest=None):
        """Sleep up to `seconds` (inf allowed); True as soon as a newer point arrives. Polls at
        most every `longest` seconds (default: POLL_MAX_SLEEP, or 1/WAIT_POLLS of a longer
        finite sleep: an injected delay need not notice a newer point to the millisecond)."""
        if longest is None:
            longest = max(POLL_MAX_SLEEP, seconds / WAIT_POLLS if np.isfinite(seconds) else 0.0)
        wake_at = time.perf_counter() + seconds
        backoff = _Backoff(longest)
        while True:
            if self._poll():
                return True
            remaining = wake_at - time.perf_counter()
            if remaining <= 0:
                return False
            backoff.wait(remaining)

    def load(self, point):
        """Make `point` (from next_point) the task's input; the point to compute at."""
        return point

    def buffers(self):
        """Buffers to compute this iteration's messages into, in send order."""
        return [pool.acquire() for pool in self.send_pools]

    def send(self, iteration, index, buffers):
        """Send message `index` (in send order) of `iteration`, computed into buffers[index]."""
        payload = self._payload(index, buffers)
        try:
            request = self.comm.Isend([payload, self.wire], dest=0,
                                      tag=2 * (iteration % self.period) + index)
        except MPI.Exception as error:
            worker_lost_master(self.comm, error)
        self.send_pools[index].sent(request, payload)

    def _payload(self, index, buffers):
        """What travels for message `index`: the buffer it was computed into."""
        return buffers[index]

    def release(self, indices, buffers):
        """Messages `indices` were not sent: their buffers go back to the pool."""
        for index in indices:
            self.send_pools[index].free.append(buffers[index])

    def finish(self, stats):
        """At STOP: send DONE, then `stats` (float64, STATS_FIELDS), wait for all sends, then
        for the master's second STOP (it has the STATS: ending sooner could look like a death)."""
        try:
            done = self.comm.Isend([np.empty(0, self.dtype), self.wire], dest=0,
                                   tag=self.done_tag)
            report = self.comm.Isend([stats, MPI.DOUBLE], dest=0, tag=self.stats_tag)
        except MPI.Exception as error:
            worker_lost_master(self.comm, error)
        _wait_for_master(self.comm, [done, report]
                         + [r for pool in self.send_pools for r in pool.requests()])
        _wait_for_master(self.comm, [self.comm.Irecv([np.empty(0, self.dtype), self.wire],
                                                     source=0, tag=self.stop_tag)])


class SharedMemoryWorkerTransport(WorkerTransport):
    """A worker's side when every rank shares a node: it gathers its point from the
    window, computes its messages straight into their slots, and every MPI message is a
    zero-length notification."""

    def __init__(self, comm, task, window, worker, *, backend="cython"):
        self.window = window
        self.backend = backend
        self.slots = [window.slot(m) for m in window.code.messages_of(worker)]
        if [len(slot) for slot in self.slots] != list(task.message_lengths):
            raise ValueError(f"worker {worker}: the master's message slots have lengths "
                             f"{[len(slot) for slot in self.slots]}, the task's messages "
                             f"{list(task.message_lengths)}: master and workers split the data "
                             f"differently")
        support = task.support
        fits_int32 = len(support) == 0 or support.max() <= np.iinfo(np.int32).max
        self.support = support.astype(np.int32 if fits_int32 else np.int64)  # half the traffic
        super().__init__(comm, task)
        self.points = [task.point] * 2

    def _inboxes(self):
        return [np.empty(0)] * 2

    def _message_pool(self, length):
        return _SendPool(0)

    def load(self, point):
        self.window.sync()
        kernels.gather(self.window.point, self.support, point, backend=self.backend, check=False)
        return point

    def buffers(self):
        return self.slots

    def _payload(self, index, buffers):
        self.window.sync()  # the message is in its slot already: notify with nothing
        return self.send_pools[index].acquire()

    def release(self, indices, buffers):
        """Nothing to give back: the slots are the window's."""


class Float32MasterTransport(MasterTransport):
    """The master's side with the wire in float32: half the bytes each way, INEXACT.

    Each worker's share of the point is rounded to float32; each message
    arrives in its worker's float32 inbox and is widened into its float64 slot
    on arrival, so the decode and the step run in float64 on rounded values.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, comm, code, supports, assembler, **options):
        lengths = np.diff(assembler.ptr)  # a worker's inbox fits its longest message
        self.inbox = [np.empty(int(lengths[code.messages_of(w)].max(initial=0)), self.dtype)
                      for w in range(code.n_workers)]
        self.gathered = np.empty(max((len(support) for support in supports), default=0))
        super().__init__(comm, code, supports, assembler, **options)

    def _gather(self, point, support, buffer):
        gathered = self.gathered[:len(support)]
        super()._gather(point, support, gathered)
        buffer[:] = gathered  # rounds to float32

    def _receive_buffer(self, worker, index):
        return self.inbox[worker]

    def _landed(self, worker, index, count):
        view = self.assembler.message_view(self.worker_messages[worker][index])
        view[:] = self.inbox[worker][:len(view)]
        return count


class Float32WorkerTransport(WorkerTransport):
    """A worker's side with the wire in float32: the point arrives as float32 and is
    widened into the task's float64 point, the messages are computed in float64 as
    always and rounded to float32 as they are sent."""

    dtype = np.dtype(np.float32)

    def __init__(self, comm, task):
        super().__init__(comm, task)
        self.computed = [np.empty(length) for length in task.message_lengths]

    def load(self, point):
        self.task.point[:] = point
        return self.task.point

    def buffers(self):
        return self.computed  # free again once sent: sending copies them

    def _payload(self, index, buffers):
        payload = self.send_pools[index].acquire()
        payload[:] = buffers[index]
        return payload

    def release(self, indices, buffers):
        """Nothing to give back: only sending takes a pooled buffer."""


# The point-to-point transports (master's, worker's) by the dtype points and messages
# travel as (Settings.message_dtype).
MESSAGE_TRANSPORTS = {"float64": (MasterTransport, WorkerTransport),
                      "float32": (Float32MasterTransport, Float32WorkerTransport)}


def measure_speeds(comm, seconds=SPEED_SECONDS):
    """Every worker's relative compute speed (list, worker order, known on every rank): each
    rank runs a fixed kernel for `seconds` of wall time, CPU caps and neighbours included
    (the master runs it too, so the workers do not get its core to themselves)."""
    rows = np.random.default_rng(0).standard_normal((64, 64))
    vector = np.ones(64)
    rounds, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(50):
            vector = np.tanh(rows @ vector)
        rounds += 1
    mine = np.array([rounds / (time.perf_counter() - started)])
    everyone = np.zeros(comm.Get_size())
    wait_all([comm.Iallgather([mine, MPI.DOUBLE], [everyone, MPI.DOUBLE])])
    return (everyone[1:] / everyone[1:].max()).tolist()


def pingpong(comm, sizes, think_seconds, *, repeats=30, poll_seconds=0.3):
    """Wall and CPU time of messages between ranks 0 and 1, waited for as the loops here wait.

    First each rank waits poll_seconds for a message (its CPU time over that
    wait: the polling load). Then for each think time and size: rank 0
    sleeps `think`, sends, waits for the reply; rank 1 waits, sleeps `think`,
    replies. Returns on rank 0 {"poll_load": [per rank], "rounds": [per
    (think, bytes): median one-way wall seconds and each rank's median CPU
    seconds per round]}, None on rank 1. For the simulator's calibration.
    """
    rank = comm.Get_rank()
    token = np.zeros(1)
    poll_load = []
    for waiting in (0, 1):
        cpu = time.process_time()
        if rank == waiting:
            wait_all([comm.Irecv([token, MPI.DOUBLE], source=1 - rank, tag=3)])
            poll_load.append((time.process_time() - cpu) / poll_seconds)
        else:
            time.sleep(poll_seconds)
            wait_all([comm.Isend([token, MPI.DOUBLE], dest=1 - rank, tag=3)])
    rounds = []
    for think in think_seconds:
        for size in sizes:
            walls, cpus = _pingpong_rounds(comm, np.zeros(size // 8), think, repeats)
            both = comm.gather(float(np.median(cpus[2:])), root=0)
            if rank == 0:
                rounds.append({"think": think, "bytes": size,
                               "one_way": float(np.median(walls[2:])), "cpu": both})
    loads = comm.gather(poll_load[0], root=0)
    return {"poll_load": loads, "rounds": rounds} if rank == 0 else None


def _pingpong_rounds(comm, buffer, think, repeats):
    """(one-way wall seconds on rank 0, CPU seconds) of repeats + 2 round trips."""
    walls, cpus = [], []
    for _ in range(repeats + 2):
        cpu = time.process_time()
        if comm.Get_rank() == 0:
            time.sleep(think)
            started = time.perf_counter()
            wait_all([comm.Isend([buffer, MPI.DOUBLE], dest=1, tag=1)])
            wait_all([comm.Irecv([buffer, MPI.DOUBLE], source=1, tag=2)])
            walls.append((time.perf_counter() - started - think) / 2)
        else:
            wait_all([comm.Irecv([buffer, MPI.DOUBLE], source=0, tag=1)])
            time.sleep(think)
            wait_all([comm.Isend([buffer, MPI.DOUBLE], dest=0, tag=2)])
        cpus.append(time.process_time() - cpu)
    return walls, cpus
