"""Which workers the master expects first, and the CPU priorities that follow (no MPI).

The priority order ranks the workers by how likely the master is to need
their messages: a prefix of it covers every partition as early as it can, and
a decodable disjoint cover goes first where one exists (CRC with s = 1 and
even n: workers 0, 2, 4, ...). Its shortest decodable prefix is the expected
set, whose own decode vector (``expected_decode``) the assembler uses, with a
running sum, whenever that set has fully arrived.

When a node runs more ranks than it has cores, fair sharing makes every
worker compute every iteration at a fraction of a core, although the master
decodes from the earliest decodable set and drops the rest. Ranking the
workers' CPU priority by the same order lets the needed ones finish at full
speed while the others get the idle time and back them up: a straggler that
sleeps gives its core to the next in line. The master keeps nice 0; the
worker at position k of the order gets nice 1 + 3k, capped at 19. Raising
one's own nice needs no privilege.

Linux's autogroups share the CPU fairly between sessions whatever the nice of
their processes, and MPICH's launcher starts every rank in a session of its
own, so a rank that leads its session sets its session's nice as well
(/proc/self/autogroup). A rank that shares its session with other processes
only sets its own nice, which then orders it within that session.
"""
import errno
import os
import time

import numpy as np

from .codes import ArrivalDecoder

MODES = ("auto", "on", "off")
FIRST_NICE, NICE_STEP, MAX_NICE = 1, 3, 19
AUTOGROUP = "/proc/self/autogroup"
AUTOGROUP_RETRY_SECONDS = 3.0  # unprivileged autogroup writes are rate-limited machine-wide


def usable_cores():
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def wanted(mode, ranks_on_node, cores):
    """Whether to rank the workers: always ("on"), never ("off"), or when oversubscribed."""
    if mode not in MODES:
        raise ValueError(f"unknown priority mode {mode!r}: choose one of {', '.join(MODES)}")
    return mode == "on" or (mode == "auto" and ranks_on_node > cores)


def worker_nice(position):
    """The nice of the worker at `position` (0 = first) of the code's priority order."""
    return min(MAX_NICE, FIRST_NICE + NICE_STEP * int(position))


def lower_priority(nice):
    """Raise this process's nice (and its session's, if it leads it) to at least `nice`.

    Returns the process's nice afterwards. Never raises: priorities are a
    speed hint, and a system that refuses one leaves the run correct.
    """
    current = os.nice(0)
    if nice > current:
        current = os.nice(nice - current)
    if os.getsid(0) == os.getpid():
        _set_autogroup_nice(nice)
    return current


def _set_autogroup_nice(nice):
    give_up_at = time.monotonic() + AUTOGROUP_RETRY_SECONDS
    while True:
        try:
            fd = os.open(AUTOGROUP, os.O_WRONLY)
        except OSError:
            return  # no autogroups here: the process nice is all there is
        try:
            os.write(fd, str(nice).encode())
            return
        except OSError as error:
            if error.errno != errno.EAGAIN or time.monotonic() > give_up_at:
                return
        finally:
            os.close(fd)
        time.sleep(0.02 + 0.08 * (os.getpid() % 7) / 7)  # another rank just wrote: spread out


def autogroup_nice():
    """This session's autogroup nice, or None where there are no autogroups."""
    try:
        with open(AUTOGROUP) as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def priority_order(code):
    """Workers of `code`, those whose messages are most likely needed first.

    The k-th worker holding a given set of partitions comes before every
    (k+1)-th one, so a prefix of the order covers all partitions as early as
    it can: one worker of each FRC group, then a second of each, ...; workers
    with distinct sets (CRC) keep their index order. A set of workers with
    disjoint partitions that covers them all and decodes on its own goes
    first when it is shorter than that order's first decodable prefix.
    """
    copies, keys = {}, []
    for worker in range(code.n_workers):
        key = code.partitions_of(worker).tobytes()
        keys.append((copies.get(key, 0), worker))
        copies[key] = copies.get(key, 0) + 1
    order = [worker for _, worker in sorted(keys)]
    cover = _smallest_decodable_cover(code)
    if cover and len(cover) < _decodable_prefix(code, order)[0]:
        order = cover + [worker for worker in order if worker not in cover]
    return np.array(order, dtype=np.int64)


def expected_decode(code):
    """Decode vector of the shortest decodable prefix of priority_order(code): the set of
    workers most likely to decode first (None if even all of them do not decode)."""
    return _decodable_prefix(code, priority_order(code))[1]


def _decodable_prefix(code, workers):
    """(length, decode vector) of the shortest prefix of `workers` whose messages decode,
    tried worker by worker; (len(workers) + 1, None) if there is none."""
    decoder = ArrivalDecoder(code)
    for length, worker in enumerate(workers, start=1):
        messages = code.messages_of(worker)
        for message in messages[:-1]:
            decoder.add(message, decode=False)
        vector = decoder.add(messages[-1])
        if vector is not None:
            return length, vector
    return len(workers) + 1, None


def _smallest_decodable_cover(code):
    """The smallest decodable set of workers with disjoint partitions covering all of
    them, found greedily from each starting worker in cyclic order; [] if none."""
    n = code.n_workers
    best = []
    for start in range(n):
        chosen, covered = [], np.zeros(code.n_partitions, dtype=bool)
        for worker in (start + np.arange(n)) % n:
            partitions = code.partitions_of(int(worker))
            if not covered[partitions].any():
                chosen.append(int(worker))
                covered[partitions] = True
        if not covered.all() or (best and len(chosen) >= len(best)):
            continue
        if code.is_decodable(np.concatenate([code.messages_of(w) for w in chosen])):
            best = sorted(chosen)
    return best
