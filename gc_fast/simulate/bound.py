"""The network bound: the least mean time an exact scheme's iteration can take on given hosts.

Each iteration the point must reach a worker before its message can be computed and sent, so
on hosts whose links are the bottleneck an iteration takes at least

    bytes of the point / link rate + compute / CPU share + bytes of the message / link rate

for the workers the decode needs (with the master's own link shared by all of them), plus the
injected waits that no decode avoids: the chance that the undelayed workers cannot decode,
times the delay.
"""
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..codes import fewest_decoding_messages


@dataclass(frozen=True)
class Bound:
    """The bound of one case and its parts, seconds per iteration."""

    seconds: float
    transfer_seconds: float
    compute_seconds: float
    wait_seconds: float


def _link_seconds(per_worker_bytes, worker_rates, master_rate, needed):
    """Seconds until `needed` workers' bytes have crossed their links and the master's."""
    each = 8.0 * per_worker_bytes / worker_rates
    slowest = float(np.sort(each)[needed - 1])
    shared = 8.0 * float(np.sort(per_worker_bytes)[:needed].sum()) / master_rate
    return max(slowest, shared)


def undecodable_probability(code, p):
    """Chance that the workers not delayed (each delayed with probability p) cannot decode."""
    n = code.n_workers
    missing = 0.0
    for n_delayed in range(n + 1):
        chance = p**n_delayed * (1 - p) ** (n - n_delayed)
        for delayed in combinations(range(n), n_delayed):
            arrived = ~np.isin(code.message_worker, delayed)
            if not arrived.any() or code.decode_mask(arrived) is None:
                missing += chance
    return missing


def network_bound(workload, hosts, nnz_seconds, *, code=None, delay=None):
    """The bound of `workload` (build_workload's) on `hosts` (HostSpec, host 0 the master's).

    Parameters
    ----------
    workload : Workload
    hosts : sequence of HostSpec
        Rates of None count as unlimited, CPU shares of None as one core.
    nnz_seconds : float
        Kernel CPU seconds per stored non-zero on one core of this machine.
    code : GradientCode, optional
        Needed with `delay`: which undelayed sets decode.
    delay : (p, seconds), optional
        Each worker delayed `seconds` with probability p every iteration.

    Returns
    -------
    Bound
    """
    n = workload.n_workers
    workers = hosts[1:n + 1]
    rates = np.array([h.rate_bits or np.inf for h in workers], dtype=np.float64)
    master_rate = hosts[0].rate_bits or np.inf
    shares = np.array([h.cpu or 1.0 for h in workers], dtype=np.float64)
    needed = min(n, max(1, fewest_decoding_messages(workload.scheme, n,
                                                    workload.n_stragglers)))
    message_bytes = np.bincount(workload.message_worker, workload.message_bytes, minlength=n)
    message_nnz = np.bincount(workload.message_worker, workload.message_nnz, minlength=n)
    down = _link_seconds(workload.point_bytes, rates, master_rate, needed)
    up = _link_seconds(message_bytes, rates, master_rate, needed)
    compute = float(np.sort(nnz_seconds * message_nnz / shares)[needed - 1])
    wait = 0.0
    if delay is not None:
        if code is None:
            raise ValueError("network_bound with a delay needs the code")
        wait = undecodable_probability(code, delay[0]) * delay[1]
    return Bound(down + compute + up + wait, down + up, compute, wait)
