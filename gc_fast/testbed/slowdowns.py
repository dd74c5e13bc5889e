"""Natural stragglers: random hosts slowed for random spells while a job runs, from a seeded,
logged schedule the trainer knows nothing of.

Each worker host (never host 0, the master's) draws its own sequence: an exponential gap, then a
spell of exponential length in which either its CPU quota or its link rate is cut to a fraction
of its own (a t2.micro out of CPU credits runs at a tenth of its burst speed), then a gap again.
The same seed gives the same spells at the same times after the job starts.
"""
import json
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

KINDS = ("cpu", "link")


@dataclass(frozen=True)
class SpellSettings:
    """How often and how hard hosts slow down.

    Attributes
    ----------
    mean_gap : float
        Mean seconds between the end of one spell of a host and the start of its next.
    mean_seconds : float
        Mean length of a spell.
    cpu_factor, link_factor : float
        The fraction of its CPU share, or of its link rate, that a slowed host keeps.
    seed : int
        Seeds every host's sequence.
    """

    mean_gap: float = 10.0
    mean_seconds: float = 2.0
    cpu_factor: float = 0.1
    link_factor: float = 0.1
    seed: int = 0

    @classmethod
    def parse(cls, text):
        """Settings from 'gap=10,seconds=2,cpu=0.1,link=0.1,seed=0' (every key optional)."""
        keys = {"gap": "mean_gap", "seconds": "mean_seconds", "cpu": "cpu_factor",
                "link": "link_factor", "seed": "seed"}
        values = {}
        for pair in filter(None, text.split(",")):
            key, _, value = pair.partition("=")
            if key not in keys:
                raise ValueError(f"unknown straggler setting {key!r}: use "
                                 f"{', '.join(k + '=' for k in keys)}")
            values[keys[key]] = int(value) if key == "seed" else float(value)
        settings = cls(**values)
        if settings.mean_gap <= 0 or settings.mean_seconds <= 0:
            raise ValueError("straggler gap= and seconds= must be positive")
        if not (0 < settings.cpu_factor <= 1 and 0 < settings.link_factor <= 1):
            raise ValueError("straggler cpu= and link= are fractions in (0, 1]")
        return settings


@dataclass(frozen=True)
class Spell:
    """One host slowed: from `start` seconds after the job began, for `seconds`."""

    host: int
    kind: str
    start: float
    seconds: float
    factor: float


def spells(settings, host, kinds=KINDS):
    """The endless, seeded sequence of spells of one host."""
    rng = np.random.default_rng([settings.seed, host])
    clock = 0.0
    while True:
        clock += rng.exponential(settings.mean_gap)
        kind = kinds[rng.integers(len(kinds))]
        length = rng.exponential(settings.mean_seconds)
        factor = settings.cpu_factor if kind == "cpu" else settings.link_factor
        yield Spell(host, kind, clock, length, factor)
        clock += length


class Slowdowns:
    """Applies the spells of every worker host to a running test bed, and logs each one.

    Parameters
    ----------
    bed : Testbed
        The running test bed (its cgroups and network are changed, then restored).
    settings : SpellSettings
    log_path : path
        A JSON line per spell start and end.
    """

    def __init__(self, bed, settings, log_path):
        self.bed = bed
        self.settings = settings
        self.log_path = log_path
        self.stop_event = threading.Event()
        self.applied = []
        self.threads = []

    def _kinds(self, host):
        spec = self.bed.specs[host]
        return KINDS if spec.rate_bits is not None else ("cpu",)

    def _slow(self, spell, on):
        spec = self.bed.specs[spell.host]
        factor = spell.factor if on else 1.0
        if spell.kind == "cpu":
            share = (spec.cpu if spec.cpu is not None else 1.0) * factor
            self.bed.cgroups[spell.host].set_cpu(share if on or spec.cpu else None,
                                                 self.bed.cpu_period_us)
        else:
            self.bed.network.set_rate(spell.host, int(spec.rate_bits * factor))

    def _host_loop(self, host, started, log):
        for spell in spells(self.settings, host, self._kinds(host)):
            for on, at in ((True, spell.start), (False, spell.start + spell.seconds)):
                if self.stop_event.wait(max(0.0, started + at - time.monotonic())):
                    if not on:
                        self._slow(spell, False)
                    return
                self._slow(spell, on)
                with self.lock:
                    log.write(json.dumps({"event": "start" if on else "end",
                                          "at": round(time.monotonic() - started, 3),
                                          **asdict(spell)}) + "\n")
                    log.flush()
                    if on:
                        self.applied.append(spell)

    def __enter__(self):
        self.lock = threading.Lock()
        self.log = open(self.log_path, "w")
        started = time.monotonic()
        for host in range(1, len(self.bed.specs)):
            thread = threading.Thread(target=self._host_loop, args=(host, started, self.log),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for thread in self.threads:
            thread.join()
        self.log.close()
        return False
