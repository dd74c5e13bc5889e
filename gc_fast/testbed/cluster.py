"""The test bed: build the emulated hosts, run an MPI job across them, always tear them down.

One rank per host, rank 0 on host 0. The job is started by MPI's own launcher with a host list:
Hydra's ``-launcher ssh -launcher-exec WRAPPER`` (MPICH) or PRRTE's ``plm_ssh_agent``
(Open MPI), the wrapper entering a host instead of logging into it. Messages go over TCP
between hosts: MPICH through OFI's tcp provider (or UCX with ``UCX_TLS=tcp,self``), Open MPI
through its tcp BTL, never through the shared memory that the namespaces still share.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..launch import mpiexec, single_thread_environment
from . import enter, network
from .cgroups import CgroupError, Hierarchy
from .hosts import PROFILES, host_specs
from .network import HOST_INTERFACE, NetworkError

CGROUP_PREFIX = "gc_fast-tb"
RUN_DIRECTORY_PREFIX = "gc_fast-testbed-"
NETMODS = ("ofi", "ucx")


class TestbedUnavailable(RuntimeError):
    """This machine cannot host a test bed (not root, no namespaces, no cgroups, no pyroute2)."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(keep=()):
    """Remove what test beds whose owner process has died left behind; return their ids."""
    ids = set(network.leftover_ids())
    for root in _cgroup_roots():
        ids.update(int(p.name[len(CGROUP_PREFIX):]) for p in root.glob(f"{CGROUP_PREFIX}*")
                   if p.name[len(CGROUP_PREFIX):].isdigit())
    stale = {i for i in ids if i not in keep and not _alive(i)}
    for bed_id in stale:
        _remove(bed_id)
    return stale


def _cgroup_roots():
    try:
        return list({root.parent for root in Hierarchy.locate(f"{CGROUP_PREFIX}0")})
    except CgroupError:
        return []


def _remove(bed_id):
    """Kill every process of test bed `bed_id` and delete its cgroups, network and files."""
    errors = []
    try:
        Hierarchy(f"{CGROUP_PREFIX}{bed_id}", create=False).remove()
    except CgroupError as error:
        errors.append(str(error))
    try:
        network.remove(bed_id)
    except (NetworkError, OSError) as error:
        errors.append(str(error))
    shutil.rmtree(Path(tempfile.gettempdir(), f"{RUN_DIRECTORY_PREFIX}{bed_id}"),
                  ignore_errors=True)
    return errors


def mpi_family(executable):
    """'openmpi' or 'mpich', from what `executable --version` prints."""
    try:
        text = subprocess.run([executable, "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "mpich"
    return "openmpi" if ("Open MPI" in text or "PRRTE" in text or "OpenRTE" in text) else "mpich"


class Testbed:
    """An emulated cluster on this machine, as a context manager.

    Parameters
    ----------
    specs : list of HostSpec
        One per host; host 0 runs rank 0 (the master).
    burst_bytes : int
        The token-bucket burst of every shaped link.
    mtu : int
        Every link's MTU.
    cpu_period_us : int
        The CPU quota's enforcement period.
    latency_ms : float or None
        Added one-way latency on every host's link; needs netem in the kernel.
    netmod : {'ofi', 'ucx'}
        MPICH's network module, forced onto TCP either way.
    bed_id : int or None
        Names the namespaces, bridge and cgroups (default: this process's pid).
    """

    def __init__(self, specs, burst_bytes=32 * 1024, cpu_period_us=10_000, latency_ms=None,
                 netmod="ofi", bed_id=None, mtu=1500):
        if netmod not in NETMODS:
            raise ValueError(f"netmod {netmod!r}: choose one of {', '.join(NETMODS)}")
        self.specs = list(specs)
        self.burst_bytes = burst_bytes
        self.mtu = mtu
        self.cpu_period_us = cpu_period_us
        self.latency_ms = latency_ms
        self.netmod = netmod
        self.bed_id = os.getpid() if bed_id is None else bed_id
        self.network = None
        self.cgroups = []
        self.hierarchy = None
        self.directory = None
        self.jobs = []
        self.mpiexec = mpiexec()
        self.family = mpi_family(self.mpiexec) if self.mpiexec else None

    @classmethod
    def from_profile(cls, profile, n_hosts, master=None, worker=None, overrides=(), **options):
        """A test bed of `n_hosts` shaped by `profile` (a name of PROFILES, or a Profile) and the
        hosts.host_specs settings; `options` as for the constructor (burst and MTU default to
        the profile's)."""
        profile = PROFILES[profile] if isinstance(profile, str) else profile
        options.setdefault("burst_bytes", profile.burst_bytes)
        options.setdefault("mtu", profile.mtu)
        return cls(host_specs(profile, n_hosts, master, worker, overrides), **options)

    @property
    def addresses(self):
        """The hosts' IP addresses, host 0 first."""
        return [network.host_address(self.bed_id, h) for h in range(len(self.specs))]

    def __enter__(self):
        if os.geteuid() != 0:
            raise TestbedUnavailable("the test bed needs root (network namespaces and cgroups): "
                                     "run it as root")
        if self.mpiexec is None:
            raise TestbedUnavailable("no mpiexec found: pip install 'gc_fast[mpi]'")
        try:
            sweep(keep={os.getpid()})
            existing = network.leftover_ids()
        except NetworkError as error:
            raise TestbedUnavailable(str(error)) from None
        if self.bed_id in existing:
            raise TestbedUnavailable(f"test bed {self.bed_id} already exists: pass another id")
        try:
            self._build()
        except (NetworkError, CgroupError, OSError) as error:
            self.close()
            raise TestbedUnavailable(f"cannot build the test bed: {error}") from None
        except BaseException:
            self.close()
            raise
        return self

    def _build(self):
        self.directory = Path(tempfile.gettempdir(), f"{RUN_DIRECTORY_PREFIX}{self.bed_id}")
        self.directory.mkdir(exist_ok=True)
        self.network = network.Network(self.bed_id)
        self.hierarchy = Hierarchy(f"{CGROUP_PREFIX}{self.bed_id}")
        hosts = {}
        for index, spec in enumerate(self.specs):
            self.network.add_host(index, spec.rate_bits, self.burst_bytes, self.mtu)
            cgroup = self.hierarchy.host(f"h{index}")
            cgroup.set_cpu(spec.cpu, self.cpu_period_us)
            cgroup.set_memory(spec.memory_bytes)
            self.cgroups.append(cgroup)
            hosts[self.addresses[index]] = {
                "name": f"h{index}", "procs_files": cgroup.procs_files(),
                "netns_path": f"/run/netns/{network.namespace_name(self.bed_id, index)}"}
        if self.latency_ms:
            if not network.netem_available(self.bed_id):
                raise TestbedUnavailable("this kernel has no netem (sch_netem): links cannot get "
                                         "added latency here; drop --latency-ms")
            for index in range(len(self.specs)):
                network.add_latency(self.bed_id, index, self.latency_ms)
        state = self.directory / "hosts.json"
        state.write_text(json.dumps({"hosts": hosts}))
        self.wrapper = self.directory / "enter"
        self.wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {enter.__file__} {state} "
                                "\"$@\"\n")
        self.wrapper.chmod(0o755)

    def command(self, argv, n_ranks=None):
        """The mpiexec command line that runs `argv` with one rank per host."""
        n_ranks = len(self.specs) if n_ranks is None else n_ranks
        hosts = ",".join(f"{a}:1" for a in self.addresses[:n_ranks])
        if self.family == "openmpi":
            subnet = str(network.subnet(self.bed_id))
            return [self.mpiexec, "--host", hosts, "-n", str(n_ranks),
                    "--prtemca", "plm_ssh_agent", str(self.wrapper),
                    "--prtemca", "plm_ssh_no_tree_spawn", "1",
                    "--prtemca", "oob_tcp_if_include", subnet,
                    "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
                    "--mca", "btl_tcp_if_include", subnet, *argv]
        return [self.mpiexec, "-launcher", "ssh", "-launcher-exec", str(self.wrapper),
                "-localhost", network.launcher_address(self.bed_id), "-hosts", hosts,
                "-n", str(n_ranks), *argv]

    def environment(self, base=None):
        """The job's environment: one thread per rank, TCP between hosts."""
        env = single_thread_environment(base)
        if self.family == "openmpi":
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        elif self.netmod == "ofi":
            env.update(MPIR_CVAR_CH4_NETMOD="ofi", FI_PROVIDER="tcp", FI_TCP_IFACE=HOST_INTERFACE)
        else:
            env.update(MPIR_CVAR_CH4_NETMOD="ucx", UCX_TLS="tcp,self",
                       UCX_NET_DEVICES=HOST_INTERFACE)
        return env

    def popen(self, argv, n_ranks=None, env=None, **kwargs):
        """Start `argv` across the hosts; the process is killed at teardown if still running."""
        job = subprocess.Popen(self.command(argv, n_ranks), env=self.environment(env),
                               start_new_session=True, **kwargs)
        self.jobs.append(job)
        return job

    def run(self, argv, n_ranks=None, env=None, timeout=None, capture_output=False, **kwargs):
        """Run `argv` across the hosts to its end; a subprocess.CompletedProcess."""
        if capture_output:
            kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        job = self.popen(argv, n_ranks, env, **kwargs)
        try:
            stdout, stderr = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_jobs()
            stdout, stderr = job.communicate()
            raise subprocess.TimeoutExpired(job.args, timeout, stdout, stderr) from None
        return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)

    def out_of_memory(self):
        """Hosts on which the memory cap has killed a process."""
        return [f"h{i}" for i, cgroup in enumerate(self.cgroups) if cgroup.oom_kills()]

    def kill_jobs(self):
        """Kill every job started on the test bed that is still running (its launcher's whole
        process group); the hosts' processes go at teardown."""
        self._kill_jobs()

    def _kill_jobs(self):
        for job in self.jobs:
            if job.poll() is None:
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                job.wait()

    def close(self):
        """Kill the job and every process on the hosts; delete hosts, links, cgroups, files."""
        self._kill_jobs()
        errors = _remove(self.bed_id)
        if errors:
            raise TestbedUnavailable("test bed teardown incomplete: " + "; ".join(errors))

    def __exit__(self, *exc):
        self.close()
        return False
