"""What each emulated host is: its CPU share, link rate and memory, from a profile and overrides.

A profile gives the master's host and every worker's host the same shape; named hosts may be
made slower (heterogeneous clusters) with ``HostSpec.parse`` overrides such as
``3:cpu=0.06,rate=50mbit``.
"""
from dataclasses import dataclass, replace

MIB = 2**20


@dataclass(frozen=True)
class HostSpec:
    """One emulated machine.

    Attributes
    ----------
    cpu : float or None
        Share of one core (the cgroup CPU quota); None for no cap.
    rate_bits : int or None
        Link rate each way, bits per second; None for an unshaped link.
    memory_bytes : int or None
        Memory cap; a rank above it is killed, as on a VM out of memory. None for no cap.
    """

    cpu: float | None
    rate_bits: int | None
    memory_bytes: int | None

    def override(self, text):
        """This spec with the ``key=value`` pairs of `text` (cpu, rate, memory) replaced."""
        changes = {}
        for pair in filter(None, text.split(",")):
            key, _, value = pair.partition("=")
            if key == "cpu":
                changes["cpu"] = parse_share(value)
            elif key == "rate":
                changes["rate_bits"] = parse_rate(value)
            elif key == "memory":
                changes["memory_bytes"] = parse_size(value)
            else:
                raise ValueError(f"unknown host setting {key!r} in {text!r}: use cpu=, rate=, "
                                 "memory=")
        return replace(self, **changes)


@dataclass(frozen=True)
class Profile:
    """The shape of a cluster: the master's host, every worker's host, the links' token-bucket
    burst and MTU."""

    master: HostSpec
    worker: HostSpec
    burst_bytes: int = 32 * 1024
    mtu: int = 1500


# t2.micro-class workers (one burstable vCPU, scaled so that 8 of them and a 1-core master fit
# this 2-core machine: 12% of a core each; 1 GiB; a 100 Mbit/s link) and a 1-core master on
# 1 Gbit/s; jumbo frames, as in an AWS VPC (MTU 9001).
PROFILES = {
    "t2.micro": Profile(master=HostSpec(cpu=1.0, rate_bits=10**9, memory_bytes=None),
                        worker=HostSpec(cpu=0.12, rate_bits=100 * 10**6,
                                        memory_bytes=1024 * MIB), mtu=9001),
    "unshaped": Profile(master=HostSpec(None, None, None), worker=HostSpec(None, None, None)),
}

_RATE_UNITS = {"gbit": 10**9, "mbit": 10**6, "kbit": 10**3, "bit": 1}
_SIZE_UNITS = {"g": 2**30, "gib": 2**30, "m": MIB, "mib": MIB, "k": 2**10, "kib": 2**10, "": 1}


def parse_rate(text):
    """Bits per second from '100mbit', '1gbit', '500kbit' or 'none'."""
    text = text.strip().lower()
    if text == "none":
        return None
    for unit, scale in _RATE_UNITS.items():
        if text.endswith(unit) and text[: -len(unit)]:
            return _positive(float(text[: -len(unit)]) * scale, text)
    raise ValueError(f"bad link rate {text!r}: write e.g. 100mbit, 1gbit or none")


def parse_size(text):
    """Bytes from '1g', '512m', '300MiB' or 'none'."""
    text = text.strip().lower()
    if text == "none":
        return None
    for unit in sorted(_SIZE_UNITS, key=len, reverse=True):
        number = text[: len(text) - len(unit)] if unit else text
        if text.endswith(unit) and number:
            try:
                return _positive(float(number) * _SIZE_UNITS[unit], text)
            except ValueError:
                continue
    raise ValueError(f"bad memory size {text!r}: write e.g. 1g, 512m or none")


def parse_share(text):
    """A CPU share of one core from '0.12', '12%' or 'none'."""
    text = text.strip().lower()
    if text == "none":
        return None
    share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 < share <= 64:
        raise ValueError(f"bad CPU share {text!r}: a fraction of one core such as 0.12 or 12%")
    return share


def _positive(value, text):
    if value <= 0:
        raise ValueError(f"{text!r} must be positive")
    return int(value)


def host_specs(profile, n_hosts, master=None, worker=None, overrides=()):
    """The spec of each of `n_hosts` hosts: host 0 the master's, then the workers'.

    `master` and `worker` are ``key=value`` texts applied to the profile's specs; `overrides`
    are ``I:key=value,...`` texts for single hosts.
    """
    if n_hosts < 2:
        raise ValueError(f"--hosts {n_hosts}: a test bed needs at least 2 hosts")
    master_spec = profile.master.override(master or "")
    worker_spec = profile.worker.override(worker or "")
    specs = [master_spec] + [worker_spec] * (n_hosts - 1)
    for text in overrides:
        index, sep, settings = text.partition(":")
        if not sep or not index.isdigit() or not int(index) < n_hosts:
            raise ValueError(f"bad --host {text!r}: write I:cpu=0.06,rate=50mbit with "
                             f"0 <= I < {n_hosts}")
        specs[int(index)] = specs[int(index)].override(settings)
    return specs
