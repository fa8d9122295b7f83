"""limits: the kernel's and the process's limits against what HAProxy will ask of them.

HAProxy needs a descriptor per listener, two per connection (client and server side) and a few
of its own (`compute_ideal_maxsock`, src/limits.c in 3.x, haproxy.c in 2.6); without `maxconn`
it derives one from its descriptor limit. Its listen backlog is the frontend's maxconn, which is
the global one (no `backlog` nor frontend `maxconn` is rendered). Each connection to an endpoint
takes a source port per destination, and, when conntrack is loaded, every connection is two
tracked flows. So every check here starts from the maxconn in effect (`maxconn_in_effect`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kube2haproxy.doctor.check import Check, fail, ok, plural, thousands, warn
from kube2haproxy.doctor.host import CAP_SYS_RESOURCE, Host

# HAProxy's descriptors beyond listeners and connections: 10 reserved (`global.maxsock = 10`),
# 3 per thread (a poller and a wake-up pipe: compute_ideal_maxsock), and 12 for its stats
# socket, the master's socket pair, logs: measured 27-28 in all at 2 threads on 2.6.12, 3.0.11
# and 3.4.0 (`show info`: Maxsock - 2 x Maxconn - listeners).
FD_RESERVED = 10
FD_PER_THREAD = 3
FD_SOCKETS = 12
# Without maxconn, 3.x budgets at most this many descriptors (DEFAULT_MAXFD, fd-hard-limit's
# default) and never sets maxconn below 100 (DEFAULT_MAXCONN).
DEFAULT_MAXFD = 1_048_576
DEFAULT_MAXCONN = 100
# What a node that ran kube-proxy was provisioned for: kube-proxy sizes conntrack for
# max(--conntrack-min, --conntrack-max-per-core x CPUs) connections (131072, 32768).
KUBE_PROXY_CONNTRACK_MIN = 131_072
KUBE_PROXY_CONNTRACK_PER_CORE = 32_768
# The most source ports net.ipv4.ip_local_port_range can give (1024-65535).
MOST_PORTS = 65535 - 1024 + 1

NOFILE_FIX = (
    "ulimit -n {n} where HAProxy starts (systemd: LimitNOFILE={n}; a container: its runtime's "
    "nofile limit, e.g. LimitNOFILE= of containerd's unit)"
)


@dataclass(frozen=True, slots=True)
class Demand:
    """What the configured HAProxy will ask for."""

    listeners: int | None  # listening sockets of the model (None: unknown, no -f)
    maxconn: int  # --maxconn; 0: HAProxy derives it from its descriptor limit
    threads: int  # --nbthread, else the CPUs HAProxy may use (its default)

    @property
    def overhead(self) -> int:
        return FD_RESERVED + FD_PER_THREAD * self.threads + FD_SOCKETS

    def fds(self, maxconn: int) -> int:
        """Descriptors HAProxy needs for `maxconn` connections."""
        return (self.listeners or 0) + 2 * maxconn + self.overhead

    def counted(self) -> str:
        if self.listeners is None:
            return "listeners not counted: give -f"
        return f"{plural(self.listeners, 'listener')}"


def maxconn_in_effect(host: Host, demand: Demand) -> int:
    """--maxconn, else what HAProxy derives from its limit: every descriptor it may have (the
    larger of the soft and hard limits, which it raises the soft one to; at most DEFAULT_MAXFD)
    less listeners and its own, halved."""
    if demand.maxconn:
        return demand.maxconn
    budget = min(max(host.nofile), DEFAULT_MAXFD)
    return max((budget - (demand.listeners or 0) - demand.overhead) // 2, DEFAULT_MAXCONN)


def target_maxconn(host: Host) -> int:
    return max(KUBE_PROXY_CONNTRACK_MIN, KUBE_PROXY_CONNTRACK_PER_CORE * host.cpus)


def file_descriptors(host: Host, demand: Demand, *, whose: str) -> Check:
    """`ulimit -n` and `fs.nr_open` against listeners + 2 x maxconn + HAProxy's own. `whose`:
    whose limits these are (HAProxy run by `run` inherits ours; a sidecar has its own)."""
    name = "file-descriptors"
    soft, hard = host.nofile
    nr_open = host.sysctl_int("fs.nr_open")
    limits = f"{whose} ulimit -n {thousands(soft)} (hard {thousands(hard)})"
    if nr_open is not None:
        limits += f", fs.nr_open {thousands(nr_open)}"

    def raise_to(n: int) -> str:
        prefix = f"sysctl -w fs.nr_open={n}; " if nr_open is not None and nr_open < n else ""
        return prefix + NOFILE_FIX.format(n=n)

    if demand.maxconn:
        need = demand.fds(demand.maxconn)
        # HAProxy raises its soft limit up to the hard one; beyond it only with
        # CAP_SYS_RESOURCE, and never past fs.nr_open. It refuses to start otherwise
        # ("Cannot raise FD limit", strict-limits is on by default since 2.3).
        ceiling = hard
        if host.capable(CAP_SYS_RESOURCE) and nr_open is not None:
            ceiling = max(hard, nr_open)
        wants = (
            f"--maxconn {thousands(demand.maxconn)} needs {thousands(need)} descriptors "
            f"({demand.counted()}, 2 per connection, {demand.overhead} of HAProxy's own)"
        )
        if need > ceiling:
            most = max((ceiling - (demand.listeners or 0) - demand.overhead) // 2, 0)
            return fail(
                name,
                f"{wants}; {limits}: HAProxy refuses to start (Cannot raise FD limit)",
                f"{raise_to(need)}; or --maxconn {most}",
            )
        return ok(name, f"{wants}; {limits}")
    target = target_maxconn(host)
    derived = maxconn_in_effect(host, demand)
    budget = min(max(host.nofile), DEFAULT_MAXFD)
    if budget < demand.fds(DEFAULT_MAXCONN):
        return fail(
            name,
            f"{limits}: not even {DEFAULT_MAXCONN} connections fit beside {demand.counted()} "
            f"and HAProxy's own {demand.overhead}: HAProxy refuses to start",
            raise_to(demand.fds(target)),
        )
    found = f"{limits}: HAProxy will set maxconn {thousands(derived)} ({demand.counted()})"
    if derived < target:
        return warn(
            name,
            f"{found}, below the {thousands(target)} connections kube-proxy provisions a node "
            f"for (max(131072, 32768 x {host.cpus} CPUs))",
            raise_to(demand.fds(target)),
        )
    return ok(name, found)


def listen_backlog(host: Host, demand: Demand) -> Check:
    """`net.core.somaxconn` against the backlog HAProxy passes to listen(): its maxconn."""
    name = "somaxconn"
    somaxconn = host.sysctl_int("net.core.somaxconn")
    backlog = maxconn_in_effect(host, demand)
    if somaxconn is None:
        return ok(name, "net.core.somaxconn not readable here: not checked")
    asked = (
        f"HAProxy listens with a backlog of {thousands(backlog)} (its maxconn); "
        f"net.core.somaxconn {thousands(somaxconn)}"
    )
    if somaxconn >= backlog:
        return ok(name, asked)
    # listen(2): a larger backlog "is silently truncated" to somaxconn (4096 since Linux 5.4,
    # 128 before): bursts of connections beyond it wait in no queue and their SYNs are dropped.
    return warn(
        name,
        f"{asked} truncates it: a burst of more than {thousands(somaxconn)} connections not yet "
        "accepted on one listener is dropped",
        f"sysctl -w net.core.somaxconn={backlog}" + _or_maxconn(demand, somaxconn),
    )


def _or_maxconn(demand: Demand, most: int) -> str:
    return "" if demand.maxconn else f"; or bound HAProxy with --maxconn {most}"


def _reserved(text: str | None, low: int, high: int) -> int:
    """Ports of `ip_local_reserved_ports` ("8080,9000-9010") inside low..high."""
    count = 0
    for part in (text or "").split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            continue
        a, b = int(first), int(last or first)
        count += max(0, min(b, high) - max(a, low) + 1)
    return count


def local_ports(host: Host, demand: Demand) -> Check:
    """`net.ipv4.ip_local_port_range` against concurrent connections to one endpoint: the
    kernel picks a source port per destination address and port, so one endpoint can take at
    most that many connections from this host at once; every connection of a service with one
    endpoint goes there."""
    name = "local-ports"
    found = host.sysctl_ints("net.ipv4.ip_local_port_range")
    if not found or len(found) != 2:
        return ok(name, "net.ipv4.ip_local_port_range not readable here: not checked")
    low, high = found
    ports = max(
        0, high - low + 1 - _reserved(host.sysctl("net.ipv4.ip_local_reserved_ports"), low, high)
    )
    maxconn = maxconn_in_effect(host, demand)
    range_ = f"{thousands(ports)} source ports per endpoint ({low}-{high})"
    if ports >= maxconn:
        return ok(name, f"{range_} for HAProxy's maxconn {thousands(maxconn)}")
    widen = 'sysctl -w net.ipv4.ip_local_port_range="1024 65535"'
    if high - low + 1 >= MOST_PORTS:  # as wide as it gets (less the reserved ports)
        fix = f"--maxconn {ports}"
    elif maxconn > MOST_PORTS:
        fix = f"{widen}; and --maxconn {MOST_PORTS}"
    else:
        fix = widen
    return warn(
        name,
        f"{range_}: a service with one endpoint can hold {thousands(ports)} of HAProxy's "
        f"{thousands(maxconn)} connections at once (then connect() fails: no free port; ports "
        "in TIME_WAIT count too)",
        fix,
    )


def conntrack(host: Host, demand: Demand) -> Check:
    """`net.netfilter.nf_conntrack_max`, when conntrack is loaded: every proxied connection is
    two tracked flows (client to VIP, HAProxy to endpoint)."""
    name = "conntrack"
    most = host.sysctl_int("net.netfilter.nf_conntrack_max")
    if most is None:
        return ok(name, "nf_conntrack is not loaded: connections are not tracked")
    maxconn = maxconn_in_effect(host, demand)
    need = 2 * maxconn
    count = host.sysctl_int("net.netfilter.nf_conntrack_count")
    table = f"nf_conntrack_max {thousands(most)}" + (
        f" ({thousands(count)} in use)" if count is not None else ""
    )
    if most < need:
        return warn(
            name,
            f"{table}: HAProxy's maxconn {thousands(maxconn)} is {thousands(need)} tracked "
            "flows, and closed ones linger (nf_conntrack_tcp_timeout_time_wait); a full table "
            "drops new connections",
            f"sysctl -w net.netfilter.nf_conntrack_max={need}" + _or_maxconn(demand, most // 2),
        )
    if count is not None and count * 10 > most * 9:
        return warn(
            name,
            f"{table}: more than 90% full",
            f"sysctl -w net.netfilter.nf_conntrack_max={2 * most}",
        )
    return ok(name, f"{table} for HAProxy's maxconn {thousands(maxconn)} ({thousands(need)} flows)")
