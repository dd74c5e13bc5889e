"""The emulated hosts' network: one namespace per host, a veth into a shared bridge, tbf shaping.

Built with pyroute2 (netlink), not by shelling out to ``ip`` and ``tc``. Each host's link is
shaped both ways: a tbf on the host's end (what it sends) and one on the bridge's end (what it
receives). This kernel may lack ``netem``; ``netem_available`` says whether latency can be added.
"""
import errno
import ipaddress

BRIDGE_PREFIX = "gctb"
NAMESPACE_PREFIX = "gc_fast-tb"
HOST_INTERFACE = "eth0"
QUEUE_LATENCY = "200ms"


class NetworkError(RuntimeError):
    """The kernel or netlink refused to build the emulated network."""


def _pyroute2():
    try:
        import pyroute2
    except ImportError:
        raise NetworkError("the test bed needs pyroute2: pip install 'gc_fast[testbed]'") from None
    return pyroute2


def namespace_name(bed_id, host):
    """The network namespace of host `host` of test bed `bed_id`."""
    return f"{NAMESPACE_PREFIX}{bed_id}-h{host}"


def _bridge_name(bed_id):
    return f"{BRIDGE_PREFIX}{bed_id}"


def _veth_name(bed_id, host):
    return f"{BRIDGE_PREFIX}{bed_id}h{host}"


def subnet(bed_id):
    """The /24 of test bed `bed_id`: hosts at .1, .2, ...; the launching node at .254."""
    return ipaddress.ip_network(f"10.213.{bed_id % 250}.0/24")


def host_address(bed_id, host):
    """The IP address of host `host`."""
    return str(subnet(bed_id)[host + 1])


def launcher_address(bed_id):
    """The launching node's address on the bridge (where mpiexec listens for its proxies)."""
    return str(subnet(bed_id)[254])


def _tbf(rate_bits, burst_bytes):
    return dict(rate=f"{rate_bits}bit", burst=burst_bytes, latency=QUEUE_LATENCY)


class Network:
    """The bridge and hosts of one test bed; `remove` undoes everything `add_host` made."""

    def __init__(self, bed_id):
        self.pyroute2 = _pyroute2()
        self.bed_id = bed_id
        self.hosts = []
        self.burst_bytes = {}
        with self.pyroute2.IPRoute() as ipr:
            try:
                ipr.link("add", ifname=_bridge_name(bed_id), kind="bridge")
            except self.pyroute2.NetlinkError as error:
                raise NetworkError(f"cannot create a bridge ({error}): the test bed needs root "
                                   "and network namespaces") from None
            bridge = ipr.link_lookup(ifname=_bridge_name(bed_id))[0]
            ipr.addr("add", index=bridge, address=launcher_address(bed_id),
                     prefixlen=subnet(bed_id).prefixlen)
            ipr.link("set", index=bridge, state="up")

    def add_host(self, host, rate_bits, burst_bytes, mtu=1500):
        """Create host `host`: its namespace, its link into the bridge (of `mtu` bytes), shaped
        to `rate_bits`."""
        netns = self.pyroute2.netns
        name = namespace_name(self.bed_id, host)
        netns.create(name)
        self.hosts.append(host)
        self.burst_bytes[host] = burst_bytes
        with self.pyroute2.IPRoute() as ipr:
            ipr.link("add", ifname=_veth_name(self.bed_id, host), kind="veth",
                     peer={"ifname": HOST_INTERFACE, "net_ns_fd": name})
            outer = ipr.link_lookup(ifname=_veth_name(self.bed_id, host))[0]
            bridge = ipr.link_lookup(ifname=_bridge_name(self.bed_id))[0]
            ipr.link("set", index=outer, master=bridge, mtu=mtu, state="up")
        with self.pyroute2.NetNS(name) as ns:
            inner = ns.link_lookup(ifname=HOST_INTERFACE)[0]
            ns.addr("add", index=inner, address=host_address(self.bed_id, host),
                    prefixlen=subnet(self.bed_id).prefixlen)
            ns.link("set", index=inner, mtu=mtu, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        if rate_bits is not None:
            self.set_rate(host, rate_bits, command="add")

    def set_rate(self, host, rate_bits, command="change"):
        """Shape host `host`'s link to `rate_bits` each way (`command`: 'add' or 'change')."""
        settings = _tbf(rate_bits, self.burst_bytes[host])
        with self.pyroute2.IPRoute() as ipr:
            outer = ipr.link_lookup(ifname=_veth_name(self.bed_id, host))[0]
            ipr.tc(command, "tbf", index=outer, handle="1:", **settings)
        with self.pyroute2.NetNS(namespace_name(self.bed_id, host)) as ns:
            inner = ns.link_lookup(ifname=HOST_INTERFACE)[0]
            ns.tc(command, "tbf", index=inner, handle="1:", **settings)

    def set_link(self, host, up):
        """Take host `host`'s link down (`up` False) or bring it back, as a pulled cable or a
        switch port does: the bridge's end of its veth goes down, so the host loses its carrier
        (its address, routes and shaping stay) and every frame either way is dropped until the
        link is up again. TCP retransmits across the gap."""
        with self.pyroute2.IPRoute() as ipr:
            outer = ipr.link_lookup(ifname=_veth_name(self.bed_id, host))[0]
            ipr.link("set", index=outer, state="up" if up else "down")

    def link_up(self, host):
        """Whether host `host`'s link is up (the bridge's end of its veth)."""
        with self.pyroute2.IPRoute() as ipr:
            outer = ipr.link_lookup(ifname=_veth_name(self.bed_id, host))[0]
            return bool(ipr.get_links(outer)[0]["flags"] & 1)  # IFF_UP

    def remove(self):
        """Delete the hosts' namespaces (their veths go with them) and the bridge."""
        remove(self.bed_id)


def remove(bed_id):
    """Delete whatever network test bed `bed_id` left: namespaces, veths, the bridge."""
    pyroute2 = _pyroute2()
    prefix = f"{NAMESPACE_PREFIX}{bed_id}-"
    for name in pyroute2.netns.listnetns():
        if name.startswith(prefix):
            pyroute2.netns.remove(name)
    with pyroute2.IPRoute() as ipr:
        for link in ipr.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            if ifname == _bridge_name(bed_id) or ifname.startswith(f"{_bridge_name(bed_id)}h"):
                try:
                    ipr.link("del", index=link["index"])
                except pyroute2.NetlinkError as error:
                    if error.code != errno.ENODEV:
                        raise


def leftover_ids():
    """Ids of test beds whose namespaces or bridges still exist."""
    pyroute2 = _pyroute2()
    ids = set()
    for name in pyroute2.netns.listnetns():
        if name.startswith(NAMESPACE_PREFIX):
            ids.add(int(name[len(NAMESPACE_PREFIX):].split("-")[0]))
    with pyroute2.IPRoute() as ipr:
        for link in ipr.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            if ifname.startswith(BRIDGE_PREFIX) and ifname[len(BRIDGE_PREFIX):].split("h")[0]:
                digits = ifname[len(BRIDGE_PREFIX):].split("h")[0]
                if digits.isdigit():
                    ids.add(int(digits))
    return ids


def netem_available(bed_id, host=0):
    """Whether this kernel can add latency (sch_netem), tried on host `host`'s loopback."""
    pyroute2 = _pyroute2()
    with pyroute2.NetNS(namespace_name(bed_id, host)) as ns:
        lo = ns.link_lookup(ifname="lo")[0]
        try:
            ns.tc("add", "netem", index=lo, handle="1:", delay=1000)
        except pyroute2.NetlinkError:
            return False
        ns.tc("del", index=lo, handle="1:")
        return True


def add_latency(bed_id, host, milliseconds):
    """Delay everything host `host` sends by `milliseconds` (needs netem; replaces tbf's root)."""
    pyroute2 = _pyroute2()
    with pyroute2.NetNS(namespace_name(bed_id, host)) as ns:
        inner = ns.link_lookup(ifname=HOST_INTERFACE)[0]
        ns.tc("add", "netem", index=inner, parent="1:1", handle="10:",
              delay=int(milliseconds * 1000))
