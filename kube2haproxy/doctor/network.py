"""network: can HAProxy listen on the VIPs here, and does this host take their packets.

Listening and receiving are two questions. A socket binds an address the host does not hold
with `transparent` (HAProxy sets IP_TRANSPARENT, which needs CAP_NET_ADMIN, else IP_FREEBIND,
which needs nothing: sock_inet4_make_foreign) or with `net.ipv4.ip_nonlocal_bind=1`; the
controller test-binds every new listener the same way before a reload. But packets for an
address reach a listener only when the host's routing says the address is local: one it holds,
or an "AnyIP" route (`ip route add local 10.96.0.0/12 dev lo`); otherwise they are forwarded or
dropped. The route is asked of the kernel over netlink (RTM_GETROUTE, as `ip route get` does):
no packet leaves the host.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence

from kube2haproxy.doctor.check import Check, fail, ok, plural, warn
from kube2haproxy.doctor.host import CAP_NET_ADMIN, CAP_NET_BIND_SERVICE, Host
from kube2haproxy.model import hostport
from kube2haproxy.sockets import bind_problem
from kube2haproxy.translate.addresses import usable

Socket = tuple[str, int]

# Addresses kept for documentation (RFC 5737 TEST-NET-3, RFC 3849), held by no host: what is
# test-bound when the VIPs are not known.
SAMPLE_V4 = "203.0.113.1"
SAMPLE_V6 = "2001:db8::1"
SHOWN = 5  # addresses named in a detail line

# linux/rtnetlink.h, linux/netlink.h
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_RTA_DST = 1
ROUTE_TYPES = {
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
}
_sequence = itertools.count(1)


def route_type(ip: str, *, timeout_s: float = 2.0) -> str:
    """How this host routes packets for `ip`, as `ip route get` says: "local" (an address it
    holds, or an AnyIP route), "unicast" (forwarded), "unreachable", ...; OSError when the
    kernel has no route (ENETUNREACH) or cannot be asked."""
    address = ipaddress.ip_address(ip)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    packed = address.packed
    # struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    rtmsg = struct.pack("=BBBBBBBBI", family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0)
    attribute = struct.pack("=HH", 4 + len(packed), _RTA_DST) + packed
    sequence = next(_sequence)
    body = rtmsg + attribute
    header = struct.pack("=IHHII", 16 + len(body), _RTM_GETROUTE, _NLM_F_REQUEST, sequence, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(timeout_s)
        sock.bind((0, 0))
        sock.send(header + body)
        while True:
            reply = sock.recv(65536)
            _length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", reply)
            if seq == sequence:
                break
    if kind == _NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, 16)[0]
        raise OSError(code, os.strerror(code))
    if kind != _RTM_NEWROUTE or len(reply) < 28:
        raise OSError(errno.EPROTO, f"unexpected netlink reply type {kind}")
    return ROUTE_TYPES.get(reply[16 + 7], f"type {reply[16 + 7]}")


def samples(networks: Iterable[str]) -> list[str]:
    """Addresses standing for pool networks: the first and the last usable one of each."""
    out = []
    for text in networks:
        network = ipaddress.ip_network(text, strict=False)
        offset, count = usable(network)  # what the pool gives out, as translate reads it
        first, last = network[offset], network[offset + count - 1]
        out += [str(first), str(last)] if first != last else [str(first)]
    return out


def _listed(items: Sequence[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def vip_bind(
    host: Host,
    *,
    wanted: Sequence[Socket],
    sampled: bool,
    transparent: bool,
    bind: Callable[..., str | None] = bind_problem,
) -> Check:
    """Test-bind the listeners HAProxy will open (or, `sampled`, addresses standing for them)
    as HAProxy and the controller do. Privileged ports are privileged_ports' to report."""
    name = "vip-bind"
    if transparent:
        how = (
            "transparent binds (IP_TRANSPARENT: CAP_NET_ADMIN held)"
            if host.capable(CAP_NET_ADMIN)
            else "transparent binds (IP_FREEBIND: no CAP_NET_ADMIN, which IP_TRANSPARENT needs)"
        )
    else:
        how = "binds without transparent (net.ipv4.ip_nonlocal_bind={})".format(
            host.sysctl("net.ipv4.ip_nonlocal_bind") or "?"
        )
    what, whats = ("sample address", "sample addresses") if sampled else ("listener", "listeners")
    failed: dict[Socket, str] = {}
    privileged = 0
    for ip, port in wanted:
        why = bind(ip, port, transparent=transparent)
        if why == os.strerror(errno.EACCES):
            privileged += 1
        elif why:
            failed[(ip, port)] = why
    aside = f" ({privileged} on privileged ports: see privileged-ports)" if privileged else ""
    if not failed:
        bound = len(wanted) - privileged
        shown = f" ({_listed([hostport(*s) for s in wanted])})" if sampled else ""
        hint = "; give -f to test every listener" if sampled else ""
        return ok(name, f"{plural(bound, what, whats)} bound{shown} with {how}{aside}{hint}")
    fixes = []
    reasons = set(failed.values())
    if os.strerror(errno.EADDRNOTAVAIL) in reasons:
        fixes.append(
            "--bind-transparent (the default); or sysctl -w net.ipv4.ip_nonlocal_bind=1 "
            "(net.ipv6.ip_nonlocal_bind=1 for IPv6); or ip route add local <VIP network> dev lo"
        )
    if os.strerror(errno.EADDRINUSE) in reasons:
        port = next(p for (_ip, p), why in failed.items() if why == os.strerror(errno.EADDRINUSE))
        fixes.append(f"stop what listens there: ss -ltnp 'sport = :{port}'")
    if not fixes:
        fixes.append("see why each fails above")
    listed = [f"{hostport(*s)} ({why})" for s, why in sorted(failed.items())]
    return fail(
        name,
        f"{len(failed)} of {len(wanted)} {whats} cannot be bound with {how}: "
        f"{_listed(listed)}{aside}",
        "; ".join(fixes),
    )


def privileged_ports(host: Host, *, ports: Sequence[int] | None) -> Check:
    """Listeners below `net.ipv4.ip_unprivileged_port_start` need CAP_NET_BIND_SERVICE: in
    HAProxy, and in the controller, which test-binds every new listener before a reload and
    leaves out the services of those that fail."""
    name = "privileged-ports"
    # The sysctl appeared in Linux 4.11; before, and by default since, ports below 1024.
    start = host.sysctl_int("net.ipv4.ip_unprivileged_port_start")
    start = 1024 if start is None else start
    if host.capable(CAP_NET_BIND_SERVICE):
        return ok(name, "this process may bind any port (CAP_NET_BIND_SERVICE)")
    if start == 0:
        return ok(name, "any port may be bound (net.ipv4.ip_unprivileged_port_start=0)")
    low = None if ports is None else sorted({p for p in ports if p < start})
    if low == []:
        return ok(name, f"no listener below net.ipv4.ip_unprivileged_port_start={start}")
    lacks = (
        f"this process lacks CAP_NET_BIND_SERVICE and net.ipv4.ip_unprivileged_port_start={start}"
    )
    fix = (
        "add CAP_NET_BIND_SERVICE (a container: securityContext.capabilities.add "
        '["NET_BIND_SERVICE"]; systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE); or sysctl -w '
        f"net.ipv4.ip_unprivileged_port_start={low[0] if low else 0}"
    )
    consequence = (
        "the controller test-binds every new listener before a reload and leaves out the "
        "services of those that fail, and an HAProxy it starts cannot listen there"
    )
    if low is None:
        return warn(name, f"{lacks}: services on ports below {start} fail: {consequence}", fix)
    shown = _listed([str(p) for p in low])
    return fail(name, f"{lacks}: listeners on ports {shown} fail: {consequence}", fix)


def vip_routes(
    *,
    addresses: Sequence[str],
    source: str,
    keepalived: bool,
    networks: Sequence[str],
    route: Callable[[str], str] = route_type,
) -> Check:
    """Whether packets for the VIPs are delivered here: they must be local addresses (held, or
    an AnyIP route) unless keepalived moves them to the VRRP master. `source` says where the
    addresses come from; `networks` are the pool's (--vip-cidr), named in the fix."""
    name = "vip-routes"
    if not addresses:
        return ok(
            name,
            f"not checked: {source}. The service CIDR must be routed to this host and local "
            "on it (ip route add local <service CIDR> dev lo), or held by keepalived",
        )
    routes = {}
    for ip in addresses:
        try:
            routes[ip] = route(ip)
        except OSError as exc:
            routes[ip] = f"no route: {exc.strerror or exc}"
    elsewhere = [ip for ip, kind in routes.items() if kind != "local"]
    local = len(addresses) - len(elsewhere)
    counted = f"{local} of {len(addresses)} VIPs ({source}) local here"
    if not elsewhere:
        return ok(name, f"{counted} (held, or an AnyIP route)")
    if keepalived:
        return ok(
            name,
            f"{counted}: keepalived holds them on the VRRP master (--keepalived-config); a "
            "backup holds none",
        )
    listed = _listed([f"{ip} ({routes[ip]})" for ip in elsewhere])
    anyip = "; ".join(f"ip route add local {n} dev lo" for n in networks or ["<service CIDR>"])
    return warn(
        name,
        f"{counted}; not local: {listed}: packets routed here for them are forwarded or "
        f"dropped, not served",
        f"{anyip} (AnyIP: every address of the network is local); or hold them with "
        "keepalived (--keepalived-config)",
    )
