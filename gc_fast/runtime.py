"""Master and worker loops over MPI: the only module that talks MPI.

Rank 0 is the master, rank w+1 is worker w. All messages are buffer-based
(no pickling on the hot path):

- master -> worker: the query point restricted to the worker's support,
  tag = iteration (mod the tag range); a zero-length message with STOP_TAG
  ends the run;
- worker -> master: message k of iteration t, tag = 2 * t + k (mod the tag
  range); a zero-length DONE_TAG message acknowledges STOP.

The master keeps exactly one receive posted per worker (any tag) into a
per-worker landing buffer, so a late message can only ever land there: it is
recognised as stale by its tag, counted and dropped, and never touches the
buffers that an iteration decodes. MPI's non-overtaking order between a pair
of ranks makes the STOP/DONE handshake drain every outstanding message.

Waiting ranks never spin in MPI's progress engine: they poll with Test and
sleep with a short exponential back-off, so ranks that compute keep the CPU.
"""
import time

import numpy as np
from mpi4py import MPI

POLL_MIN_SLEEP = 2e-5
POLL_MAX_SLEEP = 5e-4
MASTER_MAX_SLEEP = 1e-4  # the master is on the critical path: it looks more often


def _tag_range(comm):
    tag_ub = comm.Get_attr(MPI.TAG_UB)
    period = (tag_ub - 2) // 2
    return period, tag_ub, tag_ub - 1  # iteration period, STOP_TAG, DONE_TAG


class _Backoff:
    """Sleeps a little longer each time nothing happened, up to `longest` seconds."""

    def __init__(self, longest=POLL_MAX_SLEEP):
        self.pause = POLL_MIN_SLEEP
        self.longest = longest

    def wait(self):
        time.sleep(self.pause)
        self.pause = min(2.0 * self.pause, self.longest)


def _wait_all(requests):
    """Complete all requests without spinning."""
    backoff = _Backoff()
    while not MPI.Request.Testall(requests):
        backoff.wait()


def barrier(comm):
    """MPI barrier that sleeps instead of spinning while other ranks work."""
    _wait_all([comm.Ibarrier()])


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
            if request.Test():
                self.free.append(buffer)
            else:
                pending.append((request, buffer))
        self.in_flight = pending
        return self.free.pop() if self.free else np.empty(self.length, dtype=np.float64)

    def sent(self, request, buffer):
        self.in_flight.append((request, buffer))

    def requests(self):
        return [request for request, _ in self.in_flight]


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
    """

    def __init__(self, comm, worker, n_workers, task, delay_model, seed):
        self.comm = comm
        self.worker = worker
        self.n_workers = n_workers
        self.task = task
        self.delay_model = delay_model
        self.seed = seed
        self.period, self.stop_tag, self.done_tag = _tag_range(comm)
        n_support = len(task.support)
        self.points = [np.empty(n_support), np.empty(n_support)]
        self.send_pools = [_SendPool(length) for length in task.message_lengths]
        self.status = MPI.Status()
        self.slot = 0
        self.request = comm.Irecv([self.points[0], MPI.DOUBLE], source=0, tag=MPI.ANY_TAG)
        self.n_sent = 0
        self.n_abandoned = 0

    def _take(self):
        """The completed receive's (tag, point); repost into the other buffer unless STOP."""
        tag = self.status.Get_tag()
        point = self.points[self.slot]
        if tag != self.stop_tag:
            self.slot ^= 1
            self.request = self.comm.Irecv([self.points[self.slot], MPI.DOUBLE],
                                           source=0, tag=MPI.ANY_TAG)
        return tag, point

    def run(self):
        _sleep_unless(self.request, self.status, np.inf)
        tag, point = self._take()
        while tag != self.stop_tag:
            while self.request.Test(self.status):  # skip to the newest point
                tag, point = self._take()
                if tag == self.stop_tag:
                    break
            else:
                if not self._iteration(tag, point):
                    _sleep_unless(self.request, self.status, np.inf)
                else:
                    self.n_abandoned += 1
                tag, point = self._take()
        done = self.comm.Isend([np.empty(0), MPI.DOUBLE], dest=0, tag=self.done_tag)
        requests = [done] + [r for pool in self.send_pools for r in pool.requests()]
        _wait_all(requests)

    def _iteration(self, iteration, point):
        """Compute and send; True if abandoned because a newer point (or STOP) arrived."""
        delay = self.delay_model.delays(self.seed, iteration, self.n_workers)[self.worker]
        if delay > 0 and _sleep_unless(self.request, self.status, delay):
            return True
        factor = self.delay_model.compute_factor(self.worker)
        outs = [pool.acquire() for pool in self.send_pools]
        unsent = set(range(len(outs)))
        started = time.perf_counter()
        for kind in self.task.run(point, outs):
            if factor > 1.0:
                extra = (factor - 1.0) * (time.perf_counter() - started)
                if _sleep_unless(self.request, self.status, extra):
                    break
            if kind is not None:
                if kind == 0:
                    time.sleep(self.delay_model.pause(iteration, self.worker))
                request = self.comm.Isend([outs[kind], MPI.DOUBLE], dest=0,
                                          tag=2 * (iteration % self.period) + kind)
                self.send_pools[kind].sent(request, outs[kind])
                unsent.discard(kind)
                self.n_sent += 1
            if self.request.Test(self.status):
                break
            started = time.perf_counter()
        else:
            return False
        for kind in unsent:
            self.send_pools[kind].free.append(outs[kind])
        return True


class MasterLoop:
    """Rank 0: send the query point, decode on the earliest decodable set, step.

    Each worker has one receive posted at all times, straight into the slot of
    the message it is expected to send next, so the common case copies nothing.
    A message that lands in the wrong slot (the worker skipped one) is copied to
    its own slot; a stale one (older iteration) is counted and dropped.
    """

    def __init__(self, comm, code, supports, assembler, optimizer, *, backend="cython"):
        self.comm = comm
        self.code = code
        self.supports = supports
        self.assembler = assembler
        self.optimizer = optimizer
        self.backend = backend
        self.period, self.stop_tag, self.done_tag = _tag_range(comm)
        n_workers = code.n_workers
        self.worker_messages = [list(code.messages_of(w)) for w in range(n_workers)]
        self.send_pools = [_SendPool(len(s)) for s in supports]
        self.status = MPI.Status()
        self.expected_kind = [0] * n_workers
        self.requests = [self._post(w, 0) for w in range(n_workers)]
        self.gradient = np.zeros(assembler.n_features)
        self.n_received = 0
        self.n_stale = 0
        self.bytes_sent_per_iteration = 8 * sum(len(s) for s in supports)

    def _post(self, worker, kind):
        self.expected_kind[worker] = kind
        view = self.assembler.message_view(self.worker_messages[worker][kind])
        return self.comm.Irecv([view, MPI.DOUBLE], source=worker + 1, tag=MPI.ANY_TAG)

    def _next_arrival(self):
        backoff = _Backoff(MASTER_MAX_SLEEP)
        while True:
            index, completed = MPI.Request.Testany(self.requests, self.status)
            if completed and index != MPI.UNDEFINED:
                return index
            backoff.wait()

    def iteration(self, iteration):
        """Run one iteration; returns its record (timing, arrivals, decode)."""
        from . import kernels

        started = time.perf_counter()
        point = self.optimizer.query_point()
        for worker, support in enumerate(self.supports):
            pool = self.send_pools[worker]
            buffer = pool.acquire()
            kernels.gather(point, support, buffer, backend=self.backend)
            pool.sent(self.comm.Isend([buffer, MPI.DOUBLE], dest=worker + 1,
                                      tag=iteration % self.period), buffer)
        self.assembler.start()
        arrival = np.full(self.code.n_messages, np.nan)
        n_stale = bytes_received = 0
        base_tag = 2 * (iteration % self.period)
        while True:
            worker = self._next_arrival()
            tag = self.status.Get_tag()
            count = self.status.Get_count(MPI.DOUBLE)
            bytes_received += 8 * count
            self.n_received += 1
            kind = tag - base_tag
            messages = self.worker_messages[worker]
            if not 0 <= kind < len(messages):
                n_stale += 1
                self.requests[worker] = self._post(worker, 0)
                continue
            if kind != self.expected_kind[worker]:
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
            "bytes_sent": self.bytes_sent_per_iteration,
            "bytes_received": bytes_received,
        }

    def shutdown(self):
        """STOP every worker, drain what is still in flight until each says DONE."""
        stops = [self.comm.Isend([np.empty(0), MPI.DOUBLE], dest=w + 1, tag=self.stop_tag)
                 for w in range(self.code.n_workers)]
        remaining = set(range(self.code.n_workers))
        while remaining:
            worker = self._next_arrival()
            self.n_received += 1
            if self.status.Get_tag() == self.done_tag:
                self.n_received -= 1
                remaining.discard(worker)
                self.requests[worker] = MPI.REQUEST_NULL
            else:
                self.n_stale += 1
                self.requests[worker] = self._post(worker, 0)
        _wait_all(stops + [r for pool in self.send_pools for r in pool.requests()])
