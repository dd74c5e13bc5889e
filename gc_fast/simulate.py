"""Discrete-event model of synchronous gradient-coded iterations: predict, compare, plan.

    python -m gc_fast.simulate --workers 8 --stragglers 1,2 --scheme all --delay fixed:p=0.1,seconds=0.05
    python -m gc_fast.simulate --workers 1000 --stragglers 1,3,7 --plan --delay exp:shift=0,mean=0.002
    python -m gc_fast.simulate --calibrate              # measure this machine, save the cost file
    python -m gc_fast.simulate --validate RUN.json ...  # predicted vs measured trainer runs

One iteration (seconds after the master starts it; CostModel names the costs):

1. The master handles the workers' query points in worker order: gathers
   each (master_byte_seconds per byte), hands it to MPI (message_seconds)
   and sends it (bytes / bandwidth: the master's copy on one machine, its
   egress link on a cluster). Worker w has its point `latency` later.
2. Worker w sleeps its injected delay (``--delay``, drawn by the trainer's own
   ``gc_fast.stragglers.DelayModel``: delays_matrix, compute_factor; or
   replayed with ``--trace``), then computes its messages in send order:
   nnz_seconds per stored non-zero of the rows a message covers (or
   partition_seconds per 1/n of the data set) times compute_factor, plus
   message_seconds (and the copy, on one machine) per message it handles.
3. A sent message reaches the master `latency` later and queues at its
   ingress: the master receives one message at a time (message_seconds +
   bytes / bandwidth each), in the order they reach it, after it has sent
   every point.
4. The master decodes at the earliest decodable set: naive all n; ignore any
   n - s; frc the first message of every group (possibly fewer than n - s);
   crc any n - s, or with the exact rule (code objects, default for n <=
   EXACT_MAX_WORKERS) the first arrival prefix the code's decoder accepts,
   which can be earlier; partial-* all first messages plus the frc/crc rule
   on the second ones.
5. It decode-combines the messages with non-zero coefficients
   (master_byte_seconds per byte) and takes the optimiser step
   (step_byte_seconds per byte of the model): the iteration ends.

One machine (finite ``cores``, e.g. the trainer under mpiexec here): every
rank that works (the master included) shares the cores with `background`
other busy processes, and waiting ranks burn `poll_load` of a core, so a
busy rank runs at CostModel.rate = min(1, cores / (background + busy +
poll_load * waiting)) / slowdown of an unloaded core, where slowdown = 1 +
contention * max(0, (background + ranks) / cores - 1) is the extra CPU cost
of oversubscribed cores (cache and memory contention, wake-ups: once
measured in the trainer with 9 ranks on 2 cores, its kernel cost 4.6 ns per
non-zero against 2.65 calibrated alone) (processor sharing, an event loop
vectorised over iterations; latency stretches alike). A cluster (``cores``
inf): a core per rank and full-duplex links. Every (scheme, s) faces the same
delays under one seed, as in the trainer. Not modelled: work on stale
iterations and stale messages (stragglers are abandoned when the next point
arrives), the pause form's carry-over (its pause counts as a delay of that
iteration), and wake-up delays growing faster than 1 / rate when the cores
are oversubscribed. `background` must describe the load while the job runs
(``--background``; the cost file holds the load seen by --calibrate): on a
shared machine whose load moves, single predictions of the trainer here
missed by up to +-50%, their average over five calibrate-and-run rounds by
at most 17% (see --validate).

Public API (shared with local mode, which runs the real master with
in-process workers on this virtual clock):

* ``CostModel``: the costs (dataclass; ``to_dict``/``from_dict``,
  ``save(path)``/``load(path)`` as JSON; ``calibrate()`` measures them).
* ``message_arrival_times(compute_seconds, delays, message_bytes, costs, *,
  message_worker=None, start_seconds=0.0, point_bytes=None)``: virtual
  arrival time at the master of every message (steps 1-3, with the shared
  master ingress and core sharing), vectorised over leading (iteration)
  axes; ``timeline`` returns worker start and end times too.
* ``master_seconds(combined_bytes, n_features, costs, *, n_workers=0,
  busy_workers=0)``: the master's decode-combine + step time (step 5).
* ``decode_times(scheme, n_workers, n_stragglers, arrival, *, code=None)``:
  decode time and combined messages per iteration (step 4).
* ``Workload`` / ``build_workload``: per-message compute (nnz) and bytes of a
  (scheme, n, s) on a data set; ``simulate_iterations``: steps 1-5.

Calibration (``--calibrate``, saved to ``--costs PATH`` or
DEFAULT_COSTS_PATH, which later runs load): CPU time (not wall time, so
other processes' load does not count; caches evicted before each sample,
as ranks sharing cores find them) of the coded-gradient kernel per
non-zero (a naive n = 4 worker of the data set, default amazon-like) and
of the master's gather + combine and optimiser step per byte; a ping-pong
of two ranks under the venv's mpiexec (hidden ``--pingpong`` mode, waiting
like the runtime) gives poll_load (CPU time of a long wait),
message_seconds and bandwidth (CPU time per round over four sizes and two
think times) and latency (the one-way wall time left over, scaled to an
unloaded machine); cores from the affinity mask; background from the
runnable count in /proc/loadavg (before and after, minus the sampler).
Those parts, measured in isolation, under-predict the trainer on
oversubscribed cores, so calibrate then runs the trainer itself end to end
(no delay, CALIBRATION_ITERATIONS iterations, under the venv's mpiexec, on
the same data set, for each (scheme, n, s) of CALIBRATION_RUNS: light and
heavy workers, few and many ranks) and fits
`contention` (least squares on log time, one parameter for all runs) so the
model reproduces those runs' mean time per iteration (``fit_contention``);
the fitted runs are stored in the cost file (calibration_runs).

Message sizes: a message is the worker's support (the columns its rows
touch) in float64, as in the trainer. For n <= EXACT_MAX_WORKERS they come
from the real code's placement and the real data; for larger n from the
structural placement, with the support size measured on a seeded sample of
SUPPORT_SAMPLE workers and its mean used for every worker.

Trace mode (``--trace FILE``) replays per-worker delays instead of drawing
them. FILE is either ``{"delays": [[seconds per worker, ...], ...]}`` (one
row per iteration; null = never answers) or a trainer result
(``python -m gc_fast.train --out``): per iteration, a worker's arrival is the
earliest non-null ``arrival`` of its messages (``message_worker`` maps
messages to ranks 1..n) and its delay is how much later than the median
worker it arrived, floored at 0. A worker with no arrival (the master did
not wait for it) is censored: it gets the lower bound (last arrival -
median), so replaying a coded run's trace under naive is optimistic. Rows
are replayed in order, cyclically if more iterations are asked for.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .codes import SCHEMES, make_code
from .stragglers import __doc__ as DELAY_DOC
from .stragglers import parse_delay

EXACT_MAX_WORKERS = 32
SUPPORT_SAMPLE = 64
SHARING_MAX_WORKERS = 256
DEFAULT_COSTS_PATH = Path.home() / ".cache" / "gc_fast" / "costs.json"
PINGPONG_BYTES = (8, 262144, 1048576, 4194304)
PINGPONG_THINK_SECONDS = (0.002, 0.008)
POLL_SECONDS = 0.3
EVICT_BYTES = 8 * 2 ** 20
CALIBRATION_RUNS = (("naive", 4, 0), ("naive", 8, 0), ("crc", 8, 3))
CALIBRATION_ITERATIONS = 40


class UsageError(Exception):
    """Bad command line or input: reported as one line, exit status 2."""


# --------------------------------------------------------------------------- cost model

@dataclass(frozen=True)
class CostModel:
    """Measured costs of one iteration's parts (seconds of one unloaded core, bytes).

    nnz_seconds: worker compute per stored non-zero of the coded-gradient kernel.
    partition_seconds: if set, worker compute per 1/n of the data set instead.
    bandwidth: bytes per second of moving a message: a copy the ranks make
        themselves on one machine (finite cores), a link otherwise.
    latency: seconds every message waits besides that on an unloaded machine
        (noticing it: the runtime polls with a sleeping back-off); with
        finite cores it stretches like CPU work (a woken rank waits for a core).
    message_seconds: CPU seconds a rank spends per message it sends or
        receives (MPI and Python handling, besides the bytes).
    poll_load: fraction of a core a waiting rank burns polling.
    master_byte_seconds: master's gather (points out) and decode-combine (messages in), per byte.
    step_byte_seconds: master's optimiser step, per byte of the model.
    cores: cores all ranks share (inf: a core per rank, no sharing).
    background: other busy processes on those cores (a shared machine's load).
    contention: extra CPU cost of oversubscribed cores: every rank's work
        costs slowdown = 1 + contention * min(1, max(0, (background +
        ranks) / cores - 1)) times its isolated cost (fitted by calibrate to
        end-to-end trainer runs; 0: none). It saturates: once ranks
        outnumber cores, every time slice starts on caches another rank
        has used, however many ranks there are (measured here: the same
        factor fits 5 and 13 ranks on 2 cores, a linear one does not).
    calibration_runs: the trainer runs contention was fitted to, as
        [{"scheme", "n_workers", "n_stragglers", "measured_mean_s",
        "predicted_mean_s"}] (information only).
    source: where the numbers come from (shown in the table header).

    With finite cores every busy rank runs at rate(busy) = min(1, cores /
    (background + busy + poll_load * waiting ranks)) / slowdown of an unloaded
    core (slowdown: see contention; ranks = busy + waiting).
    """

    nnz_seconds: float = 3e-9
    partition_seconds: float | None = None
    bandwidth: float = 1e9
    latency: float = 1e-4
    message_seconds: float = 2e-5
    poll_load: float = 0.0
    master_byte_seconds: float = 3e-10
    step_byte_seconds: float = 1e-9
    cores: float = float("inf")
    background: float = 0.0
    contention: float = 0.0
    calibration_runs: tuple = ()
    source: str = "built-in defaults (not measured; run --calibrate)"

    def __post_init__(self):
        for name in ("nnz_seconds", "latency", "message_seconds", "poll_load", "master_byte_seconds",
                     "step_byte_seconds", "background", "contention"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"cost {name} must be a finite number >= 0, got {value}")
        if self.partition_seconds is not None and not (np.isfinite(self.partition_seconds)
                                                       and self.partition_seconds >= 0):
            raise ValueError(f"cost partition_seconds must be a finite number >= 0 or null, "
                             f"got {self.partition_seconds}")
        if not self.bandwidth > 0:
            raise ValueError(f"cost bandwidth must be > 0 bytes/s, got {self.bandwidth}")
        if not self.cores >= 1:
            raise ValueError(f"cost cores must be >= 1 (inf: a core per rank), got {self.cores}")

    @property
    def shared(self):
        """True when all ranks share finitely many cores (one machine)."""
        return bool(np.isfinite(self.cores))

    def to_dict(self):
        """JSON-ready dict (cores inf is stored as null)."""
        values = dataclasses.asdict(self)
        values["cores"] = self.cores if self.shared else None
        values["calibration_runs"] = [dict(run) for run in self.calibration_runs]
        return values

    @classmethod
    def from_dict(cls, values, *, source=None):
        """Inverse of to_dict; unknown keys raise ValueError naming the valid ones."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown cost field {unknown[0]!r}; valid fields: {', '.join(sorted(names))}")
        values = dict(values)
        if values.get("cores", 0) is None:
            values["cores"] = float("inf")
        if "calibration_runs" in values:
            values["calibration_runs"] = tuple(dict(run) for run in values["calibration_runs"] or ())
        if source is not None:
            values["source"] = source
        return cls(**values)

    def save(self, path):
        """Write the costs as JSON (creating the directory)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path):
        """Costs from a JSON file written by save; source becomes the path."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read cost file {path}: {error}; "
                             f"write one with python -m gc_fast.simulate --calibrate") from None
        if not isinstance(values, dict):
            raise ValueError(f"cost file {path} must hold a JSON object of cost fields")
        measured = values.pop("source", "")
        return cls.from_dict(values, source=f"{path} ({measured})" if measured else str(path))

    def rate(self, busy, waiting=0):
        """Speed of each busy rank (1 = an unloaded core) when `busy` ranks compute and
        `waiting` ranks poll; 1 without sharing."""
        if not self.shared:
            return np.ones(np.shape(busy))
        load = self.background + np.asarray(busy) + self.poll_load * np.asarray(waiting)
        return np.minimum(1.0, self.cores / np.maximum(load, 1.0)) / self.slowdown(
            np.asarray(busy) + np.asarray(waiting))

    def slowdown(self, ranks):
        """CPU cost factor of every rank's work when `ranks` ranks (and the background)
        share the cores: 1 + contention * min(1, oversubscription) (1 without sharing)."""
        if not self.shared:
            return np.ones(np.shape(ranks))
        over = (self.background + np.asarray(ranks, dtype=np.float64)) / self.cores - 1.0
        return 1.0 + self.contention * np.clip(over, 0.0, 1.0)

    def copy_seconds(self, n_bytes):
        """CPU seconds a rank spends moving n_bytes itself (0 over a network link)."""
        return np.asarray(n_bytes) / self.bandwidth if self.shared else np.zeros(np.shape(n_bytes))

    def compute_seconds(self, workload):
        """Compute seconds of every message on an unloaded core (before compute factors)."""
        if self.partition_seconds is not None:
            return self.partition_seconds * workload.n_workers * workload.message_fraction
        return self.nnz_seconds * workload.message_nnz


# --------------------------------------------------------------------------- timing model

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
        done = cumulative + np.maximum.accumulate(ready_sorted - (cumulative - service_sorted), axis=1)
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
    message_worker = np.arange(n_messages) if message_worker is None else np.asarray(message_worker)
    if message_worker.shape != (n_messages,) or (n_messages and (
            message_worker.min() < 0 or message_worker.max() >= n_workers)):
        raise ValueError(f"message_worker must hold {n_messages} worker indices in [0, {n_workers})")
    message_worker = message_worker.astype(np.int64)
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
        work[:, first] += costs.message_seconds + costs.copy_seconds(point_bytes[message_worker[first]])
    if carry_seconds is not None:
        work[:, first] += np.asarray(carry_seconds, dtype=np.float64).reshape(rows, n_workers)[
            :, message_worker[first]]
    valid = table >= 0
    milestones = np.cumsum(np.where(valid[None], work[:, np.where(valid, table, 0)], 0.0), axis=2)
    if costs.shared and n_workers <= SHARING_MAX_WORKERS:
        begin, finish, arrival = _event_loop(delays, milestones, valid.sum(axis=1), size, table,
                                             costs, point_bytes)
    else:
        begin, finish, arrival = _closed_form(delays, milestones, size, table, costs, point_bytes)
    end = np.where(valid[None], finish, -np.inf).max(axis=2)
    return Timeline(begin, end, arrival)


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
    rows, n, _ = milestones.shape
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


def _event_loop(delays, milestones, n_steps, size, table, costs, point_bytes):
    """Processor sharing on one machine, vectorised over rows.

    The master is one sequential process: it handles the points in worker
    order (worker w starts latency / rate + its delay after its point), then
    receives the messages that reached it (latency after their worker sent
    them) one at a time, in order of reaching it. Events: rank starts, worker
    milestones, master jobs done, messages reaching an idle master. Between
    events every busy rank runs at costs.rate(busy ranks, waiting ranks).
    """
    rows, n, K = milestones.shape
    n_ranks = n + 1
    row = np.arange(rows)
    message_at = np.where(table >= 0, table, 0)
    finish = np.full((rows, n, K), np.inf)
    served = np.zeros((rows, n))
    step = np.zeros((rows, n), dtype=np.int64)
    done = np.broadcast_to(n_steps[None] == 0, (rows, n)).copy()
    ready = np.full(size.shape, np.inf)
    arrival = np.full(size.shape, np.inf)
    receiving = np.full(rows, -1)
    now = np.zeros(rows)
    if point_bytes is None:
        begin, point_work, points_left = delays.copy(), None, np.zeros(rows, dtype=np.int64)
        master_left = np.zeros(rows)
    else:
        point_work = _point_work(point_bytes, costs)
        begin, points_left = np.full((rows, n), np.inf), np.full(rows, n)
        master_left = np.full(rows, point_work[0])
    for _ in range(3 * n * K + 3 * n + 4):
        pending = np.where(np.isinf(arrival), ready, np.inf)
        idle = (points_left == 0) & (receiving < 0)
        pick = idle & (pending.min(axis=1) <= now)
        receiving[pick] = np.argmin(pending[pick], axis=1)
        master_left[pick] = _receive_work(size[pick, receiving[pick]], costs)
        master_busy = (points_left > 0) | (receiving >= 0)
        started = begin <= now[:, None]
        busy = started & ~done
        n_busy = busy.sum(axis=1) + master_busy
        rate = costs.rate(n_busy, n_ranks - n_busy)
        target = milestones[row[:, None], np.arange(n)[None], np.minimum(step, K - 1)]
        to_milestone = np.where(busy, (target - served) / rate[:, None], np.inf).min(axis=1)
        to_start = np.where(started, np.inf, begin).min(axis=1) - now
        to_master = np.where(master_busy, master_left / rate, np.inf)
        upcoming = np.where(pending > now[:, None], pending, np.inf).min(axis=1)
        to_reach = np.where(master_busy, np.inf, upcoming - now)
        dt = np.minimum(np.minimum(to_milestone, to_start), np.minimum(to_master, to_reach))
        live = np.isfinite(dt)
        if not live.any():
            break
        dt[~live] = 0.0
        now += dt
        served += np.where(busy, rate[:, None] * dt[:, None], 0.0)
        master_left -= np.where(master_busy, rate * dt, 0.0)
        close = 1e-12 * np.maximum(now, 1e-3)
        r, w = np.nonzero(busy & (served >= target - close[:, None] * rate[:, None]) & live[:, None])
        finish[r, w, step[r, w]] = now[r]
        ready[r, message_at[w, step[r, w]]] = now[r] + costs.latency / rate[r]
        served[r, w] = target[r, w]
        step[r, w] += 1
        done[r, w] = step[r, w] >= n_steps[w]
        r = np.flatnonzero(master_busy & (master_left <= close * rate) & live)
        received = r[receiving[r] >= 0]
        arrival[received, receiving[received]] = now[received]
        receiving[received] = -1
        handed = r[points_left[r] > 0]
        if handed.size:
            w = n - points_left[handed]
            begin[handed, w] = now[handed] + costs.latency / rate[handed] + delays[handed, w]
            points_left[handed] -= 1
            master_left[handed] = point_work[np.minimum(w + 1, n - 1)]
    return begin, finish, arrival


def message_arrival_times(compute_seconds, delays, message_bytes, costs, *, message_worker=None,
                          start_seconds=0.0, point_bytes=None):
    """Virtual arrival time at the master of every message (seconds since the iteration start).

    compute_seconds: (..., M) compute of each message on an unloaded core; a
        worker computes its messages one after another in message-index order.
    delays: (..., n) injected delay of each worker before it computes (inf: never answers).
    message_bytes: (M,) or (..., M) bytes of each message.
    message_worker: (M,) worker sending each message (default: message i from worker i).
    start_seconds: scalar or (..., n) added to every worker's start.
    point_bytes: (n,) bytes of each worker's query point. Without it, worker w
        starts at start_seconds + delays[w]; with it, the master first
        gathers and sends the points in worker order (step 1 of the module
        docstring) and worker w starts latency + delays[w] after its point.
    A worker spends compute + costs.message_seconds (+ copying the bytes on
    one machine) per message; a message reaches the master costs.latency
    after it is sent and is received one at a time, in the order messages
    reach the master (costs.message_seconds + bytes / costs.bandwidth each).
    Finite costs.cores: every rank, the master included, shares the cores
    with costs.background processes and runs at CostModel.rate (latency
    stretches alike); infinite: a core per rank. Returns (..., M), inf for
    messages that never arrive.
    """
    result = timeline(compute_seconds, delays, message_bytes, costs, message_worker=message_worker,
                      start_seconds=start_seconds, point_bytes=point_bytes)
    lead = np.broadcast_shapes(np.shape(compute_seconds)[:-1], np.shape(delays)[:-1],
                               np.shape(start_seconds)[:-1], np.shape(message_bytes)[:-1])
    return result.arrival.reshape(lead + result.arrival.shape[-1:])


def master_seconds(combined_bytes, n_features, costs, *, n_workers=0, busy_workers=0):
    """The master's decode-combine of `combined_bytes` plus the optimiser step on n_features,
    while `busy_workers` of the n_workers still compute (the others poll)."""
    work = costs.master_byte_seconds * np.asarray(combined_bytes) + costs.step_byte_seconds * 8.0 * n_features
    busy = 1 + np.asarray(busy_workers)
    return work / costs.rate(busy, n_workers + 1 - busy)


# --------------------------------------------------------------------------- decoding

def _base_rule(scheme, n, s, arrival):
    """(decode time, combined mask) of naive/ignore/frc/crc on worker-indexed arrivals (rows, n)."""
    rows = arrival.shape[0]
    if scheme == "frc":
        groups = arrival.reshape(rows, n // (s + 1), s + 1)
        first = np.argmin(groups, axis=2)
        decode = np.take_along_axis(groups, first[..., None], axis=2)[..., 0].max(axis=1)
        combined = np.zeros_like(groups, dtype=bool)
        np.put_along_axis(combined, first[..., None], True, axis=2)
        return decode, combined.reshape(rows, n)
    needed = n if scheme == "naive" else n - s
    decode = np.partition(arrival, needed - 1, axis=1)[:, needed - 1]
    return decode, arrival <= decode[:, None]


def _lowest_prefix(scheme, n, s):
    """A length below which no arrival prefix can decode (cover bounds)."""
    if scheme.startswith("partial-"):
        return n + _lowest_prefix(scheme[len("partial-"):], n, s)
    return {"naive": n, "ignore": n - s}.get(scheme, -(-n // (s + 1)))


def decode_times(scheme, n_workers, n_stragglers, arrival, *, code=None):
    """When the master can decode each iteration, and which messages it combines.

    arrival: (rows, n_messages) arrival times (inf: never). Without `code`,
    the structural rules (module docstring); with it, the code's own decoder
    on every prefix of the arrival order (exact; crc may decode before n - s).
    Returns (decode time (rows,), combined (rows, n_messages) bool: the
    messages with a non-zero decode coefficient); inf when never decodable.
    """
    arrival = np.asarray(arrival, dtype=np.float64)
    n, s = n_workers, n_stragglers
    if code is not None:
        return _exact_decode(code, arrival, _lowest_prefix(scheme, n, s))
    if scheme.startswith("partial-"):
        base = scheme[len("partial-"):]
        coded_time, coded = _base_rule(base, n, s, arrival[:, 1::2])
        decode = np.maximum(arrival[:, 0::2].max(axis=1), coded_time)
        combined = np.ones_like(arrival, dtype=bool)
        combined[:, 1::2] = coded
    else:
        decode, combined = _base_rule(scheme, n, s, arrival)
    combined &= np.isfinite(decode)[:, None]
    return decode, combined


def _exact_decode(code, arrival, lowest):
    rows = arrival.shape[0]
    decode = np.full(rows, np.inf)
    combined = np.zeros(arrival.shape, dtype=bool)
    order = np.argsort(arrival, axis=1, kind="stable")
    for r in range(rows):
        n_finite = int(np.isfinite(arrival[r]).sum())
        for length in range(max(lowest, 1), n_finite + 1):
            vector = code.decode(order[r, :length])
            if vector is not None:
                decode[r] = arrival[r, order[r, length - 1]]
                combined[r] = vector != 0
                break
    return decode, combined


# --------------------------------------------------------------------------- workload

@dataclass
class Workload:
    """What one iteration of (scheme, n, s) computes and moves, per message and per worker.

    message_worker (M,): sender of each message (send order = index order).
    message_nnz (M,): stored non-zeros of the rows the message covers.
    message_fraction (M,): fraction of the data set those rows are.
    message_bytes (M,), point_bytes (n,): float64 supports, 8 bytes per column.
    message_partitions (M,), optional: partitions each message's compute
        covers (a worker can abandon a stale iteration only between them);
        None: no carry-over between iterations is modelled.
    """

    scheme: str
    n_workers: int
    n_stragglers: int
    partitions_per_worker: int | None
    message_worker: np.ndarray
    message_nnz: np.ndarray
    message_fraction: np.ndarray
    message_bytes: np.ndarray
    point_bytes: np.ndarray
    n_features: int
    supports: str
    message_partitions: np.ndarray | None = None


def _message_partitions(scheme, n, s, P, worker):
    """Partitions of each message of `worker` under the structural placement (codes.py layout)."""
    if scheme in ("naive", "ignore"):
        return [np.array([worker])]
    base = scheme[len("partial-"):] if scheme.startswith("partial-") else scheme
    if base == "frc":
        shared = (worker // (s + 1)) * (s + 1) + np.arange(s + 1)
    else:
        shared = (worker + np.arange(s + 1)) % n
    if base == scheme:
        return [shared]
    private = n + worker * (P - s - 1) + np.arange(P - s - 1)
    return [private, shared]


def build_workload(scheme, n_workers, n_stragglers, X, *, partitions_per_worker=None, seed=0,
                   code=None):
    """Per-message nnz and bytes of (scheme, n, s) on the CSR data X (module docstring).

    With `code` (small n) the placement is code.B's; otherwise the structural
    one, and supports are measured on SUPPORT_SAMPLE sampled workers.
    """
    n, s = n_workers, n_stragglers
    P = partitions_per_worker
    if scheme.startswith("partial-") and P is None:
        P = s + 2
    n_partitions = n * (P - s) if scheme.startswith("partial-") else n
    n_rows = X.shape[0]
    if n_partitions > n_rows:
        raise ValueError(f"{scheme} with n = {n} needs {n_partitions} partitions but the data set has "
                         f"only {n_rows} rows: use fewer workers or more rows")
    bounds = np.arange(n_partitions + 1, dtype=np.int64) * n_rows // n_partitions
    partition_nnz = np.diff(X.indptr[bounds]).astype(np.float64)
    partition_fraction = np.diff(bounds) / n_rows

    if code is not None:
        message_worker = np.asarray(code.message_worker)
        message_parts = [np.flatnonzero(row) for row in code.B]
        worker_parts = [code.partitions_of(w) for w in range(n)]
    else:
        per_worker = [_message_partitions(scheme, n, s, P, w) for w in range(n)]
        message_worker = np.repeat(np.arange(n), [len(m) for m in per_worker])
        message_parts = [parts for messages in per_worker for parts in messages]
        worker_parts = None
    message_nnz = np.array([partition_nnz[p].sum() for p in message_parts])
    message_fraction = np.array([partition_fraction[p].sum() for p in message_parts])

    touched = np.zeros(X.shape[1], dtype=bool)

    def support_size(parts):
        columns = np.concatenate([X.indices[X.indptr[bounds[j]]:X.indptr[bounds[j + 1]]] for j in parts])
        touched[columns] = True
        size = int(np.count_nonzero(touched))
        touched[columns] = False
        return size

    if worker_parts is not None:
        support = np.array([support_size(parts) for parts in worker_parts], dtype=np.float64)
        supports = "exact supports"
    else:
        sample = np.random.default_rng(seed).choice(n, min(n, SUPPORT_SAMPLE), replace=False)
        sizes = [support_size(np.concatenate(_message_partitions(scheme, n, s, P, int(w))))
                 for w in sample]
        support = np.full(n, float(np.mean(sizes)))
        supports = f"supports sampled on {len(sample)} workers"
    return Workload(scheme, n, s, P if scheme.startswith("partial-") else None,
                    message_worker, message_nnz, message_fraction,
                    8.0 * support[message_worker], 8.0 * support, X.shape[1], supports,
                    np.array([len(parts) for parts in message_parts], dtype=np.int64))


# --------------------------------------------------------------------------- delays and simulation

def straggler_delays(delay_model, seed, n_iterations, n_workers):
    """(n_iterations, n_workers) delays from the trainer's DelayModel (pause counted as delay)."""
    delays = delay_model.delays_matrix(seed, np.arange(n_iterations), n_workers)
    if delay_model.kind == "pause" and delay_model.at < n_iterations:
        ranks = np.asarray(delay_model.workers, dtype=np.int64)
        delays[delay_model.at, ranks - 1] += delay_model.seconds
    return delays


def compute_factors(delay_model, n_workers):
    """(n_workers,) compute slow-down of every worker (DelayModel.compute_factor)."""
    if delay_model.kind != "slow":
        return np.ones(n_workers)
    return np.array([delay_model.compute_factor(w) for w in range(n_workers)])


def trace_delays(trace, n_workers=None):
    """(iterations, n) per-worker delays from a trace (dict or path; module docstring).

    Returns (delays, n_censored): the number of worker-iterations whose delay
    is only a lower bound.
    """
    if not isinstance(trace, dict):
        try:
            trace = json.loads(Path(trace).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read trace {trace}: {error}") from None
    try:
        if "delays" in trace:
            delays = np.array([[np.inf if d is None else d for d in row] for row in trace["delays"]],
                              dtype=np.float64)
            n_censored = 0
        else:
            delays, n_censored = _delays_from_arrivals(trace)
    except (KeyError, TypeError, ValueError):
        raise ValueError("a trace needs 'delays' (equal-length rows of per-worker seconds or null) or "
                         "'iterations' with equal-length 'arrival' lists and 'message_worker' ranks "
                         "(a python -m gc_fast.train --out file)") from None
    if delays.ndim != 2 or delays.shape[0] == 0 or delays.shape[1] == 0:
        raise ValueError("a trace needs at least one iteration of per-worker delays")
    if np.isnan(delays).any() or (delays < 0).any():
        raise ValueError("trace delays must be numbers >= 0 or null")
    if n_workers is not None and delays.shape[1] != n_workers:
        raise ValueError(f"the trace has {delays.shape[1]} workers but --workers is {n_workers}")
    return delays, n_censored


def _delays_from_arrivals(trace):
    arrivals = np.array([[np.nan if a is None else a for a in it["arrival"]]
                         for it in trace["iterations"]], dtype=np.float64)
    n_messages = arrivals.shape[1] if arrivals.ndim == 2 else 0
    ranks = np.asarray(trace.get("message_worker", np.arange(1, n_messages + 1)), dtype=np.int64)
    if arrivals.ndim != 2 or ranks.shape != (n_messages,) or n_messages == 0 or ranks.min() < 1:
        raise ValueError("bad arrival lists")
    n = int(ranks.max())
    worker_arrival = np.full((arrivals.shape[0], n), np.inf)
    for m, rank in enumerate(ranks):
        worker_arrival[:, rank - 1] = np.fmin(worker_arrival[:, rank - 1],
                                              np.where(np.isnan(arrivals[:, m]), np.inf, arrivals[:, m]))
    known = np.isfinite(worker_arrival)
    if not known.any(axis=1).all():
        raise ValueError("an iteration without arrivals")
    observed = np.where(known, worker_arrival, np.nan)
    median = np.nanmedian(observed, axis=1)
    last = np.nanmax(observed, axis=1)
    delays = np.where(known, worker_arrival, last[:, None]) - median[:, None]
    return np.maximum(delays, 0.0), int((~known).sum())


def simulate_iterations(workload, costs, delays, *, compute_factor=None, code=None):
    """Iteration times (rows,) and message arrivals (rows, M) of a workload under per-worker delays.

    Rows are consecutive iterations. With workload.message_partitions, a
    worker still computing when iteration t decodes first finishes its
    current partition (the runtime abandons a stale iteration only between
    partitions): that leftover is carried into iteration t + 1 (one
    fixed-point pass over the rows).
    """
    delays = np.atleast_2d(np.asarray(delays, dtype=np.float64))
    compute = costs.compute_seconds(workload)
    if compute_factor is not None:
        compute = compute * np.asarray(compute_factor)[workload.message_worker]
    carry = None
    passes = 2 if workload.message_partitions is not None and len(delays) > 1 else 1
    for remaining in reversed(range(passes)):
        events = timeline(compute, delays, workload.message_bytes, costs,
                          message_worker=workload.message_worker, point_bytes=workload.point_bytes,
                          carry_seconds=carry)
        decode, combined = decode_times(workload.scheme, workload.n_workers, workload.n_stragglers,
                                        events.arrival, code=code)
        if remaining:
            carry = _carried_over(events, decode, compute, workload)
    combined_bytes = combined.astype(np.float64) @ workload.message_bytes
    busy = ((events.begin <= decode[:, None]) & (events.end > decode[:, None])).sum(axis=1)
    post = master_seconds(combined_bytes, workload.n_features, costs, n_workers=workload.n_workers,
                          busy_workers=busy)
    return decode + post, events.arrival


def _carried_over(events, decode, compute, workload):
    """(rows, n) compute seconds each worker owes iteration t + 1: the rest of the partition
    it was in when iteration t decoded (progress interpolated over its busy span)."""
    n = workload.n_workers
    work = np.bincount(workload.message_worker, weights=compute, minlength=n)
    chunks = np.bincount(workload.message_worker, weights=workload.message_partitions, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        progress = (decode[:, None] - events.begin) / (events.end - events.begin) * chunks
        computing = (events.begin < decode[:, None]) & (events.end > decode[:, None]) & np.isfinite(progress)
        owed = np.where(computing, (np.ceil(progress) - progress) * work / np.maximum(chunks, 1), 0.0)
    carry = np.zeros_like(owed)
    carry[1:] = owed[:-1]
    return carry


def summarize(times):
    """mean, std, p50, p95 of iteration times (inf-aware: an inf anywhere makes the mean inf)."""
    times = np.sort(np.asarray(times, dtype=np.float64))
    finite = np.isfinite(times).all()
    return {"mean_s": float(times.mean()) if finite else float("inf"),
            "std_s": float(times.std()) if finite else float("nan"),
            "p50_s": _percentile(times, 50), "p95_s": _percentile(times, 95)}


def _percentile(sorted_times, q):
    position = q / 100 * (len(sorted_times) - 1)
    low, high = int(np.floor(position)), int(np.ceil(position))
    fraction = position - low
    if fraction == 0 or not np.isfinite(sorted_times[high]):
        return float(sorted_times[low] if fraction == 0 else np.inf)
    return float(sorted_times[low] + fraction * (sorted_times[high] - sorted_times[low]))


# --------------------------------------------------------------------------- data sets

def load_train_data(dataset="amazon-like", *, rows=None, features=None, nnz_per_row=None, seed=0):
    """The data set the trainer would build for these options (nnz_per_row: amazon-like only)."""
    from .data import amazon_like
    from .train import UsageError as TrainUsageError
    from .train import load_data

    if nnz_per_row is not None:
        if dataset != "amazon-like":
            raise ValueError("--nnz-per-row applies to --dataset amazon-like only")
        sizes = {"nnz_per_row": nnz_per_row, "seed": seed}
        if rows is not None:
            sizes.update(n_train=rows, n_test=max(1, rows // 4))
        if features is not None:
            sizes["n_features"] = features
        return amazon_like(**sizes)
    options = argparse.Namespace(dataset=dataset, rows=rows, features=features, seed=seed,
                                 test_fraction=0.2)
    try:
        return load_data(options)
    except TrainUsageError as error:
        raise ValueError(str(error)) from None


def data_label(dataset, X):
    nnz_per_row = X.nnz / max(X.shape[0], 1)
    return f"{dataset}: {X.shape[0]} rows x {X.shape[1]} features, {nnz_per_row:.1f} nnz/row"


# --------------------------------------------------------------------------- comparing schemes

def configurations(schemes, stragglers, n_workers, *, explicit):
    """(scheme, s) pairs to simulate and the notes on skipped ones.

    naive runs once with s = 0. frc needs (s + 1) | n: an explicitly named frc
    with a bad s is an error, under "all" it is skipped with a note.
    """
    pairs, notes = [], []
    for scheme in schemes:
        for s in ([0] if scheme == "naive" else stragglers):
            if scheme in ("frc", "partial-frc") and n_workers % (s + 1):
                valid = [v for v in range(n_workers) if n_workers % (v + 1) == 0]
                message = (f"{scheme} needs (s + 1) to divide n = {n_workers}: "
                           f"s must be one of {valid}, got {s}")
                if explicit:
                    raise ValueError(message)
                notes.append(f"skipped {scheme} s={s}: (s + 1) does not divide n = {n_workers}")
                continue
            pairs.append((scheme, s))
    return pairs, notes


def make_exact_code(scheme, n, s, *, partitions_per_worker=None, construction=None, seed=0):
    """The code object the trainer would build: its placement and its exact decoder."""
    options = {}
    if scheme.startswith("partial-"):
        options["partitions_per_worker"] = partitions_per_worker or s + 2
    if construction is not None and scheme in ("crc", "partial-crc"):
        options["construction"] = construction
    try:
        return make_code(scheme, n, s, seed=seed, **options)
    except RuntimeError as error:
        raise ValueError(f"{error} (or pass --decode-rule structural)") from None


def compare(pairs, n_workers, X, costs, delays, factors, *, partitions_per_worker=None,
            construction=None, seed=0, decode_rule="auto"):
    """Simulate every (scheme, s) under the same delays; a list of result dicts."""
    results = []
    for scheme, s in pairs:
        small = n_workers <= EXACT_MAX_WORKERS
        code = (make_exact_code(scheme, n_workers, s, partitions_per_worker=partitions_per_worker,
                                construction=construction, seed=seed)
                if decode_rule == "exact" or (decode_rule == "auto" and small) else None)
        workload = build_workload(scheme, n_workers, s, X, partitions_per_worker=partitions_per_worker,
                                  seed=seed, code=code)
        exact_rule = code is not None and scheme in ("crc", "partial-crc")
        times, _ = simulate_iterations(workload, costs, delays, compute_factor=factors,
                                       code=code if exact_rule else None)
        results.append({"scheme": scheme, "n_stragglers": s, "exact": scheme != "ignore",
                        "decode_rule": "exact" if exact_rule else "structural",
                        "supports": workload.supports, **summarize(times), "times": times})
    return results


def plan(results):
    """Best exact (scheme, s) by mean time, the runner-up and the margin; ignore listed apart."""
    exact = sorted((r for r in results if r["exact"]), key=lambda r: r["mean_s"])
    inexact = sorted((r for r in results if not r["exact"]), key=lambda r: r["mean_s"])
    if not exact:
        raise ValueError("--plan needs at least one exact scheme (naive, frc, crc, partial-*)")
    best = exact[0]
    chosen = {"best": _pick(best), "runner_up": None, "margin_s": None, "margin_percent": None,
              "best_inexact": _pick(inexact[0]) if inexact else None}
    if len(exact) > 1:
        runner = exact[1]
        chosen["runner_up"] = _pick(runner)
        margin = runner["mean_s"] - best["mean_s"]
        chosen["margin_s"] = margin
        chosen["margin_percent"] = (100 * margin / best["mean_s"]
                                    if np.isfinite(best["mean_s"]) and best["mean_s"] > 0 else None)
    return chosen


def _pick(result):
    return {key: result[key] for key in ("scheme", "n_stragglers", "mean_s", "p95_s")}


# --------------------------------------------------------------------------- calibration

def _cpu_seconds(run, repeats):
    """Median CPU seconds of run() (process time: other processes' load does not count),
    each time after evicting the caches, as ranks sharing cores find them."""
    evict = np.zeros(EVICT_BYTES // 8)
    samples = []
    for _ in range(repeats + 1):
        evict += 1.0
        started = time.process_time()
        run()
        samples.append(time.process_time() - started)
    return float(np.median(samples[1:]))


def _kernel_seconds_per_nnz(X, y, repeats=40):
    """CPU seconds per non-zero of the coded-gradient kernel on one worker of naive n = 4."""
    from .data import build_worker_data, partition_bounds
    from .tasks import SparseLinearTask

    code = make_code("naive", 4, 0)
    worker_data = build_worker_data(X, y, partition_bounds(X.shape[0], 4), code, 0,
                                    row_scale=1.0 / X.shape[0])
    task = SparseLinearTask(worker_data)
    outs = [np.zeros(length) for length in task.message_lengths]
    point = np.random.default_rng(0).normal(0.0, 0.01, len(task.support))
    nnz = sum(len(block.indices) for block in worker_data.blocks)
    return _cpu_seconds(lambda: list(task.run(point, outs)), repeats) / nnz


def _master_seconds_per_byte(X, repeats=30):
    """CPU seconds per byte of the master's gather + decode-combine, and of its step (naive n = 4)."""
    from .assembly import GradientAssembler
    from .data import partition_bounds
    from .kernels import gather
    from .optim import make_optimizer
    from .data import worker_support

    code = make_code("naive", 4, 0)
    bounds = partition_bounds(X.shape[0], 4)
    supports = [worker_support(X, bounds, code.partitions_of(w)) for w in range(4)]
    assembler = GradientAssembler(code, supports, X.shape[1])
    assembler.values[:] = np.random.default_rng(0).normal(size=assembler.values.size)
    for message in range(code.n_messages):
        assembler.add(message)
    optimizer = make_optimizer("nag", np.zeros(X.shape[1]), 1e-12, l2=1e-4)
    gradient = np.zeros(X.shape[1])
    buffers = [np.empty(len(support)) for support in supports]

    def gather_and_combine():
        point = optimizer.query_point()
        for support, buffer in zip(supports, buffers):
            gather(point, support, buffer)
        assembler.combine(gradient)

    def step():
        optimizer.step(gradient)

    message_bytes = 2 * assembler.values.nbytes  # gathered out + combined in
    return (_cpu_seconds(gather_and_combine, repeats) / message_bytes,
            _cpu_seconds(step, repeats) / (8.0 * X.shape[1]))


def _pingpong():
    """Hidden mode under mpiexec -n 2: print runtime.pingpong's measurements (JSON) on rank 0."""
    from . import runtime

    comm = runtime.world()
    if comm.Get_size() != 2:
        raise UsageError("--pingpong runs under mpiexec -n 2")
    measured = runtime.pingpong(comm, PINGPONG_BYTES, PINGPONG_THINK_SECONDS, poll_seconds=POLL_SECONDS)
    if measured is not None:
        print(json.dumps(measured), flush=True)


def fit_pingpong(measured):
    """(bandwidth, latency, message_seconds, poll_load) from _pingpong's output.

    poll_load: the mean of the ranks' measured polling loads. Per round each
    rank sends and receives one message and waits about `think`, so
    cpu - poll_load * think = 2 message_seconds + 2 bytes / bandwidth (least
    squares over both ranks). latency: the median one-way wall time left
    after those CPU parts (at least 0), as measured (calibrate scales it to
    an unloaded machine).
    """
    poll_load = float(np.mean(measured["poll_load"]))
    design, cpu = [], []
    for record in measured["rounds"]:
        for rank_cpu in record["cpu"]:
            design.append([2.0, 2.0 * record["bytes"]])
            cpu.append(rank_cpu - poll_load * record["think"])
    message_seconds, seconds_per_byte = np.maximum(
        np.linalg.lstsq(np.array(design), np.array(cpu), rcond=None)[0], 0.0)
    bandwidth = 1.0 / max(seconds_per_byte, 1e-13)
    leftover = [r["one_way"] - 2 * message_seconds - r["bytes"] / bandwidth for r in measured["rounds"]]
    return float(bandwidth), max(0.0, float(np.median(leftover))), float(message_seconds), poll_load


def _mpiexec(purpose):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise UsageError(f"mpiexec not found next to this python or on PATH; --calibrate needs it "
                         f"for {purpose}")
    return mpiexec


def _measure_link(timeout=120):
    """fit_pingpong of a ping-pong run under the venv's mpiexec."""
    mpiexec = _mpiexec("the ping-pong")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [mpiexec, "-n", "2", sys.executable, "-m", "gc_fast.simulate", "--pingpong"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"ping-pong under {mpiexec} failed: {last}")
    return fit_pingpong(json.loads(result.stdout.strip().splitlines()[-1]))


def _measure_trainer(scheme, n_workers, n_stragglers, dataset, *, rows=None, features=None, seed=0,
                     iterations=CALIBRATION_ITERATIONS, timeout=300):
    """Mean seconds per iteration of the trainer itself, without delays."""
    import tempfile

    mpiexec = _mpiexec("the trainer runs")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "run.json"
        n_ranks = n_workers + 1
        command = [mpiexec, "-n", str(n_ranks), sys.executable, "-m", "gc_fast.train", "--scheme", scheme,
                   "--stragglers", str(n_stragglers),
                   "--iterations", str(iterations), "--eval-every", str(iterations), "--quiet",
                   "--dataset", str(dataset), "--seed", str(seed), "--out", str(out)]
        for flag, value in (("--rows", rows), ("--features", features)):
            if value is not None:
                command += [flag, str(value)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"trainer run under {mpiexec} -n {n_ranks} failed: {last}")
        return float(json.loads(out.read_text())["summary"]["mean_iteration_s"])


def _predicted_undelayed(workload, costs):
    times, _ = simulate_iterations(workload, costs, np.zeros((1, workload.n_workers)))
    return float(times[0])


def fit_contention(runs, X, costs, *, upper=20.0):
    """(contention, [predicted mean s per run]) making the model reproduce undelayed trainer runs.

    runs: [(scheme, n_workers, n_stragglers, measured mean seconds per
    iteration)] of the trainer (no delay) on the data X. Minimises the summed squared log error
    of the predictions over contention in [0, upper] (each prediction grows
    with contention, so a golden-section search). Without sharing (cores
    inf) contention has no effect: returns 0.
    """
    workloads = [(build_workload(scheme, n, s, X), measured) for scheme, n, s, measured in runs]
    if not runs or not costs.shared:
        return 0.0, [_predicted_undelayed(w, costs) for w, _ in workloads]

    def loss(value):
        trial = dataclasses.replace(costs, contention=value)
        return sum(np.log(_predicted_undelayed(w, trial) / measured) ** 2 for w, measured in workloads)

    low, high = 0.0, float(upper)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    while high - low > 1e-4:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    best = float(min((0.0, 0.5 * (low + high)), key=loss))
    fitted = dataclasses.replace(costs, contention=best)
    return best, [_predicted_undelayed(w, fitted) for w, _ in workloads]


def background_load(seconds=1.0):
    """Busy processes besides this one: mean runnable count in /proc/loadavg minus 1 (0 if unknown)."""
    samples = []
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            with open("/proc/loadavg") as handle:
                samples.append(int(handle.read().split()[3].split("/")[0]))
            time.sleep(0.005)
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, float(np.mean(samples)) - 1.0)


def calibrate(dataset="amazon-like", *, rows=None, features=None, nnz_per_row=None, seed=0,
              trainer_runs=CALIBRATION_RUNS):
    """Measure this machine's CostModel: kernel and master costs (CPU time, so other
    processes' load does not inflate them), the ping-pong, cores and the background load;
    then fit contention to the trainer run end to end for each (scheme, n, s) of trainer_runs
    (skipped for --nnz-per-row, which the trainer cannot build, or an empty trainer_runs)."""
    data = load_train_data(dataset, rows=rows, features=features, nnz_per_row=nnz_per_row, seed=seed)
    X = data.X_train
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    background = background_load()
    nnz_seconds = _kernel_seconds_per_nnz(X, data.y_train)
    master_byte_seconds, step_byte_seconds = _master_seconds_per_byte(X)
    bandwidth, latency, message_seconds, poll_load = _measure_link()
    costs = CostModel(nnz_seconds=nnz_seconds, bandwidth=bandwidth, latency=latency,
                      message_seconds=message_seconds, poll_load=poll_load,
                      master_byte_seconds=master_byte_seconds, step_byte_seconds=step_byte_seconds,
                      cores=float(cores), background=round(0.5 * (background + background_load()), 2),
                      source=f"calibrated {time.strftime('%Y-%m-%d %H:%M')} on {os.uname().nodename}")
    # The ping-pong's wall time stretched with the load of the moment (one rank busy, one polling).
    costs = dataclasses.replace(costs, latency=latency * float(costs.rate(1, 1)))
    if nnz_per_row is not None or not costs.shared:
        return costs
    runs = [(scheme, n, s, _measure_trainer(scheme, n, s, dataset, rows=rows, features=features, seed=seed))
            for scheme, n, s in trainer_runs]
    contention, predicted = fit_contention(runs, X, costs)
    return dataclasses.replace(costs, contention=contention, calibration_runs=tuple(
        {"scheme": scheme, "n_workers": n, "n_stragglers": s, "measured_mean_s": measured,
         "predicted_mean_s": prediction}
        for (scheme, n, s, measured), prediction in zip(runs, predicted)))


# --------------------------------------------------------------------------- validation

def validate_run(path, costs, *, decode_rule="auto"):
    """Predicted vs measured for one trainer result file (python -m gc_fast.train --out)."""
    try:
        run = json.loads(Path(path).read_text())
        config, measured = run["config"], np.array([it["time"] for it in run["iterations"]])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a python -m gc_fast.train --out result ({error})") from None
    scheme, n, s = config["scheme"], int(config["n_workers"]), int(config["n_stragglers"])
    seed, iterations = int(config["seed"]), len(measured)
    delay_model = parse_delay(config.get("delay", "none"))
    X = load_train_data(config.get("dataset", "amazon-like"), rows=config.get("rows"),
                        features=config.get("features"), seed=seed).X_train
    results = compare([(scheme, s)], n, X, costs, straggler_delays(delay_model, seed, iterations, n),
                      compute_factors(delay_model, n),
                      partitions_per_worker=config.get("partitions_per_worker"),
                      construction=config.get("construction"), seed=seed, decode_rule=decode_rule)
    predicted = results[0]
    return {"run": str(path), "scheme": scheme, "n_workers": n, "n_stragglers": s,
            "delay": str(delay_model), "iterations": iterations,
            "predicted_mean_s": predicted["mean_s"], "measured_mean_s": float(measured.mean()),
            "predicted_p50_s": predicted["p50_s"], "measured_p50_s": float(np.median(measured)),
            "error_percent": 100 * (predicted["mean_s"] / measured.mean() - 1)}


# --------------------------------------------------------------------------- output

def _ms(seconds):
    return "inf" if not np.isfinite(seconds) else f"{1e3 * seconds:.3f}"


def _table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(cell).rjust(width) for cell, width in zip(line, widths))
                     for line in [header, *rows])


def results_table(results):
    header = ("scheme", "s", "exact", "mean ms", "std ms", "p50 ms", "p95 ms", "decode rule")
    rows = [(r["scheme"], r["n_stragglers"], "yes" if r["exact"] else "no", _ms(r["mean_s"]),
             "nan" if np.isnan(r["std_s"]) else f"{1e3 * r['std_s']:.3f}", _ms(r["p50_s"]),
             _ms(r["p95_s"]), r["decode_rule"]) for r in results]
    return _table(header, rows)


def plan_text(chosen):
    best = chosen["best"]
    lines = []
    if not np.isfinite(best["mean_s"]):
        lines.append("plan: no exact scheme finishes every iteration under this straggler model")
    else:
        lines.append(f"plan: {best['scheme']} s={best['n_stragglers']}: {_ms(best['mean_s'])} ms per "
                     f"iteration expected (lowest among exact schemes)")
    runner = chosen["runner_up"]
    if runner is not None:
        percent = chosen["margin_percent"]
        lines.append(f"runner-up: {runner['scheme']} s={runner['n_stragglers']}: {_ms(runner['mean_s'])} ms "
                     f"(+{_ms(chosen['margin_s'])} ms"
                     + (f", +{percent:.1f}%)" if percent is not None else ")"))
    inexact = chosen["best_inexact"]
    if inexact is not None:
        lines.append(f"inexact, not a candidate: {inexact['scheme']} s={inexact['n_stragglers']}: "
                     f"{_ms(inexact['mean_s'])} ms (drops the stragglers' data each iteration)")
    return "\n".join(lines)


def save_plot(results, path, title):
    """Mean iteration time against s, one line per scheme, p50-p95 band (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for scheme in dict.fromkeys(r["scheme"] for r in results):
        rows = [r for r in results if r["scheme"] == scheme]
        s = [r["n_stragglers"] for r in rows]
        mean = np.array([1e3 * r["mean_s"] for r in rows])
        if scheme == "naive":
            axes.axhline(mean[0], color="gray", linestyle="--", label="naive")
            continue
        line, = axes.plot(s, mean, marker="o", linestyle=":" if scheme == "ignore" else "-",
                          label=scheme + (" (inexact)" if scheme == "ignore" else ""))
        axes.fill_between(s, [1e3 * r["p50_s"] for r in rows], [1e3 * r["p95_s"] for r in rows],
                          color=line.get_color(), alpha=0.1)
    axes.set_xticks(sorted({r["n_stragglers"] for r in results if r["scheme"] != "naive"}))
    axes.set_xlabel("stragglers tolerated, s")
    axes.set_ylabel("time per iteration (ms): mean, p50-p95 band")
    axes.set_title(title, fontsize=9)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------- command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see python -m gc_fast.simulate --help)")


def build_parser():
    parser = _Parser(prog="python -m gc_fast.simulate", description=__doc__,
                     epilog="--delay SPEC forms:\n" + (DELAY_DOC or ""),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workers", "-n", type=int, default=None, metavar="N", help="workers n (default 8, or the trace's)")
    add("--stragglers", "-s", default=None, metavar="S[,S...]",
        help="stragglers tolerated: one or a list, e.g. 1,2,3 (default 1; --plan: 1..min(n-1, 4))")
    add("--scheme", default="all", metavar="SCHEME[,...]|all",
        help=f"one or a list of {', '.join(SCHEMES)}, or all (default)")
    add("--partitions-per-worker", "-P", type=int, default=None, metavar="P",
        help="pieces per worker for partial schemes, P >= s+2 (default s+2)")
    add("--construction", choices=("cyclic-mds", "random"), default=None, help="crc encoding matrix")
    add("--delay", default="none", metavar="SPEC", help="straggler model, as the trainer's --delay")
    add("--trace", default=None, metavar="FILE", help="replay per-worker delays from FILE instead")
    add("--seed", type=int, default=0, help="seed for data, code and delays (default 0)")
    add("--iterations", "-T", type=int, default=None,
        help="iterations simulated (default 100, or the trace's)")
    add("--dataset", default="amazon-like", metavar="amazon-like|gmm|PATH",
        help="data set whose shape sets compute and message sizes (default amazon-like)")
    add("--rows", type=int, default=None, help="training rows of a synthetic set")
    add("--features", type=int, default=None, help="features of a synthetic set")
    add("--nnz-per-row", type=int, default=None, help="non-zeros per row of amazon-like")
    add("--decode-rule", choices=("auto", "exact", "structural"), default="auto",
        help=f"exact: the code objects' decoders (slow for large n); structural: the n - s rules; "
             f"auto (default): exact for n <= {EXACT_MAX_WORKERS}")
    add("--costs", default=None, metavar="PATH",
        help=f"cost file to load (or to write with --calibrate); default {DEFAULT_COSTS_PATH} if it exists")
    add("--nnz-seconds", type=float, default=None, help="override: compute seconds per non-zero")
    add("--partition-seconds", type=float, default=None,
        help="override: compute seconds per 1/n of the data set (instead of per non-zero)")
    add("--bandwidth", type=float, default=None,
        help="override: bytes per second of moving a message (a copy on one machine, else a link)")
    add("--latency", type=float, default=None, help="override: wall seconds per message")
    add("--message-seconds", type=float, default=None, help="override: CPU seconds per message and rank")
    add("--poll-load", type=float, default=None, help="override: fraction of a core a waiting rank polls")
    add("--master-byte-seconds", type=float, default=None,
        help="override: master gather/decode-combine seconds per byte")
    add("--step-byte-seconds", type=float, default=None,
        help="override: optimiser step seconds per model byte")
    add("--cores", type=float, default=None, help="override: cores the ranks share (inf: one each)")
    add("--background", type=float, default=None,
        help="override: other busy processes on those cores (the machine's load while the job runs)")
    add("--contention", type=float, default=None,
        help="override: extra CPU cost per unit of core oversubscription (see CostModel)")
    add("--plan", action="store_true", help="recommend the exact scheme and s with the lowest expected time")
    add("--calibrate", action="store_true", help="measure the cost model on this machine and save it")
    add("--validate", nargs="+", default=None, metavar="RUN.json",
        help="predicted vs measured for trainer result files")
    add("--plot", default=None, metavar="PATH.png", help="plot mean time against s")
    add("--json", default=None, metavar="PATH", help="write the results as JSON")
    add("--pingpong", action="store_true", help=argparse.SUPPRESS)
    return parser


def _stragglers(text, n_workers, plan_mode):
    if text is None:
        if plan_mode:
            return list(range(1, min(n_workers - 1, 4) + 1)) or [0]
        return [min(1, n_workers - 1)]
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--stragglers must be integers separated by commas, got {text!r}") from None
    bad = [s for s in values if not 0 <= s < n_workers]
    if bad:
        raise UsageError(f"--stragglers must be in [0, n_workers) = [0, {n_workers}), got {bad[0]}")
    return sorted(set(values))


def _schemes(text):
    if text == "all":
        return list(SCHEMES), False
    names = [part.strip() for part in text.split(",")]
    bad = [name for name in names if name not in SCHEMES]
    if bad:
        raise UsageError(f"unknown scheme {bad[0]!r}; valid schemes: {', '.join(SCHEMES)}, or all")
    return list(dict.fromkeys(names)), True


def load_costs(args):
    """The cost file (--costs, else the default one if present, else defaults) with CLI overrides."""
    if args.costs is not None:
        costs = CostModel.load(args.costs)
    elif DEFAULT_COSTS_PATH.exists():
        costs = CostModel.load(DEFAULT_COSTS_PATH)
    else:
        costs = CostModel()
    names = ("nnz_seconds", "partition_seconds", "bandwidth", "latency", "message_seconds", "poll_load",
             "master_byte_seconds", "step_byte_seconds", "cores", "background", "contention")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if overrides:
        costs = dataclasses.replace(costs, **overrides,
                                    source=costs.source + " + overrides " + ", ".join(sorted(overrides)))
    return costs


def _costs_header(costs):
    compute = (f"{1e3 * costs.partition_seconds:.3f} ms per 1/n of the data" if costs.partition_seconds
               is not None else f"{1e9 * costs.nnz_seconds:.2f} ns/nnz")
    cores = (f"{costs.cores:g} shared with {costs.background:g} busy background processes, "
             f"polling {100 * costs.poll_load:.1f}% of a core, contention {costs.contention:.3f}"
             if costs.shared else "one per rank")
    return (f"costs: {costs.source}\n  compute {compute}; messages {costs.bandwidth / 1e9:.2f} GB/s, "
            f"{1e6 * costs.latency:.0f} us latency, {1e6 * costs.message_seconds:.0f} us CPU each; "
            f"master {1e9 * costs.master_byte_seconds:.3f} ns/byte gather+combine, "
            f"{1e9 * costs.step_byte_seconds:.3f} ns/byte step; cores {cores}")


def run_simulation(args):
    trace_rows = n_censored = None
    if args.trace is not None:
        if args.delay != "none":
            raise UsageError("--trace replays recorded delays: drop --delay")
        trace_rows, n_censored = trace_delays(args.trace, args.workers)
    n_workers = args.workers if args.workers is not None else (
        trace_rows.shape[1] if trace_rows is not None else 8)
    if n_workers < 1:
        raise UsageError(f"--workers must be >= 1, got {n_workers}")
    iterations = args.iterations if args.iterations is not None else (
        trace_rows.shape[0] if trace_rows is not None else 100)
    if iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {iterations}")
    schemes, explicit = _schemes(args.scheme)
    stragglers = _stragglers(args.stragglers, n_workers, args.plan)
    pairs, notes = configurations(schemes, stragglers, n_workers, explicit=explicit)
    P = args.partitions_per_worker
    too_small = [s for scheme, s in pairs if scheme.startswith("partial-") and P is not None and P < s + 2]
    if too_small:
        raise UsageError(f"--partitions-per-worker must be >= s + 2 = {max(too_small) + 2} for the "
                         f"partial schemes, got {P}")
    if not pairs:
        raise UsageError("no valid (scheme, s) to simulate: " + "; ".join(notes))
    costs = load_costs(args)
    delay_model = parse_delay(args.delay)
    if trace_rows is not None:
        delays = trace_rows[np.arange(iterations) % trace_rows.shape[0]]
        factors = np.ones(n_workers)
        source = f"trace {args.trace} ({trace_rows.shape[0]} iterations, {n_censored} censored delays)"
    else:
        delays = straggler_delays(delay_model, args.seed, iterations, n_workers)
        factors = compute_factors(delay_model, n_workers)
        source = f"delay {delay_model}"
    X = load_train_data(args.dataset, rows=args.rows, features=args.features,
                        nnz_per_row=args.nnz_per_row, seed=args.seed).X_train
    results = compare(pairs, n_workers, X, costs, delays, factors,
                      partitions_per_worker=args.partitions_per_worker, construction=args.construction,
                      seed=args.seed, decode_rule=args.decode_rule)
    title = f"n={n_workers} workers, {source}, {iterations} iterations, seed {args.seed}"
    print(f"gc_fast.simulate: {title}\n{_costs_header(costs)}\ndata: {data_label(args.dataset, X)}; "
          f"message sizes from {results[0]['supports']}")
    print(results_table(results))
    if costs.shared and n_workers + 1 > 2 * costs.cores:
        notes.append(f"note: all {n_workers + 1} ranks share {costs.cores:g} cores (the cost file's "
                     f"machine); pass --cores inf to model a core per rank")
    for note in notes:
        print(note)
    chosen = plan(results) if args.plan else None
    if chosen is not None:
        print(plan_text(chosen))
    if args.plot:
        save_plot(results, args.plot, title)
    if args.json:
        record = {"config": {"n_workers": n_workers, "iterations": iterations, "seed": args.seed,
                             "delays": source, "dataset": data_label(args.dataset, X)},
                  "costs": costs.to_dict(),
                  "results": [{k: v for k, v in r.items() if k != "times"} for r in results],
                  "notes": notes, "plan": chosen}
        Path(args.json).write_text(json.dumps(_json_ready(record), indent=2) + "\n")


def _json_ready(value):
    """value with numpy scalars as Python numbers and inf/nan as null (strict JSON)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_calibration(args):
    path = Path(args.costs) if args.costs is not None else DEFAULT_COSTS_PATH
    costs = calibrate(args.dataset, rows=args.rows, features=args.features,
                      nnz_per_row=args.nnz_per_row, seed=args.seed)
    costs.save(path)
    print(f"wrote {path}\n{_costs_header(costs)}")


def run_validation(args):
    costs = load_costs(args)
    rows = [validate_run(path, costs, decode_rule=args.decode_rule) for path in args.validate]
    print(_costs_header(costs))
    header = ("run", "scheme", "n", "s", "delay", "pred mean ms", "meas mean ms", "error %",
              "pred p50 ms", "meas p50 ms")
    print(_table(header, [(Path(r["run"]).name, r["scheme"], r["n_workers"], r["n_stragglers"], r["delay"],
                           _ms(r["predicted_mean_s"]), _ms(r["measured_mean_s"]),
                           f"{r['error_percent']:+.1f}", _ms(r["predicted_p50_s"]),
                           _ms(r["measured_p50_s"])) for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps(_json_ready({"costs": costs.to_dict(), "runs": rows}), indent=2)
                                   + "\n")


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        if args.pingpong:
            _pingpong()
        elif args.calibrate:
            run_calibration(args)
        elif args.validate:
            run_validation(args)
        else:
            run_simulation(args)
    except (UsageError, ValueError, OSError) as error:
        print(f"gc_fast.simulate: error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
