"""Network faults: hosts' links taken down and brought back at chosen times while a job runs.

A link that goes down is a pulled cable or a switch port that fails: the bridge's end of the
host's veth goes down, every frame to or from the host is dropped, and the host keeps its address,
its routes and its shaping, so when the link comes back nothing has to be set up again. TCP
retransmits what was lost; the job sees a host that went silent for a while.

Schedules are given as ``HOST:AT:SECONDS`` (one outage: down AT seconds after the job started, for
SECONDS) or ``HOST:AT:PERIOD:DURATION`` (a flapping link: from AT, down for PERIOD seconds, up for
PERIOD seconds, and so on for DURATION seconds, up at the end). HOST is a host's number or name
(``2`` or ``h2``). AT counts from the launch, or from when a file first exists (``clock``: e.g.
the trainer's --checkpoint, written every --checkpoint-every iterations, so that a fault meets the
training loop and not the set-up). Each change is logged when it is made, a JSON line each.
"""
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass

CLOCK_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class LinkFault:
    """Host `host`'s link down from `start` seconds after the job began, for `seconds`."""

    host: int
    start: float
    seconds: float
    kind: str = "down"  # "down": one outage; "flap": one of a flapping link's outages


def _host(text, n_hosts):
    name = text[1:] if text.startswith("h") else text
    if not name.isdigit() or not 0 <= int(name) < n_hosts:
        raise ValueError(f"host {text!r}: name a host 0..{n_hosts - 1} (or h0..h{n_hosts - 1})")
    return int(name)


def _seconds(text, what, spec, positive=True):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{spec!r}: {what} must be a {'positive' if positive else 'non-negative'}"
                         " number of seconds")
    return value


def parse_link_down(spec, n_hosts):
    """[LinkFault] from 'HOST:AT:SECONDS' (--link-down)."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"--link-down {spec!r}: write HOST:AT:SECONDS, e.g. 2:10:3")
    return [LinkFault(_host(parts[0], n_hosts), _seconds(parts[1], "AT", spec, positive=False),
                      _seconds(parts[2], "SECONDS", spec))]


def parse_flap(spec, n_hosts):
    """[LinkFault] of a flapping link from 'HOST:AT:PERIOD:DURATION' (--flap): down PERIOD
    seconds, up PERIOD seconds, ... from AT for DURATION seconds."""
    parts = spec.split(":")
    if len(parts) != 4:
        raise ValueError(f"--flap {spec!r}: write HOST:AT:PERIOD:DURATION, e.g. 2:10:1:30")
    host = _host(parts[0], n_hosts)
    at = _seconds(parts[1], "AT", spec, positive=False)
    period = _seconds(parts[2], "PERIOD", spec)
    duration = _seconds(parts[3], "DURATION", spec)
    faults, offset = [], 0.0
    while offset < duration:
        faults.append(LinkFault(host, at + offset, min(period, duration - offset), "flap"))
        offset += 2 * period
    return faults


def schedule(faults):
    """The link changes of `faults`, in time order: (seconds after the start, host, up, fault);
    at one instant a link comes up before it goes down again."""
    events = []
    for fault in faults:
        events.append((fault.start, fault.host, False, fault))
        events.append((fault.start + fault.seconds, fault.host, True, fault))
    return sorted(events, key=lambda e: (e[0], not e[2], e[1]))


class LinkFaults:
    """Applies a schedule of link faults to a running test bed, and logs each change.

    Overlapping outages of one host merge: its link is down while any of them lasts. On exit
    (the job has ended, or the test bed is torn down) every link still down is brought back up.

    Parameters
    ----------
    bed : Testbed
        The running test bed.
    faults : list of LinkFault
    log_path : path or None
        A JSON line per change: {"event": "down" | "up", "at": seconds after the clock started
        (as applied), "after_launch": seconds after the context opened, "host", "start",
        "seconds", "kind"}.
    clock : path or None
        Count the faults' times from when this file first exists (None: from the launch, when
        the context opens). If it never appears, no fault is applied.
    network : object with set_link(host, up), optional
        What takes the links down (default: the test bed's network).
    """

    def __init__(self, bed, faults, log_path=None, clock=None, network=None):
        self.network = network if network is not None else bed.network
        self.faults = list(faults)
        self.log_path = log_path
        self.clock = clock
        self.launched = None
        self.stop_event = threading.Event()
        self.applied = []  # the faults whose outage began
        self.events = []  # what the log holds, as dicts
        self.down = {}  # host -> outages now under way
        self.thread = None
        self.log = None
        self.started = None

    def _record(self, event, host, fault, **extra):
        now = time.monotonic()
        entry = {"event": event, "at": round(now - self.started, 3),
                 "after_launch": round(now - self.launched, 3), "host": host,
                 "start": fault.start, "seconds": fault.seconds, "kind": fault.kind, **extra}
        self.events.append(entry)
        if self.log is not None:
            self.log.write(json.dumps(entry) + "\n")
            self.log.flush()

    def _change(self, host, up, fault):
        count = self.down.get(host, 0) + (-1 if up else 1)
        self.down[host] = count
        if up and count == 0 or not up and count == 1:
            self.network.set_link(host, up)
            self._record("up" if up else "down", host, fault)
        if not up:
            self.applied.append(fault)

    def _loop(self):
        if self.clock is not None:
            while not os.path.exists(self.clock):
                if self.stop_event.wait(CLOCK_POLL_SECONDS):
                    return
            self.started = time.monotonic()
        for at, host, up, fault in schedule(self.faults):
            if self.stop_event.wait(max(0.0, self.started + at - time.monotonic())):
                return
            self._change(host, up, fault)

    def __enter__(self):
        self.log = open(self.log_path, "w") if self.log_path is not None else None
        self.launched = self.started = time.monotonic()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()
        last = {f.host: f for f in self.applied}
        for host, count in sorted(self.down.items()):
            if count > 0:
                self.down[host] = 0
                try:
                    self.network.set_link(host, True)
                except Exception:  # noqa: BLE001 - teardown deletes the link anyway
                    continue
                self._record("up", host, last[host], cut_short=True)
        if self.log is not None:
            self.log.close()
        return False

    def seconds_down(self):
        """{host: seconds its link was down}, as applied (outages cut short by the job's end
        count as long as they lasted)."""
        down, total = {}, {}
        for event in self.events:
            if event["event"] == "down":
                down[event["host"]] = event["at"]
            elif event["host"] in down:
                total[event["host"]] = (total.get(event["host"], 0.0) + event["at"]
                                        - down.pop(event["host"]))
        return total

    def describe(self):
        """One line: the outages applied, per host."""
        hosts = sorted({f.host for f in self.applied})
        seconds = sum(self.seconds_down().values())
        cut = sum(bool(e.get("cut_short")) for e in self.events)
        return (f"{len(self.applied)} link outages ({seconds:.1f} s down in all"
                f"{f', {cut} cut short by the end of the job' if cut else ''}) on "
                f"{', '.join(f'h{h}' for h in hosts) or 'no host'}")


def parse_all(link_down, flap, n_hosts):
    """Every fault of the --link-down and --flap options."""
    faults = []
    for spec in link_down:
        faults += parse_link_down(spec, n_hosts)
    for spec in flap:
        faults += parse_flap(spec, n_hosts)
    return faults


def as_dicts(faults):
    """The faults as JSON-ready dicts."""
    return [asdict(f) for f in faults]
