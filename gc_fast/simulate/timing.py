"""The timing model: when each worker computes and each message reaches the master."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHARING_MAX_WORKERS = 256  # above it, finite cores use the closed form's approximation


@dataclass
class Timeline:
    """Simulated iterations (one per row) of message_arrival_times' model.

    begin (rows, n): a worker starts computing (its point has arrived and its
    delay passed). end (rows, n): it has sent its last message. arrival
    (rows, M): the master has received a message. inf: never.
    """

    begin: np.ndarray
    end: np.ndarray
    arrival: np.ndarray


def message_arrival_times(compute_seconds, delays, message_bytes, costs, *, message_worker=None,
                          start_seconds=0.0, point_bytes=None):
    """Virtual arrival time at the master of every message (seconds since the iteration start).

    A worker spends compute + costs.message_seconds (+ copying the bytes on
    one machine) per message; a message reaches the master costs.latency
    after it is sent and is received one at a time, in the order messages
    reach the master (costs.message_seconds + bytes / costs.bandwidth each).
    Finite costs.cores: every rank, the master included, shares the cores
    with costs.background processes and runs at CostModel.rate (latency
    stretches alike); infinite: a core per rank. With costs.hosts (separate
    hosts, _separate_hosts): every rank's CPU work takes work / its host's
    share, and the points and messages cross the master's link and their
    worker's, shared max-min fairly (_host_links); the master then receives
    each message (message_seconds + costs.copy_seconds of its bytes, at its
    share).

    Parameters
    ----------
    compute_seconds : array_like, (..., M)
        Compute of each message on an unloaded core; a worker computes its
        messages one after another in message-index order.
    delays : array_like, (..., n)
        Injected delay of each worker before it computes (inf: never answers).
    message_bytes : array_like, (M,) or (..., M)
        Bytes of each message.
    costs : CostModel
        The costs of every part.
    message_worker : array_like of int, (M,), optional
        Worker sending each message (default: message i from worker i).
    start_seconds : float or array_like, (..., n)
        Added to every worker's start.
    point_bytes : array_like, (n,), optional
        Bytes of each worker's query point. Without it, worker w starts at
        start_seconds + delays[w]; with it, the master first gathers and
        sends the points in worker order (master_byte_seconds per byte,
        message_seconds, the copy or the egress link) and worker w starts
        latency + delays[w] after its point.

    Returns
    -------
    ndarray, (..., M)
        Arrival times, inf for messages that never arrive. Leading axes are
        broadcast across the arguments.
    """
    result = timeline(compute_seconds, delays, message_bytes, costs, message_worker=message_worker,
                      start_seconds=start_seconds, point_bytes=point_bytes)
    lead = np.broadcast_shapes(np.shape(compute_seconds)[:-1], np.shape(delays)[:-1],
                               np.shape(start_seconds)[:-1], np.shape(message_bytes)[:-1])
    return result.arrival.reshape(lead + result.arrival.shape[-1:])


def master_seconds(combined_bytes, n_features, costs, *, n_workers=0, busy_workers=0):
    """The master's decode-combine of `combined_bytes` plus the optimiser step on n_features,
    while `busy_workers` of the n_workers still compute (the others poll)."""
    work = (costs.master_byte_seconds * np.asarray(combined_bytes)
            + costs.step_byte_seconds * 8.0 * n_features)
    busy = 1 + np.asarray(busy_workers)
    return work / costs.rate(busy, n_workers + 1 - busy) / costs.cpu_shares(1)[0]


def timeline(compute_seconds, delays, message_bytes, costs, *, message_worker=None,
             start_seconds=0.0, point_bytes=None, carry_seconds=None):
    """The Timeline behind message_arrival_times (same arguments), leading axes flattened to rows.

    carry_seconds (rows, n), optional: compute each worker must first finish
    for the previous iteration (it abandons a stale iteration only between
    partitions), added to the work of its first message.
    """
    compute = np.asarray(compute_seconds, dtype=np.float64)
    delays = np.asarray(delays, dtype=np.float64)
    n_workers, n_messages = delays.shape[-1], compute.shape[-1]
    message_worker = _checked_message_worker(message_worker, n_messages, n_workers)
    if point_bytes is not None:
        point_bytes = np.asarray(point_bytes, dtype=np.float64)
        if point_bytes.shape != (n_workers,):
            raise ValueError(f"point_bytes must have one entry per worker ({n_workers})")
    offset = np.asarray(start_seconds, dtype=np.float64)
    lead = np.broadcast_shapes(compute.shape[:-1], delays.shape[:-1], offset.shape[:-1],
                               np.shape(message_bytes)[:-1])
    rows = int(np.prod(lead, dtype=np.int64))
    delays = np.broadcast_to(offset + delays, lead + (n_workers,)).reshape(rows, n_workers)
    size = np.broadcast_to(np.asarray(message_bytes, dtype=np.float64),
                           lead + (n_messages,)).reshape(rows, n_messages)
    # A worker's CPU work per message: compute, handling (and on one machine copying) it,
    # and (first message) receiving its point. Over a link its network stack runs while the
    # bytes flow instead (it limits the worker's link: _separate_hosts).
    copy = costs.copy_seconds if costs.shared else np.zeros_like
    work = np.broadcast_to(compute, lead + (n_messages,)).reshape(rows, n_messages)
    work = work + costs.message_seconds + copy(size)
    table = _send_order(message_worker, n_workers)
    first = table[:, 0][table[:, 0] >= 0]
    if point_bytes is not None:
        work[:, first] += costs.message_seconds + copy(point_bytes[message_worker[first]])
    if carry_seconds is not None:
        carry = np.asarray(carry_seconds, dtype=np.float64).reshape(rows, n_workers)
        work[:, first] += carry[:, message_worker[first]]
    valid = table >= 0
    milestones = np.cumsum(np.where(valid[None], work[:, np.where(valid, table, 0)], 0.0), axis=2)
    if costs.hosts:
        begin, finish, arrival = _separate_hosts(delays, milestones, size, table, message_worker,
                                                 costs, point_bytes)
    elif costs.shared and n_workers <= SHARING_MAX_WORKERS:
        machine = _SharedMachine(delays, milestones, valid.sum(axis=1), size, table, costs,
                                 point_bytes)
        begin, finish, arrival = machine.run()
    else:
        begin, finish, arrival = _closed_form(delays, milestones, size, table, costs, point_bytes)
    end = np.where(valid[None], finish, -np.inf).max(axis=2)
    return Timeline(begin, end, arrival)


def _checked_message_worker(message_worker, n_messages, n_workers):
    """message_worker as int64 worker indices (default: message i from worker i)."""
    message_worker = (np.arange(n_messages) if message_worker is None
                      else np.asarray(message_worker))
    if message_worker.shape != (n_messages,) or (n_messages and (
            message_worker.min() < 0 or message_worker.max() >= n_workers)):
        raise ValueError(f"message_worker must hold {n_messages} worker indices "
                         f"in [0, {n_workers})")
    return message_worker.astype(np.int64)


def _fifo(ready, service):
    """Completion times of jobs served one at a time in order of ready time (rows, m).

    A job starts at max(its ready time, the previous completion), so
    completion_k = C_k + max_{j<=k}(ready_j - C_{j-1}) with C the cumulative
    service in ready order. inf ready stays inf.
    """
    order = np.argsort(ready, axis=1, kind="stable")
    ready_sorted = np.take_along_axis(ready, order, axis=1)
    service_sorted = np.take_along_axis(np.broadcast_to(service, ready.shape), order, axis=1)
    cumulative = np.cumsum(service_sorted, axis=1)
    with np.errstate(invalid="ignore"):
        done = cumulative + np.maximum.accumulate(ready_sorted - (cumulative - service_sorted),
                                                  axis=1)
    done[np.isinf(ready_sorted)] = np.inf
    result = np.empty_like(done)
    np.put_along_axis(result, order, done, axis=1)
    return result


def _send_order(message_worker, n_workers):
    """(n_workers, max messages per worker) message indices in send order, -1 padded."""
    counts = np.bincount(message_worker, minlength=n_workers)
    table = np.full((n_workers, max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
    order = np.argsort(message_worker, kind="stable")
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    table[message_worker[order], rank] = order
    return table


def _point_work(point_bytes, costs):
    """Master CPU per point: gather, hand it over, copy it (one machine)."""
    return (costs.master_byte_seconds * point_bytes + costs.message_seconds
            + costs.copy_seconds(point_bytes))


def _receive_work(size, costs):
    """Master time per received message: handling plus the bytes: the copy (one machine), the
    network stack's CPU (a cluster) and, without hosts (whose links are modelled apart), the
    ingress link."""
    link = 0.0 if costs.shared or costs.hosts else size / costs.bandwidth
    return costs.message_seconds + costs.copy_seconds(size) + link


def _separate_hosts(delays, milestones, size, table, message_worker, costs, point_bytes):
    """Separate hosts (costs.hosts), no event loop over CPU: the master hands the points over
    in worker order (its CPU work at its share: gather, handling, network stack), they cross
    the links (_host_links), worker w starts latency + its delay after its point and works
    at its share; its messages cross the links in the order sent, reach the master latency
    later and are received one at a time (its CPU work at its share) once every point is
    handed over. A worker's network stack works while its bytes flow: its link moves at
    most share / net_byte_seconds bytes per second."""
    rows, n, _ = milestones.shape
    shares, links = costs.cpu_shares(n + 1), costs.link_rates(n + 1)
    if costs.net_byte_seconds > 0:
        links[1:] = np.minimum(links[1:], shares[1:] / costs.net_byte_seconds)
    begin, handed_all = delays, 0.0
    if point_bytes is not None:
        handed = np.cumsum(_point_work(point_bytes, costs)) / shares[0]
        handed_all = handed[-1]
        delivered = _host_links(np.broadcast_to(handed, (rows, n)), point_bytes,
                                np.arange(n), links[1:], links[0])
        begin = delays + delivered + costs.latency
    finish = begin[:, :, None] + milestones / shares[1:, None]
    valid = table >= 0
    sent = np.full(size.shape, np.inf)
    sent[:, table[valid]] = finish[:, valid]
    ready = _host_links(sent, size, message_worker, links[1:], links[0]) + costs.latency
    return begin, finish, _fifo(np.maximum(ready, handed_all),
                                _receive_work(size, costs) / shares[0])


def _host_links(start, size, connection, rates, shared_rate):
    """When each transfer has crossed its connection's link and the shared one (rows, k).

    Transfer j is handed to connection[j] (a worker's link, rates[c] bytes/s) at start[:, j]
    (inf: never) and moves size[..., j] bytes; a connection carries its transfers one after
    another in order of start (one TCP stream), and the busy connections share shared_rate
    (the master's link) max-min fairly (_fair_rates). A fluid event loop vectorised over
    rows: each step starts a transfer or finishes one.
    """
    start = np.asarray(start, dtype=np.float64)
    rows, k = start.shape
    if k == 0:
        return start.copy()
    left = np.broadcast_to(np.asarray(size, dtype=np.float64), (rows, k)).copy()
    connection = np.asarray(connection, dtype=np.int64)
    n = len(rates)
    # Each row's transfers grouped by connection, in order of start within one.
    by_start = np.argsort(start, axis=1, kind="stable")
    order = np.take_along_axis(by_start, np.argsort(connection[by_start], axis=1, kind="stable"),
                               axis=1)
    counts = np.bincount(connection, minlength=n)
    first, last = np.cumsum(counts) - counts, np.cumsum(counts)
    position = np.broadcast_to(first, (rows, n)).copy()  # each connection's current transfer
    row = np.arange(rows)[:, None]
    finish = np.full((rows, k), np.inf)
    now = np.zeros(rows)
    for _ in range(2 * k + 1):
        pending = position < last
        head = order[row, np.minimum(position, max(k - 1, 0))]
        head_start = np.where(pending, start[row, head], np.inf)
        active = pending & (head_start <= now[:, None])
        rate = _fair_rates(np.where(active, rates[None, :], 0.0), shared_rate)
        with np.errstate(divide="ignore", invalid="ignore"):
            to_finish = np.where(active, np.where(rate > 0, left[row, head] / rate, np.inf),
                                 np.inf)
        to_start = np.where(pending & ~active, head_start - now[:, None], np.inf)
        step = np.minimum(to_finish.min(axis=1, initial=np.inf),
                          to_start.min(axis=1, initial=np.inf))
        live = np.isfinite(step)
        if not live.any():
            break
        step = np.where(live, step, 0.0)
        now = now + step
        close = 1e-12 * np.maximum(now, 1e-3)
        done = active & live[:, None] & (to_finish <= step[:, None] + close[:, None])
        moving = active & live[:, None] & ~done
        r, c = np.nonzero(moving)
        left[r, head[r, c]] -= rate[r, c] * step[r]
        r, c = np.nonzero(done)
        finish[r, head[r, c]] = now[r]
        left[r, head[r, c]] = 0.0
        position[r, c] += 1
    return finish


def _fair_rates(rates, shared_rate):
    """Max-min fair rates (rows, n) of connections limited to `rates` each (0: idle) that
    share one link of shared_rate: each gets min(its rate, level), the level filling the
    shared link (inf if their rates fit in it)."""
    if not np.isfinite(shared_rate) or (rates.sum(axis=1) <= shared_rate).all():
        return rates
    ordered = np.sort(rates, axis=1)
    below = np.zeros_like(ordered)  # the sum of the rates below each (those are met first)
    below[:, 1:] = np.cumsum(ordered, axis=1)[:, :-1]
    with np.errstate(invalid="ignore"):
        level = (shared_rate - below) / (rates.shape[1] - np.arange(rates.shape[1]))
        fits = level <= ordered
    found = fits.any(axis=1)
    first = np.argmax(fits, axis=1)
    level = np.where(found, level[np.arange(len(rates)), first], np.inf)
    return np.minimum(rates, level[:, None])


def _closed_form(delays, milestones, size, table, costs, point_bytes):
    """No event loop. Infinite cores: a core per rank; points leave through the
    master's egress link, messages queue at its ingress (full duplex).
    Finite cores with n > SHARING_MAX_WORKERS (an approximation): every rank
    runs at the rate of all ranks that ever work being busy at once, and the
    master sends every point before it receives."""
    rows = milestones.shape[0]
    rate = costs.rate(np.isfinite(delays).sum(axis=1) + 1.0)
    latency = costs.latency / rate
    begin, sent = delays, np.zeros(rows)
    if point_bytes is not None:
        handed = np.cumsum(_point_work(point_bytes, costs))[None, :] / rate[:, None]
        if costs.shared:
            begin, sent = delays + handed + latency[:, None], handed[:, -1]
        else:
            begin = delays + _fifo(handed, point_bytes / costs.bandwidth) + costs.latency
    finish_steps = begin[:, :, None] + milestones / rate[:, None, None]
    valid = table >= 0
    ready = np.empty(size.shape)
    ready[:, table[valid]] = finish_steps[:, valid] + latency[:, None]
    arrival = _fifo(np.maximum(ready, sent[:, None]), _receive_work(size, costs) / rate[:, None])
    return begin, finish_steps, arrival


class _SharedMachine:
    """Processor sharing on one machine: an event loop vectorised over rows (iterations).

    The master is one sequential process: it handles the points in worker
    order (worker w starts latency / rate + its delay after its point), then
    receives the messages that reached it (latency after their worker sent
    them) one at a time, in order of reaching it. Events: rank starts, worker
    milestones (cumulative work at the end of each message, in send order),
    master jobs done, messages reaching an idle master. Between events every
    busy rank runs at costs.rate(busy ranks, waiting ranks).
    """

    def __init__(self, delays, milestones, n_steps, size, table, costs, point_bytes):
        rows, n, K = milestones.shape
        self.delays, self.milestones, self.n_steps = delays, milestones, n_steps
        self.size, self.costs = size, costs
        self.message_at = np.where(table >= 0, table, 0)
        self.finish = np.full((rows, n, K), np.inf)  # when each worker reached each milestone
        self.served = np.zeros((rows, n))  # work each worker has done
        self.step = np.zeros((rows, n), dtype=np.int64)  # its next milestone
        self.done = np.broadcast_to(n_steps[None] == 0, (rows, n)).copy()
        self.ready = np.full(size.shape, np.inf)  # a message reaches the master
        self.arrival = np.full(size.shape, np.inf)  # the master has received it
        self.receiving = np.full(rows, -1)  # the message the master is receiving (-1: none)
        self.now = np.zeros(rows)
        if point_bytes is None:
            self.begin, self.point_work = delays.copy(), None
            self.points_left, self.master_left = np.zeros(rows, dtype=np.int64), np.zeros(rows)
        else:
            self.point_work = _point_work(point_bytes, costs)
            self.begin, self.points_left = np.full((rows, n), np.inf), np.full(rows, n)
            self.master_left = np.full(rows, self.point_work[0])  # work left of its current job

    def run(self):
        """(begin (rows, n), finish (rows, n, K), arrival (rows, M)) once no event is left."""
        _, n, K = self.milestones.shape
        for _ in range(3 * n * K + 3 * n + 4):
            if not self._advance():
                break
        return self.begin, self.finish, self.arrival

    def _advance(self):
        """Move every row to its next event and handle it; False when no row has one."""
        rows, n, K = self.milestones.shape
        pending = np.where(np.isinf(self.arrival), self.ready, np.inf)
        self._start_receiving(pending)
        master_busy = (self.points_left > 0) | (self.receiving >= 0)
        started = self.begin <= self.now[:, None]
        busy = started & ~self.done
        n_busy = busy.sum(axis=1) + master_busy
        rate = self.costs.rate(n_busy, n + 1 - n_busy)
        target = self.milestones[np.arange(rows)[:, None], np.arange(n)[None],
                                 np.minimum(self.step, K - 1)]
        to_milestone = np.where(busy, (target - self.served) / rate[:, None], np.inf).min(axis=1)
        to_start = np.where(started, np.inf, self.begin).min(axis=1) - self.now
        to_master = np.where(master_busy, self.master_left / rate, np.inf)
        upcoming = np.where(pending > self.now[:, None], pending, np.inf).min(axis=1)
        to_reach = np.where(master_busy, np.inf, upcoming - self.now)
        dt = np.minimum(np.minimum(to_milestone, to_start), np.minimum(to_master, to_reach))
        live = np.isfinite(dt)
        if not live.any():
            return False
        dt[~live] = 0.0
        self.now += dt
        self.served += np.where(busy, rate[:, None] * dt[:, None], 0.0)
        self.master_left -= np.where(master_busy, rate * dt, 0.0)
        close = 1e-12 * np.maximum(self.now, 1e-3)
        self._reach_milestones(busy & live[:, None], target, rate, close)
        self._finish_master_jobs(master_busy & live, rate, close)
        return True

    def _start_receiving(self, pending):
        """An idle master that sent every point takes the first message waiting for it."""
        idle = (self.points_left == 0) & (self.receiving < 0)
        pick = idle & (pending.min(axis=1) <= self.now)
        self.receiving[pick] = np.argmin(pending[pick], axis=1)
        self.master_left[pick] = _receive_work(self.size[pick, self.receiving[pick]], self.costs)

    def _reach_milestones(self, busy, target, rate, close):
        """Workers that reached a milestone send its message (it reaches the master latency
        later) and move on to the next one."""
        r, w = np.nonzero(busy & (self.served >= target - close[:, None] * rate[:, None]))
        self.finish[r, w, self.step[r, w]] = self.now[r]
        self.ready[r, self.message_at[w, self.step[r, w]]] = (self.now[r]
                                                              + self.costs.latency / rate[r])
        self.served[r, w] = target[r, w]
        self.step[r, w] += 1
        self.done[r, w] = self.step[r, w] >= self.n_steps[w]

    def _finish_master_jobs(self, master_busy, rate, close):
        """A message received, or a point handed over: its worker starts latency + its delay
        later, and the master moves on to the next point."""
        n = self.milestones.shape[1]
        r = np.flatnonzero(master_busy & (self.master_left <= close * rate))
        received = r[self.receiving[r] >= 0]
        self.arrival[received, self.receiving[received]] = self.now[received]
        self.receiving[received] = -1
        handed = r[self.points_left[r] > 0]
        if handed.size:
            w = n - self.points_left[handed]
            self.begin[handed, w] = (self.now[handed] + self.costs.latency / rate[handed]
                                     + self.delays[handed, w])
            self.points_left[handed] -= 1
            self.master_left[handed] = self.point_work[np.minimum(w + 1, n - 1)]
