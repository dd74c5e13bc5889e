"""The emulated cluster: network namespaces with shaped links and capped CPU and memory.

``python -m gc_fast.testbed --hosts 9 -- python -m gc_fast.train ...`` runs an MPI job with one
rank per emulated host, started by MPI's own launcher, TCP between hosts. From Python::

    from gc_fast.testbed import PROFILES, Testbed, host_specs
    with Testbed(host_specs(PROFILES["t2.micro"], 3)) as bed:
        bed.run(["python", "-m", "gc_fast.train"])
"""
from .cluster import Testbed, TestbedUnavailable, sweep
from .faults import LinkFault, LinkFaults
from .hosts import PROFILES, HostSpec, Profile, host_specs
from .monitor import MemoryMonitor

__all__ = ["PROFILES", "HostSpec", "LinkFault", "LinkFaults", "MemoryMonitor", "Profile",
           "Testbed", "TestbedUnavailable", "host_specs", "sweep"]
