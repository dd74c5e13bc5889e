"""Turn this machine into a small emulated cluster and run one MPI job across it.

    python -m gc_fast.testbed --hosts 9 [--profile t2.micro] [options] -- COMMAND [ARGS...]

COMMAND runs once per host (rank 0, the master, on host 0) under MPI's own launcher, TCP
between hosts. Every host is a network namespace on a shared bridge, its link shaped each way,
its CPU and memory capped by cgroups. Everything is torn down when the job ends, fails or is
interrupted. Needs root. Exit status: the job's; 2 for bad options or a machine that cannot
host a test bed; 124 when the job ran past --timeout (then killed, the hosts still running named).

Faults: --link-down and --flap take hosts' links down and up while the job runs (a pulled cable:
every frame dropped, TCP retransmits); --natural-stragglers slows random worker hosts.
"""
import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from . import faults as link_faults
from .cluster import NETMODS, Testbed, TestbedUnavailable
from .hosts import PROFILES, host_specs, parse_size
from .monitor import MemoryMonitor
from .slowdowns import Slowdowns, SpellSettings

TIMED_OUT = 124  # exit status when the job ran past --timeout, as timeout(1)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(f"{message} (see python -m gc_fast.testbed --help)")


def build_parser():
    parser = _Parser(prog="python -m gc_fast.testbed", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--hosts", type=int, required=True, help="hosts, one rank each (host 0: the master)")
    add("--profile", choices=sorted(PROFILES), default="t2.micro",
        help="host shapes (default t2.micro: master 1 core, 1gbit; workers 12%% of a core, "
             "100mbit, 1 GiB)")
    add("--master", default="", metavar="SETTINGS",
        help="the master's host: cpu=SHARE,rate=RATE,memory=SIZE (each optional, 'none' for "
             "no cap), e.g. cpu=1,rate=1gbit")
    add("--worker", default="", metavar="SETTINGS", help="every worker's host, as --master")
    add("--host", action="append", default=[], metavar="I:SETTINGS",
        help="one host's settings, e.g. 3:cpu=0.06 for a slower host 3 (repeatable)")
    add("--burst", default=None, help="token-bucket burst of every link (default: the "
        "profile's, 32k)")
    add("--mtu", type=int, default=None,
        help="MTU of every link (default: the profile's; t2.micro 9001, as in an AWS VPC)")
    add("--cpu-period-ms", type=float, default=10.0,
        help="period over which CPU quotas are enforced (default 10 ms)")
    add("--latency-ms", type=float, default=None,
        help="added one-way latency per link (needs netem in the kernel)")
    add("--netmod", choices=NETMODS, default="ofi",
        help="MPICH's network module, on TCP either way (default ofi)")
    add("--natural-stragglers", nargs="?", const="", default=None, metavar="SETTINGS",
        help="slow random worker hosts for random spells: gap=10,seconds=2,cpu=0.1,link=0.1,"
             "seed=0 (means in seconds; fractions of the host's CPU share or link rate kept)")
    add("--straggler-log", type=Path, default=None,
        help="where the natural stragglers' spells are logged, a JSON line each "
             "(default: testbed-stragglers.jsonl in the temporary folder)")
    add("--link-down", action="append", default=[], metavar="HOST:AT:SECONDS",
        help="take a host's link down AT seconds after the launch (or --fault-clock), for "
             "SECONDS (a pulled cable: every frame dropped, TCP retransmits), e.g. 2:10:3 or "
             "h2:10:3 (repeatable)")
    add("--flap", action="append", default=[], metavar="HOST:AT:PERIOD:DURATION",
        help="a flapping link: from AT seconds after the launch (or --fault-clock), down PERIOD "
             "seconds, up PERIOD seconds, ... for DURATION seconds, e.g. 2:10:1:30 (repeatable)")
    add("--fault-clock", type=Path, default=None, metavar="PATH",
        help="count the link faults' AT from when PATH first exists (e.g. the trainer's "
             "--checkpoint, written every --checkpoint-every iterations) instead of the launch")
    add("--fault-log", type=Path, default=None,
        help="where the link changes are logged, a JSON line each (default: "
             "testbed-link-faults.jsonl in the temporary folder)")
    add("--memory-log", type=Path, default=None, metavar="PATH",
        help="sample every host's memory (its cgroup's usage and anonymous memory) every "
             "--memory-every seconds into PATH, a JSON line each")
    add("--memory-every", type=float, default=1.0, metavar="SECONDS",
        help="seconds between memory samples (default 1)")
    add("--timeout", type=float, default=None, metavar="SECONDS",
        help="kill the job if it runs longer, name the hosts still running, exit 124")
    add("--report", type=Path, default=None,
        help="write the hosts, their peak memory, the spells, the link faults applied and the "
             "memory samples' summary as JSON")
    add("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]: run on every host")
    return parser


def parse(argv):
    args = build_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ValueError("no command: write -- COMMAND [ARGS...] after the options")
    args.command = command
    host_specs(PROFILES[args.profile], args.hosts, args.master, args.worker, args.host)
    args.options = {"cpu_period_us": round(args.cpu_period_ms * 1000),
                    "latency_ms": args.latency_ms, "netmod": args.netmod}
    if args.burst is not None:
        args.options["burst_bytes"] = parse_size(args.burst)
    if args.mtu is not None:
        if not 576 <= args.mtu <= 65535:
            raise ValueError(f"--mtu {args.mtu}: choose 576 to 65535")
        args.options["mtu"] = args.mtu
    args.spells = (None if args.natural_stragglers is None
                   else SpellSettings.parse(args.natural_stragglers))
    args.faults = link_faults.parse_all(args.link_down, args.flap, args.hosts)
    if args.cpu_period_ms < 1:
        raise ValueError("--cpu-period-ms must be at least 1")
    if not args.memory_every > 0:
        raise ValueError("--memory-every must be a positive number of seconds")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError("--timeout must be a positive number of seconds")
    return args


def describe(bed):
    """One line: the hosts and how their ranks talk."""
    def host(spec):
        cpu = "no CPU cap" if spec.cpu is None else f"{spec.cpu:g} of a core"
        rate = "unshaped" if spec.rate_bits is None else f"{spec.rate_bits / 1e6:g} Mbit/s"
        memory = "" if spec.memory_bytes is None else f", {spec.memory_bytes / 2**20:g} MiB"
        return f"{cpu}, {rate}{memory}"
    workers = sorted({host(s) for s in bed.specs[1:]})
    transport = "Open MPI tcp" if bed.family == "openmpi" else f"MPICH {bed.netmod} over tcp"
    return (f"gc_fast.testbed: {len(bed.specs)} hosts on {bed.addresses[0]}/24: master "
            f"{host(bed.specs[0])}; workers {' | '.join(workers)}; {transport}")


def report(bed, spells, path, faults=None, memory=None, timed_out=None):
    hosts = [{"name": f"h{i}", "address": bed.addresses[i], "cpu": spec.cpu,
              "rate_bits": spec.rate_bits, "memory_bytes": spec.memory_bytes,
              "peak_memory_bytes": bed.cgroups[i].peak_memory()}
             for i, spec in enumerate(bed.specs)]
    path.write_text(json.dumps({"hosts": hosts, "out_of_memory": bed.out_of_memory(),
                                "spells": [vars(s) for s in spells],
                                "link_faults": [] if faults is None else faults.events,
                                "memory": None if memory is None else memory.summary(),
                                "timed_out_hosts": timed_out},
                               indent=1))


def still_running(bed):
    """Names of the hosts on which some process of the job is left."""
    return [f"h{i}" for i, cgroup in enumerate(bed.cgroups) if cgroup.pids()]


def wait(job, bed, timeout):
    """Wait for the job; past `timeout` seconds kill it: the hosts that were still running, or
    None if it ended in time."""
    try:
        job.wait(timeout)
        return None
    except subprocess.TimeoutExpired:
        hosts = still_running(bed)
        bed.kill_jobs()
        return hosts


def _interrupter(owner):
    """A handler that turns SIGTERM and SIGHUP into KeyboardInterrupt in this process only:
    helpers that pyroute2 forks inherit it and must still die as SIGTERM means."""
    def interrupt(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        raise KeyboardInterrupt
    return interrupt


def main(argv=None):
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        print(f"gc_fast.testbed: error: {error}", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupter(os.getpid()))
    applied, faults, memory = [], None, None
    try:
        with Testbed.from_profile(args.profile, args.hosts, args.master, args.worker,
                                  args.host, **args.options) as bed:
            print(describe(bed), file=sys.stderr, flush=True)
            job = bed.popen(args.command)
            with contextlib.ExitStack() as stack:
                if args.memory_log is not None:
                    memory = stack.enter_context(MemoryMonitor(bed, args.memory_every,
                                                               args.memory_log))
                if args.faults:
                    fault_log = args.fault_log or Path(tempfile.gettempdir(),
                                                       "testbed-link-faults.jsonl")
                    faults = stack.enter_context(
                        link_faults.LinkFaults(bed, args.faults, fault_log, args.fault_clock))
                if args.spells is not None:
                    log = args.straggler_log or Path(tempfile.gettempdir(),
                                                     "testbed-stragglers.jsonl")
                    slowdowns = stack.enter_context(Slowdowns(bed, args.spells, log))
                timed_out = wait(job, bed, args.timeout)
            if timed_out is not None:
                print(f"gc_fast.testbed: the job ran past --timeout {args.timeout:g} s; still "
                      f"running on {', '.join(timed_out) or 'no host'}: killed",
                      file=sys.stderr)
            if faults is not None:
                print(f"gc_fast.testbed: link faults: {faults.describe()}, logged in "
                      f"{fault_log}", file=sys.stderr)
            if args.spells is not None:
                applied = slowdowns.applied
                print(f"gc_fast.testbed: natural stragglers: {len(applied)} spells "
                      f"({sum(s.kind == 'cpu' for s in applied)} cpu, "
                      f"{sum(s.kind == 'link' for s in applied)} link), logged in {log}",
                      file=sys.stderr)
            for name in bed.out_of_memory():
                print(f"gc_fast.testbed: host {name} ran out of memory: its cap killed a rank, "
                      "as on a real machine (raise it with --worker memory=SIZE)",
                      file=sys.stderr)
            if args.report:
                report(bed, applied, args.report, faults, memory, timed_out)
            code = TIMED_OUT if timed_out is not None else job.returncode
    except TestbedUnavailable as error:
        print(f"gc_fast.testbed: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gc_fast.testbed: interrupted; the test bed is torn down", file=sys.stderr)
        return 130
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
