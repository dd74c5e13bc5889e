"""The cost model: what each part of an iteration costs on this machine, saved as JSON."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_COSTS_PATH = Path.home() / ".cache" / "gc_fast" / "costs.json"

_NON_NEGATIVE = ("nnz_seconds", "latency", "message_seconds", "poll_load", "master_byte_seconds",
                 "step_byte_seconds", "background", "contention", "net_byte_seconds",
                 "wait_poll_seconds")


@dataclass(frozen=True)
class CostModel:
    """Measured costs of one iteration's parts (seconds of one unloaded core, bytes).

    With finite cores every busy rank runs at rate(busy) = min(1, cores /
    (background + busy + poll_load * waiting ranks)) / slowdown of an unloaded
    core (slowdown: see contention; ranks = busy + waiting).

    Parameters
    ----------
    nnz_seconds : float
        Worker compute per stored non-zero of the coded-gradient kernel.
    partition_seconds : float or None
        If set, worker compute per 1/n of the data set instead.
    bandwidth : float
        Bytes per second of moving a message: a copy the ranks make themselves
        on one machine (finite cores), a link otherwise.
    latency : float
        Seconds every message waits besides that on an unloaded machine
        (noticing it: the runtime polls with a sleeping back-off); with finite
        cores it stretches like CPU work (a woken rank waits for a core).
    message_seconds : float
        CPU seconds a rank spends per message it sends or receives (MPI and
        Python handling, besides the bytes).
    poll_load : float
        Fraction of a core a waiting rank burns polling (on separate hosts:
        a delayed worker, at most its share; CPU accounting only).
    master_byte_seconds : float
        Master's gather (points out) and decode-combine (messages in), per byte.
    step_byte_seconds : float
        Master's optimiser step, per byte of the model.
    cores : float
        Cores all ranks share (inf: a core per rank, no sharing).
    background : float
        Other busy processes on those cores (a shared machine's load).
    contention : float
        Extra CPU cost of oversubscribed cores: every rank's work costs
        slowdown = 1 + contention * min(1, max(0, (background + ranks) / cores
        - 1)) times its isolated cost (fitted by calibrate to end-to-end
        trainer runs; 0: none). It saturates: once ranks outnumber cores, every
        time slice starts on caches another rank has used, however many ranks
        there are (measured here: the same factor fits 5 and 13 ranks on 2
        cores, a linear one does not).
    calibration_runs : tuple of dict
        The trainer runs contention was fitted to, as [{"scheme", "n_workers",
        "n_stragglers", "measured_mean_s", "predicted_mean_s"}] (information
        only; on a test bed, the runs the network costs were fitted to).
    hosts : tuple of (cpu, rate_bits)
        A cluster of separate hosts (cores must be inf), one pair per rank,
        host 0 the master's: its share of one core (None: a whole core) and
        its link rate each way in bits per second (None: unlimited), as
        gc_fast.testbed.hosts.HostSpec. A rank's CPU work takes work / cpu;
        a point crosses the master's link (shared by every worker's point)
        and its worker's link, a message its worker's link and the master's
        (max-min fair sharing, as concurrent TCP streams). Empty: the
        cluster model of `bandwidth` (or one machine's, with finite cores).
    net_byte_seconds : float
        CPU seconds a rank spends per byte it sends or receives over a link
        (the network stack: copies, TCP; its sender and its receiver each
        pay it). Over a cluster only; on one machine the copy is
        bytes / bandwidth.
    wait_poll_seconds : float
        CPU seconds a worker on a cluster host spends polling while it waits
        for each point (the trainer polls a fixed number of times per wait);
        its polling during an injected delay is poll_load of a core (at most
        its share). Information for the CPU accounting (worker_cpu_seconds):
        a waiting rank has nothing else to run, so it delays nothing.
    source : str
        Where the numbers come from (shown in the table header).

    Raises
    ------
    ValueError
        A cost out of range (one line, naming it).
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
    hosts: tuple = ()
    net_byte_seconds: float = 0.0
    wait_poll_seconds: float = 0.0
    source: str = "built-in defaults (not measured; run --calibrate)"

    def __post_init__(self):
        for name in _NON_NEGATIVE:
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
        object.__setattr__(self, "hosts", tuple(_host(host) for host in self.hosts))
        if self.hosts and self.shared:
            raise ValueError(f"cost hosts are separate machines: cores must be inf, "
                             f"got {self.cores:g}")

    @property
    def shared(self):
        """True when all ranks share finitely many cores (one machine)."""
        return bool(np.isfinite(self.cores))

    def to_dict(self):
        """JSON-ready dict (cores inf is stored as null)."""
        values = dataclasses.asdict(self)
        values["cores"] = self.cores if self.shared else None
        values["calibration_runs"] = [dict(run) for run in self.calibration_runs]
        values["hosts"] = [list(host) for host in self.hosts]
        return values

    @classmethod
    def from_dict(cls, values, *, source=None):
        """Inverse of to_dict; unknown keys raise ValueError naming the valid ones."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown cost field {unknown[0]!r}; "
                             f"valid fields: {', '.join(sorted(names))}")
        values = dict(values)
        if values.get("cores", 0) is None:
            values["cores"] = float("inf")
        if "calibration_runs" in values:
            values["calibration_runs"] = tuple(dict(run)
                                               for run in values["calibration_runs"] or ())
        if "hosts" in values:
            values["hosts"] = tuple(values["hosts"] or ())
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
        """CPU seconds a rank spends moving n_bytes itself: a copy on one machine, the network
        stack's net_byte_seconds per byte over a link."""
        if self.shared:
            return np.asarray(n_bytes) / self.bandwidth
        return self.net_byte_seconds * np.asarray(n_bytes, dtype=np.float64)

    def cpu_shares(self, n_ranks):
        """(n_ranks,) share of one core of each rank, the master first: the hosts' CPU (None:
        1), or 1 each without hosts (with finite cores, CostModel.rate shares them)."""
        if not self.hosts:
            return np.ones(n_ranks)
        return np.array([1.0 if cpu is None else cpu for cpu, _ in self._hosts_for(n_ranks)])

    def link_rates(self, n_ranks):
        """(n_ranks,) bytes per second of each rank's link each way, the master first (inf:
        unlimited); None without hosts."""
        if not self.hosts:
            return None
        return np.array([np.inf if rate is None else rate / 8.0
                         for _, rate in self._hosts_for(n_ranks)])

    def _hosts_for(self, n_ranks):
        if len(self.hosts) < n_ranks:
            raise ValueError(f"the costs describe {len(self.hosts)} hosts but {n_ranks} ranks "
                             f"(the master and {n_ranks - 1} workers) need one each: pass "
                             f"--testbed-profile for this many workers")
        return self.hosts[:n_ranks]


def _host(host):
    """One entry of CostModel.hosts as (cpu share or None, link bits/s or None), checked; a
    HostSpec (cpu, rate_bits) is accepted too."""
    if hasattr(host, "rate_bits"):
        host = (host.cpu, host.rate_bits)
    try:
        cpu, rate = host
    except (TypeError, ValueError):
        raise ValueError(f"cost hosts must be (cpu share, link bits/s) pairs, "
                         f"got {host!r}") from None
    for name, value in (("cpu share", cpu), ("link rate", rate)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"cost hosts: a {name} must be a number > 0 or null, got {value}")
    return (None if cpu is None else float(cpu), None if rate is None else float(rate))


def testbed_costs_path(profile):
    """Where --calibrate --testbed-profile PROFILE saves its costs (beside DEFAULT_COSTS_PATH)."""
    return DEFAULT_COSTS_PATH.with_name(f"costs-testbed-{profile}.json")


def on_hosts(costs, hosts, label):
    """`costs` on separate `hosts` (HostSpecs or (cpu, rate_bits) pairs, host 0 the
    master's): cores inf, the source naming `label`."""
    hosts = tuple(_host(host) for host in hosts)
    if costs.hosts == hosts:
        return costs
    return dataclasses.replace(costs, cores=float("inf"), background=0.0, hosts=hosts,
                               source=f"{costs.source} on {label}")


def default_costs():
    """This machine's calibrated costs (DEFAULT_COSTS_PATH) if saved, else the built-in ones."""
    return CostModel.load(DEFAULT_COSTS_PATH) if DEFAULT_COSTS_PATH.exists() else CostModel()
