"""Every host's memory over time: its cgroup's usage and anonymous memory, sampled while a job runs.

A JSON line per sample: {"at": seconds after the launch, "current": [bytes per host, host 0
first], "anon": [...]}. "current" is what the cgroup is charged (page cache included, as the
memory cap counts it); "anon" is the processes' own memory, the part a leak grows.
"""
import json
import threading
import time


class MemoryMonitor:
    """Samples every host's memory every `every` seconds while the context is open.

    Parameters
    ----------
    bed : Testbed
        The running test bed.
    every : float
        Seconds between samples.
    log_path : path or None
        Where the samples go, a JSON line each (they are also kept in `samples`).
    """

    def __init__(self, bed, every=1.0, log_path=None):
        if not every > 0:
            raise ValueError(f"memory samples need a positive interval, got {every}")
        self.cgroups = bed.cgroups
        self.every = every
        self.log_path = log_path
        self.samples = []
        self.stop_event = threading.Event()
        self.thread = None
        self.log = None
        self.started = None

    def sample(self):
        """One sample now (also logged and kept)."""
        usage = [cgroup.memory_usage() for cgroup in self.cgroups]
        entry = {"at": round(time.monotonic() - self.started, 3),
                 "current": [current for current, _ in usage],
                 "anon": [anon for _, anon in usage]}
        self.samples.append(entry)
        if self.log is not None:
            self.log.write(json.dumps(entry) + "\n")
            self.log.flush()
        return entry

    def _loop(self):
        while True:
            self.sample()
            if self.stop_event.wait(self.every):
                return

    def __enter__(self):
        self.log = open(self.log_path, "w") if self.log_path is not None else None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()
        if self.log is not None:
            self.log.close()
        return False

    def summary(self):
        """Per host: the first, last, lowest and highest sampled usage and anonymous memory."""
        hosts = []
        for index in range(len(self.cgroups)):
            entry = {"name": f"h{index}", "samples": len(self.samples)}
            for key in ("current", "anon"):
                values = [s[key][index] for s in self.samples if s[key][index] is not None]
                if values:
                    entry[key] = {"first": values[0], "last": values[-1], "min": min(values),
                                  "max": max(values)}
            hosts.append(entry)
        return hosts
