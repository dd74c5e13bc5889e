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
    stretches alike); infinite: a core per rank.

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
    return work / costs.rate(busy, n_workers + 1 - busy)


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
    # A worker's CPU work per message: compute, handling and copying it, and
    # (first message) receiving its point.
    work = np.broadcast_to(compute, lead + (n_messages,)).reshape(rows, n_messages)
    work = work + costs.message_seconds + costs.copy_seconds(size)
    table = _send_order(message_worker, n_workers)
    first = table[:, 0][table[:, 0] >= 0]
    if point_bytes is not None:
        work[:, first] += (costs.message_seconds
                           + costs.copy_seconds(point_bytes[message_worker[first]]))
    if carry_seconds is not None:
        carry = np.asarray(carry_seconds, dtype=np.float64).reshape(rows, n_workers)
        work[:, first] += carry[:, message_worker[first]]
    valid = table >= 0
    milestones = np.cumsum(np.where(valid[None], work[:, np.where(valid, table, 0)], 0.0), axis=2)
    if costs.shared and n_workers <= SHARING_MAX_WORKERS:
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
    """Master time per received message: handling plus the bytes (a copy, or the ingress link)."""
    return costs.message_seconds + size / costs.bandwidth


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
