"""The cost model: what each part of an iteration costs on this machine, saved as JSON."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_COSTS_PATH = Path.home() / ".cache" / "gc_fast" / "costs.json"

_NON_NEGATIVE = ("nnz_seconds", "latency", "message_seconds", "poll_load", "master_byte_seconds",
                 "step_byte_seconds", "background", "contention")


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
        Fraction of a core a waiting rank burns polling.
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
        only).
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
            raise ValueError(f"unknown cost field {unknown[0]!r}; "
                             f"valid fields: {', '.join(sorted(names))}")
        values = dict(values)
        if values.get("cores", 0) is None:
            values["cores"] = float("inf")
        if "calibration_runs" in values:
            values["calibration_runs"] = tuple(dict(run)
                                               for run in values["calibration_runs"] or ())
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
        if self.shared:
            return np.asarray(n_bytes) / self.bandwidth
        return np.zeros(np.shape(n_bytes))


def default_costs():
    """This machine's calibrated costs (DEFAULT_COSTS_PATH) if saved, else the built-in ones."""
    return CostModel.load(DEFAULT_COSTS_PATH) if DEFAULT_COSTS_PATH.exists() else CostModel()
