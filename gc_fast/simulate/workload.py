"""What an iteration computes and moves, the delays it faces, and the simulated iterations."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codes import (
    earliest_decodable_prefix,
    fewest_decoding_messages,
    placement,
    structural_decode,
)
from .timing import master_seconds, timeline

SUPPORT_SAMPLE = 64  # workers whose support is measured when there is no code object


@dataclass
class Workload:
    """What one iteration of (scheme, n, s) computes and moves, per message and per worker.

    message_worker (M,): sender of each message (send order = index order).
    message_nnz (M,): stored non-zeros of the rows the message covers.
    message_fraction (M,): fraction of the data set those rows are.
    message_bytes (M,), point_bytes (n,): float64 supports, 8 bytes per column.
    supports: how the supports were measured (shown in the output).
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

    def compute_seconds(self, costs):
        """Compute seconds of every message on an unloaded core (before compute factors)."""
        if costs.partition_seconds is not None:
            return costs.partition_seconds * self.n_workers * self.message_fraction
        return costs.nnz_seconds * self.message_nnz


def build_workload(scheme, n_workers, n_stragglers, X, *, partitions_per_worker=None, seed=0,
                   code=None):
    """Per-message compute (nnz) and bytes of (scheme, n, s) on a data set.

    A message is the worker's support (the columns its rows touch) in float64,
    as in the trainer; the rows are split into contiguous partitions.

    Parameters
    ----------
    scheme : str
        One of gc_fast.codes.SCHEMES.
    n_workers, n_stragglers : int
        n and s.
    X : scipy.sparse.csr_matrix
        The training rows.
    partitions_per_worker : int, optional
        P of the partial schemes (default s + 2).
    seed : int
        Seed of the sampled workers (without `code`).
    code : GradientCode, optional
        With it (small n), the placement is code.B's and every worker's
        support is measured; without it, the structural placement
        (gc_fast.codes.placement), and the mean support of SUPPORT_SAMPLE
        sampled workers is used for every worker.

    Returns
    -------
    Workload

    Raises
    ------
    ValueError
        More partitions than the data set has rows.
    """
    from ..data import partition_bounds  # scipy: loaded on first use, not on import

    n, s = n_workers, n_stragglers
    partial = scheme.startswith("partial-")
    P = s + 2 if partial and partitions_per_worker is None else partitions_per_worker
    n_partitions = n * (P - s) if partial else n
    n_rows = X.shape[0]
    if n_partitions > n_rows:
        raise ValueError(f"{scheme} with n = {n} needs {n_partitions} partitions but the data "
                         f"set has only {n_rows} rows: use fewer workers or more rows")
    bounds = partition_bounds(n_rows, n_partitions)
    partition_nnz = np.diff(X.indptr[bounds]).astype(np.float64)
    partition_fraction = np.diff(bounds) / n_rows
    if code is not None:
        message_worker = np.asarray(code.message_worker)
        message_parts = [np.flatnonzero(row) for row in code.B]
        support = _support_sizes(X, bounds, [code.partitions_of(w) for w in range(n)])
        supports = "exact supports"
    else:
        message_worker, message_parts, support, supports = _structural_layout(
            scheme, n, s, P, X, bounds, seed)
    return Workload(scheme, n, s, P if partial else None, message_worker,
                    np.array([partition_nnz[parts].sum() for parts in message_parts]),
                    np.array([partition_fraction[parts].sum() for parts in message_parts]),
                    8.0 * support[message_worker], 8.0 * support, X.shape[1], supports,
                    np.array([len(parts) for parts in message_parts], dtype=np.int64))


def _structural_layout(scheme, n, s, P, X, bounds, seed):
    """(message_worker, message partitions, support size per worker, how measured) of the
    structural placement, with the mean support of SUPPORT_SAMPLE sampled workers."""
    layout = placement(scheme, n, s, partitions_per_worker=P)
    message_worker = np.repeat(np.arange(n), [len(messages) for messages in layout])
    message_parts = [parts for messages in layout for parts in messages]
    sample = np.random.default_rng(seed).choice(n, min(n, SUPPORT_SAMPLE), replace=False)
    sizes = _support_sizes(X, bounds, [np.concatenate(layout[w]) for w in sample])
    return (message_worker, message_parts, np.full(n, float(np.mean(sizes))),
            f"supports sampled on {len(sample)} workers")


def _support_sizes(X, bounds, worker_partitions):
    """Number of columns the rows of each worker's partitions touch (float64)."""
    from ..data import worker_support

    return np.array([len(worker_support(X, bounds, parts)) for parts in worker_partitions],
                    dtype=np.float64)


def decode_times(scheme, n_workers, n_stragglers, arrival, *, code=None, wait_seconds=None):
    """When the master can decode each iteration, and which messages it combines.

    Parameters
    ----------
    scheme : str
        One of gc_fast.codes.SCHEMES.
    n_workers, n_stragglers : int
        n and s.
    arrival : array_like, (rows, n_messages)
        Arrival times (inf: never).
    code : GradientCode, optional
        Without it, the structural rules (gc_fast.codes.structural_decode):
        naive all n; ignore any n - s; frc the first message of every group;
        crc any n - s; partial-* all first messages plus the frc/crc rule on
        the second ones. With it, the exact rule: the code's own decoder on
        the earliest decodable prefix of each row's arrival order
        (gc_fast.codes.earliest_decodable_prefix; crc may decode before n - s).
    wait_seconds : float, optional
        An approximate code's time budget (needs `code`): a row decodes what
        has arrived by then (or its first arrival, if later) unless its
        code's wait came first (driver.Master's rule).

    Returns
    -------
    decode : ndarray, (rows,)
        Decode time; inf when never decodable.
    combined : ndarray of bool, (rows, n_messages)
        The messages with a non-zero decode coefficient (none if never decodable).
    """
    arrival = np.asarray(arrival, dtype=np.float64)
    if code is None:
        return structural_decode(scheme, n_workers, n_stragglers, arrival)
    shortest = fewest_decoding_messages(scheme, n_workers, n_stragglers)
    decode = np.full(arrival.shape[0], np.inf)
    combined = np.zeros(arrival.shape, dtype=bool)
    order = np.argsort(arrival, axis=1, kind="stable")
    for row, times in enumerate(arrival):
        arrived = order[row, :np.count_nonzero(np.isfinite(times))]
        length, vector = earliest_decodable_prefix(code, arrived, shortest=shortest)
        at = None if length is None else times[arrived[length - 1]]
        if wait_seconds is not None and arrived.size:
            budget = max(wait_seconds, times[arrived[0]])
            if at is None or budget < at:
                mask = np.zeros(code.n_messages, dtype=bool)
                mask[arrived[times[arrived] <= budget]] = True
                at, vector = budget, code.decode_now(mask)
        if at is not None:
            decode[row] = at
            combined[row] = (vector != 0).any(axis=0) if vector.ndim == 2 else vector != 0
    return decode, combined


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
    """(iterations, n) per-worker delays replayed from a trace (a dict or a JSON file's path).

    The trace is either {"delays": [[seconds per worker, ...], ...]} (one row
    per iteration; null = never answers) or a trainer result (python -m
    gc_fast.train --out): per iteration, a worker's arrival is the earliest
    non-null arrival of its messages (message_worker maps messages to ranks
    1..n) and its delay is how much later than the median worker it arrived,
    floored at 0. A worker with no arrival (the master did not wait for it) is
    censored: it gets the lower bound (last arrival - median).

    Returns (delays, n_censored): the number of worker-iterations whose delay
    is only a lower bound. Raises ValueError (one line) on a bad trace.
    """
    if not isinstance(trace, dict):
        try:
            trace = json.loads(Path(trace).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read trace {trace}: {error}") from None
    try:
        if "delays" in trace:
            delays = np.array([[np.inf if d is None else d for d in row]
                               for row in trace["delays"]], dtype=np.float64)
            n_censored = 0
        else:
            delays, n_censored = _delays_from_arrivals(trace)
    except (KeyError, TypeError, ValueError):
        raise ValueError("a trace needs 'delays' (equal-length rows of per-worker seconds or "
                         "null) or 'iterations' with equal-length 'arrival' lists and "
                         "'message_worker' ranks (a python -m gc_fast.train --out file)") from None
    if delays.ndim != 2 or delays.shape[0] == 0 or delays.shape[1] == 0:
        raise ValueError("a trace needs at least one iteration of per-worker delays")
    if np.isnan(delays).any() or (delays < 0).any():
        raise ValueError("trace delays must be numbers >= 0 or null")
    if n_workers is not None and delays.shape[1] != n_workers:
        raise ValueError(f"the trace has {delays.shape[1]} workers but --workers is {n_workers}")
    return delays, n_censored


def _delays_from_arrivals(trace):
    """(delays, n_censored) of a trainer result's per-message arrivals (see trace_delays)."""
    arrivals = np.array([[np.nan if a is None else a for a in it["arrival"]]
                         for it in trace["iterations"]], dtype=np.float64)
    n_messages = arrivals.shape[1] if arrivals.ndim == 2 else 0
    ranks = np.asarray(trace.get("message_worker", np.arange(1, n_messages + 1)), dtype=np.int64)
    if arrivals.ndim != 2 or ranks.shape != (n_messages,) or n_messages == 0 or ranks.min() < 1:
        raise ValueError("bad arrival lists")
    worker_arrival = np.full((arrivals.shape[0], int(ranks.max())), np.inf)
    for m, rank in enumerate(ranks):
        worker_arrival[:, rank - 1] = np.fmin(
            worker_arrival[:, rank - 1], np.where(np.isnan(arrivals[:, m]), np.inf, arrivals[:, m]))
    known = np.isfinite(worker_arrival)
    if not known.any(axis=1).all():
        raise ValueError("an iteration without arrivals")
    observed = np.where(known, worker_arrival, np.nan)
    median = np.nanmedian(observed, axis=1)
    last = np.nanmax(observed, axis=1)
    delays = np.where(known, worker_arrival, last[:, None]) - median[:, None]
    return np.maximum(delays, 0.0), int((~known).sum())


def simulate_iterations(workload, costs, delays, *, compute_factor=None, code=None,
                        wait_seconds=None):
    """Simulated iterations of a workload under per-worker delays.

    One iteration: the master sends the points, the workers wait their delays
    and compute and send their messages (timeline), the master decodes at the
    earliest decodable set (decode_times), then decode-combines the messages
    with non-zero coefficients and takes the optimiser step (master_seconds).
    Rows are consecutive iterations. With workload.message_partitions, a
    worker still computing when iteration t decodes first finishes its
    current partition (the runtime abandons a stale iteration only between
    partitions): that leftover is carried into iteration t + 1 (one
    fixed-point pass over the rows).

    Parameters
    ----------
    workload : Workload
        What each message computes and moves.
    costs : CostModel
        The costs of every part.
    delays : array_like, (rows, n)
        Injected delay of each worker in each iteration (inf: never answers).
    compute_factor : array_like, (n,), optional
        Compute slow-down of every worker (compute_factors).
    code : GradientCode, optional
        Decode with the code's exact rule instead of the structural one.
    wait_seconds : float, optional
        An approximate code's time budget (decode_times).

    Returns
    -------
    times : ndarray, (rows,)
        Seconds per iteration (inf: never decodes).
    arrival : ndarray, (rows, M)
        When the master received each message (inf: never).
    """
    delays = np.atleast_2d(np.asarray(delays, dtype=np.float64))
    compute = workload.compute_seconds(costs)
    if compute_factor is not None:
        compute = compute * np.asarray(compute_factor)[workload.message_worker]
    carry = None
    passes = 2 if workload.message_partitions is not None and len(delays) > 1 else 1
    for remaining in reversed(range(passes)):
        events = timeline(compute, delays, workload.message_bytes, costs,
                          message_worker=workload.message_worker,
                          point_bytes=workload.point_bytes, carry_seconds=carry)
        decode, combined = decode_times(workload.scheme, workload.n_workers,
                                        workload.n_stragglers, events.arrival, code=code,
                                        wait_seconds=wait_seconds)
        if remaining:
            carry = _carried_over(events, decode, compute, workload)
    combined_bytes = combined.astype(np.float64) @ workload.message_bytes
    busy = ((events.begin <= decode[:, None]) & (events.end > decode[:, None])).sum(axis=1)
    post = master_seconds(combined_bytes, workload.n_features, costs,
                          n_workers=workload.n_workers, busy_workers=busy)
    return decode + post, events.arrival


def _carried_over(events, decode, compute, workload):
    """(rows, n) compute seconds each worker owes iteration t + 1: the rest of the partition
    it was in when iteration t decoded (progress interpolated over its busy span)."""
    n = workload.n_workers
    work = np.bincount(workload.message_worker, weights=compute, minlength=n)
    chunks = np.bincount(workload.message_worker, weights=workload.message_partitions,
                         minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        progress = (decode[:, None] - events.begin) / (events.end - events.begin) * chunks
        computing = ((events.begin < decode[:, None]) & (events.end > decode[:, None])
                     & np.isfinite(progress))
        owed = np.where(computing, (np.ceil(progress) - progress) * work / np.maximum(chunks, 1),
                        0.0)
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
    """Linear-interpolated percentile of sorted times; inf if it interpolates towards an inf."""
    position = q / 100 * (len(sorted_times) - 1)
    low, high = int(np.floor(position)), int(np.ceil(position))
    fraction = position - low
    if fraction == 0 or not np.isfinite(sorted_times[high]):
        return float(sorted_times[low] if fraction == 0 else np.inf)
    return float(sorted_times[low] + fraction * (sorted_times[high] - sorted_times[low]))
