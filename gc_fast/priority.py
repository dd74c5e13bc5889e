"""CPU priorities for ranks that share cores (no MPI).

When a node runs more ranks than it has cores, fair sharing makes every
worker compute every iteration at a fraction of a core, although the master
decodes from the earliest decodable set and drops the rest. Ranking the
workers instead (the code's `priority_order`: the workers most likely to be
needed first) lets the needed ones finish at full speed while the others get
the idle time and back them up: a straggler that sleeps gives its core to the
next in line. The master keeps nice 0; the worker at position k of the order
gets nice 1 + 3k, capped at 19. Raising one's own nice needs no privilege.

Linux's autogroups share the CPU fairly between sessions whatever the nice of
their processes, and MPICH's launcher starts every rank in a session of its
own, so a rank that leads its session sets its session's nice as well
(/proc/self/autogroup). A rank that shares its session with other processes
only sets its own nice, which then orders it within that session.
"""
import errno
import os
import time

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
