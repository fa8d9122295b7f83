"""addresses: where a service is reachable: its VIPs, and in --vip-mode pool the address each
service gets from the pool's networks, a pure function of the cluster.

A service listens on its cluster IPs (or, in pool mode, its pool addresses), its external IPs
and its load balancers' IPs (`service_vips`); how it came by each (`Via`) settles conflicts.

Each service's address in a pool network is a hash of its namespace/name (BLAKE2b, 128 bits,
modulo the network's usable addresses), unless it asks for one with `kube2haproxy.io/vip`. Every
replica computes the same addresses from the same services; a service's address never changes
while the service exists: it depends on nothing but its own name (and annotation), so adding or
removing other services, restarting a controller or starting another replica cannot move it; a
service deleted and created again gets its address back.

Two services can want one address (a hash collision, or an annotation asking for a taken one).
The older service (creationTimestamp, then namespace/name) keeps it; the newer gets no pool
address, and a warning names both and says how to pick another one. Nothing is ever moved to
resolve a collision: a resolution that moved addresses would move them again when the service
in the way is deleted. The chance of a collision is the birthday problem: with n services in a
network of m addresses about n^2/2m services collide (10,000 services in a /16: ~760; in a /12:
~48; an IPv6 /64: none), so size IPv4 pools generously or use IPv6.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from enum import IntEnum

from kube2haproxy import grammar, tuning
from kube2haproxy.errors import FieldError, GrammarError
from kube2haproxy.findings import Collector, SkipReason, shown
from kube2haproxy.model import value_class
from kube2haproxy.resources import JSON, Key, get_dict, get_list, get_str
from kube2haproxy.settings import TranslateSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

VIP = tuning.PREFIX + "vip"


class Via(IntEnum):
    """How a service came to bind an address; on a conflict the lowest wins."""

    CLUSTER_IP = 0
    POOL = 1
    LOAD_BALANCER = 2
    EXTERNAL_IP = 3


@value_class
class Vip:
    ip: str
    via: Via


def addressless(spec: JSON) -> tuple[SkipReason, str, str] | None:
    """ExternalName and headless services, which never have an address of their own."""
    if get_str(spec, "type", "spec.type") == "ExternalName":
        return SkipReason.EXTERNAL_NAME, "spec.type", "ExternalName is resolved by DNS; skipped"
    cluster_ips = get_list(spec, "clusterIPs", "spec.clusterIPs")
    if get_str(spec, "clusterIP", "spec.clusterIP") == "None" or cluster_ips[:1] == ["None"]:
        return SkipReason.HEADLESS, "spec.clusterIP", "headless (clusterIP: None); skipped"
    return None


def service_vips(service: JSON, found: Collector, *, cluster_ips: bool = True) -> tuple[Vip, ...]:
    """The addresses a service is bound on: spec.clusterIPs (or clusterIP; unless `cluster_ips`
    is false: --vip-mode pool), spec.externalIPs and status.loadBalancer.ingress[].ip, in that
    order, each once. With pool addresses (assembly), the one place VIPs are chosen."""
    if cluster_ips:
        plain = plain_vips(service)
        if plain is not None:
            return plain
    return full_vips(service, found, cluster_ips=cluster_ips)


_listenable_ipv4 = grammar.LISTENABLE_IPV4.fullmatch


def plain_vips(service: JSON) -> tuple[Vip, ...] | None:
    """The VIPs of a service with only IPv4 cluster IPs that `full_vips` takes without a
    finding (canonical, listenable, distinct), read without it; None for anything else, which
    `full_vips` then takes. 10,000 services pass here at 10,000 services."""
    spec = service.get("spec")
    status = service.get("status")
    if type(spec) is not dict or (status is not None and type(status) is not dict):
        return None
    if spec.get("externalIPs") is not None:
        return None
    if status and status.get("loadBalancer") not in (None, {}):
        return None
    listed = spec.get("clusterIPs")
    if type(listed) is not list or not listed:
        return None
    for ip in listed:
        if type(ip) is not str or not _listenable_ipv4(ip):
            return None
    if len(listed) > 1 and len(set(listed)) != len(listed):
        return None
    return tuple([Vip(ip, Via.CLUSTER_IP) for ip in listed])


def full_vips(service: JSON, found: Collector, *, cluster_ips: bool = True) -> tuple[Vip, ...]:
    """service_vips, field by field, each problem reported."""
    spec = get_dict(service, "spec", "spec")
    status = get_dict(service, "status", "status")
    sources: list[tuple[Via, str, object]] = []
    if cluster_ips:
        listed = get_list(spec, "clusterIPs", "spec.clusterIPs")
        if listed:
            sources += [
                (Via.CLUSTER_IP, f"spec.clusterIPs[{i}]", ip) for i, ip in enumerate(listed)
            ]
        elif single := get_str(spec, "clusterIP", "spec.clusterIP"):
            sources.append((Via.CLUSTER_IP, "spec.clusterIP", single))
    sources += [
        (Via.EXTERNAL_IP, f"spec.externalIPs[{i}]", ip)
        for i, ip in enumerate(get_list(spec, "externalIPs", "spec.externalIPs"))
    ]
    load_balancer = get_dict(status, "loadBalancer", "status.loadBalancer")
    for i, ingress in enumerate(get_list(load_balancer, "ingress", "status.loadBalancer.ingress")):
        path = f"status.loadBalancer.ingress[{i}]"
        if not isinstance(ingress, dict):
            found.warn(path, "expected a mapping; ignored")
            continue
        if ingress.get("ip") is not None:
            sources.append((Via.LOAD_BALANCER, f"{path}.ip", ingress["ip"]))
    vips: dict[str, Vip] = {}
    for via, path, raw in sources:
        try:
            ip, version = grammar.ip_text(raw)
        except GrammarError as exc:
            found.warn(path, f"{shown(raw)}: {exc}; address ignored")
            continue
        # External IPs are refused on special addresses by the API server (k/k ValidateService:
        # ValidateNonSpecialIP); no address at all can be listened on when it is a wildcard,
        # multicast or broadcast.
        special = grammar.special_ip(ip, version) if via is Via.EXTERNAL_IP else None
        problem = special or grammar.unlistenable_ip(ip, version)
        if problem is not None:
            found.warn(path, f"{ip} is {problem}: not a service address; ignored")
            continue
        if ip not in vips:
            vips[ip] = Vip(ip, via)
    return tuple(vips.values())


# --- pool addresses ---------------------------------------------------------------------------


@value_class
class AddressClaim:
    """A service's claim on pool addresses."""

    namespace: str
    name: str
    created: str  # creationTimestamp; "" when unknown (then it counts as newest)
    requested: tuple[str, ...] = ()  # addresses asked for with the annotation (canonical text)


@value_class
class Refusal:
    namespace: str
    name: str
    address: str
    holder: str  # "namespace/name" of the service that keeps the address
    requested: bool = False  # the refused address was asked for with the annotation


def vip_cidr_networks(settings: TranslateSettings) -> tuple[IPNetwork, ...]:
    """The --vip-cidr networks in --vip-mode pool, else none. GrammarError when invalid (the
    settings check them first): a comma-separated list, at most one network per family."""
    if settings.vip_mode != "pool" or not settings.vip_cidr:
        return ()
    return grammar.vip_networks(settings.vip_cidr)


def address_claim(key: Key, service: JSON, networks: Sequence[IPNetwork]) -> AddressClaim | None:
    """The service's claim on pool addresses: every Service but the headless and ExternalName
    ones (which never have an address), whether it is served or not. Garbage in its fields makes
    a claim without a request (and without a creation time: the newest)."""
    try:
        meta = get_dict(service, "metadata", "metadata")
        if addressless(get_dict(service, "spec", "spec")) is not None:
            return None
    except FieldError:
        return AddressClaim(key.namespace, key.name, "")
    created = grammar.timestamp(meta.get("creationTimestamp")) or ""
    requested: tuple[str, ...] = ()
    annotations = meta.get("annotations")
    value = annotations.get(VIP) if isinstance(annotations, dict) else None
    if isinstance(value, str):
        with contextlib.suppress(GrammarError):  # reported when it is translated
            requested = tuple(ip for ip in tuning.vip_request(value) if in_vip_cidr(ip, networks))
    return AddressClaim(key.namespace, key.name, created, requested)


def in_vip_cidr(ip: str, networks: Sequence[IPNetwork]) -> bool:
    """An address the pool may give a service (inside a network, not one it reserves)."""
    return any(holds(n, grammar.ip_literal(ip)) for n in networks)


def usable(network: IPNetwork) -> tuple[int, int]:
    """(first offset, count) of the addresses a service may get: an IPv4 network's own and
    broadcast addresses are left out (when it has more than two), and an IPv6 network's first
    address, the Subnet-Router anycast address (RFC 4291), when it has more than two."""
    if network.version == 4 and network.prefixlen < 31:
        return 1, network.num_addresses - 2
    if network.version == 6 and network.prefixlen < 127:
        return 1, network.num_addresses - 1
    return 0, network.num_addresses


def holds(network: IPNetwork, address: IPAddress) -> bool:
    """Whether a service may have this address of the network (see `usable`)."""
    if address.version != network.version or address not in network:
        return False
    first, count = usable(network)
    return first <= int(address) - int(network.network_address) < first + count


def preferred(namespace: str, name: str, network: IPNetwork) -> IPAddress:
    digest = hashlib.blake2b(f"{namespace}/{name}".encode(), digest_size=16).digest()
    first, count = usable(network)
    return network.network_address + first + int.from_bytes(digest, "big") % count


def allocate(
    claims: Iterable[AddressClaim], networks: Sequence[IPNetwork]
) -> tuple[dict[tuple[str, str], tuple[str, ...]], list[Refusal]]:
    """The pool addresses of each service (one per network, in the networks' order) and the
    refusals. A requested address is used for its family instead of the hashed one; a request
    outside every network is the caller's to report (it never reaches here)."""
    ordered = sorted(claims, key=lambda c: (c.created or "~", c.namespace, c.name))
    holders: dict[str, AddressClaim] = {}
    got: dict[tuple[str, str], list[str]] = {(c.namespace, c.name): [] for c in ordered}
    refused: list[Refusal] = []
    for network in networks:
        for claim in ordered:
            asked = [ip for ip in claim.requested if ipaddress.ip_address(ip) in network]
            address = asked[0] if asked else str(preferred(claim.namespace, claim.name, network))
            holder = holders.get(address)
            if holder is not None:
                refused.append(
                    Refusal(
                        claim.namespace,
                        claim.name,
                        address,
                        f"{holder.namespace}/{holder.name}",
                        requested=bool(asked),
                    )
                )
                continue
            holders[address] = claim
            got[(claim.namespace, claim.name)].append(address)
    return {key: tuple(addresses) for key, addresses in got.items()}, refused
