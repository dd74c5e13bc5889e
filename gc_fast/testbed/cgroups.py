"""CPU and memory caps for emulated hosts: one cgroup per host, cgroup v1 or v2.

The launcher wrapper (``gc_fast.testbed.enter``) writes its own pid into a host's cgroups (the
files ``HostCgroup.procs_files`` names) before it enters the host's network namespace, so every
process of the host inherits the caps.
"""
import os
import signal
import time
from pathlib import Path

CONTROLLERS = ("cpu", "memory")


class CgroupError(RuntimeError):
    """The cgroup hierarchy cannot give a host its caps."""


def _mounts():
    """{controller: (mount point, version)} for the cpu and memory controllers."""
    found = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        kind, mount_point, options = fields[separator + 1], fields[4], fields[separator + 3]
        if kind == "cgroup":
            for controller in CONTROLLERS:
                if controller in options.split(",") and controller not in found:
                    found[controller] = (Path(mount_point), 1)
        elif kind == "cgroup2":
            available = Path(mount_point, "cgroup.controllers")
            names = available.read_text().split() if available.exists() else []
            for controller in CONTROLLERS:
                if controller in names:
                    found.setdefault(controller, (Path(mount_point), 2))
    return found


def _own_path(controller, version):
    """This process's cgroup path for `controller`, from /proc/self/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (version == 2 and names == "") or controller in names.split(","):
            return path.lstrip("/")
    return ""


class Hierarchy:
    """Where a test bed's cgroups live: one directory per controller (one in all for v2)."""

    def __init__(self, name, create=True):
        self.version, self.roots = self.locate(name, with_version=True)
        if create:
            for root in self.roots:
                root.mkdir(exist_ok=True)
                if self.version == 2:
                    _write(root / "cgroup.subtree_control", "+cpu +memory")

    @staticmethod
    def locate(name, with_version=False):
        """The directories a hierarchy called `name` has (or would have), under this process's
        own cgroups."""
        mounts = _mounts()
        missing = [c for c in CONTROLLERS if c not in mounts]
        if missing:
            raise CgroupError(f"no cgroup controller for {', '.join(missing)}: mount the cpu and "
                              "memory cgroup controllers (v1 or v2)")
        roots = []
        for controller in CONTROLLERS:
            mount_point, version = mounts[controller]
            parent = mount_point / _own_path(controller, version)
            root = (parent if parent.is_dir() else mount_point) / name
            if root not in roots:
                roots.append(root)
        return (mounts["cpu"][1], roots) if with_version else roots

    def host(self, name):
        """The cgroup of one host (created)."""
        return HostCgroup([root / name for root in self.roots], self.version)

    def remove(self):
        """Kill what is left in every host cgroup and remove them all."""
        for root in self.roots:
            if root.is_dir():
                for child in root.iterdir():
                    if child.is_dir():
                        HostCgroup([child], self.version).remove()
                _rmdir(root)


class HostCgroup:
    """The caps and processes of one emulated host."""

    def __init__(self, directories, version):
        self.directories = directories
        self.version = version
        for directory in directories:
            directory.mkdir(exist_ok=True)

    def _file(self, v1_name, v2_name):
        for directory in self.directories:
            path = directory / (v2_name if self.version == 2 else v1_name)
            if path.exists():
                return path
        raise CgroupError(f"{v2_name if self.version == 2 else v1_name} missing under "
                          f"{self.directories[0]}")

    def set_cpu(self, share, period_us):
        """Cap the host at `share` of one core (None: no cap), enforced every `period_us`."""
        quota = -1 if share is None else max(1000, round(share * period_us))
        if self.version == 2:
            _write(self._file("", "cpu.max"), f"{'max' if quota < 0 else quota} {period_us}")
        else:
            _write(self._file("cpu.cfs_period_us", ""), str(period_us))
            _write(self._file("cpu.cfs_quota_us", ""), str(quota))

    def set_memory(self, limit):
        """Cap the host's memory at `limit` bytes, swap included (None: no cap)."""
        if self.version == 2:
            _write(self._file("", "memory.max"), "max" if limit is None else str(limit))
            swap = self.directories[0] / "memory.swap.max"
            if swap.exists():
                _write(swap, "max" if limit is None else "0")
            return
        value = "-1" if limit is None else str(limit)
        _write(self._file("memory.limit_in_bytes", ""), value)
        swap = next((d / "memory.memsw.limit_in_bytes" for d in self.directories
                     if (d / "memory.memsw.limit_in_bytes").exists()), None)
        if swap is not None:
            _write(swap, value)

    def peak_memory(self):
        """The most memory the host has used, bytes (None where the kernel does not say)."""
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            for directory in self.directories:
                if (directory / name).exists():
                    return int((directory / name).read_text().split()[0])
        return None

    def memory_usage(self):
        """(bytes the host uses now, of which anonymous memory: the processes' own, not the
        page cache), from memory.current / memory.usage_in_bytes and memory.stat; None where the
        kernel does not say."""
        current = anon = None
        for directory in self.directories:
            for name in ("memory.current", "memory.usage_in_bytes"):
                if current is None and (directory / name).exists():
                    current = int((directory / name).read_text().split()[0])
            if anon is None and (directory / "memory.stat").exists():
                stat = dict(line.split()[:2] for line in
                            (directory / "memory.stat").read_text().splitlines()
                            if len(line.split()) >= 2)
                key = "anon" if self.version == 2 else "total_rss"
                anon = int(stat[key]) if key in stat else (int(stat["rss"]) if "rss" in stat
                                                           else None)
        return current, anon

    def oom_kills(self):
        """How many processes the memory cap has killed on this host."""
        for name in ("memory.events", "memory.oom_control"):
            for directory in self.directories:
                if (directory / name).exists():
                    for line in (directory / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
        return 0

    def procs_files(self):
        """The files a process writes its pid into to join this host."""
        return [str(d / "cgroup.procs") for d in self.directories]

    def pids(self):
        """Processes now in the host."""
        found = set()
        for directory in self.directories:
            procs = directory / "cgroup.procs"
            if procs.exists():
                found.update(int(p) for p in procs.read_text().split())
        return found

    def kill(self, timeout=5.0):
        """SIGKILL every process of the host; True once none is left."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self):
        """Kill the host's processes and remove its cgroups."""
        self.kill()
        for directory in self.directories:
            _rmdir(directory)


def _write(path, text):
    try:
        Path(path).write_text(text)
    except OSError as error:
        raise CgroupError(f"cannot write {text!r} to {path}: {error.strerror}") from None


def _rmdir(path):
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
    raise CgroupError(f"cannot remove cgroup {path}: processes are still in it")
