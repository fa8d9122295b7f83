"""vips: the pool VIP of each service (`--vip-mode pool`), a pure function of the cluster.

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

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Claim:
    namespace: str
    name: str
    created: str  # creationTimestamp; "" when unknown (then it counts as newest)
    requested: tuple[str, ...] = ()  # addresses asked for with the annotation (canonical text)


@dataclass(frozen=True, slots=True)
class Refusal:
    namespace: str
    name: str
    address: str
    holder: str  # "namespace/name" of the service that keeps the address
    requested: bool = False  # the refused address was asked for with the annotation


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
    claims: Iterable[Claim], networks: Sequence[IPNetwork]
) -> tuple[dict[tuple[str, str], tuple[str, ...]], list[Refusal]]:
    """The pool addresses of each service (one per network, in the networks' order) and the
    refusals. A requested address is used for its family instead of the hashed one; a request
    outside every network is the caller's to report (it never reaches here)."""
    ordered = sorted(claims, key=lambda c: (c.created or "~", c.namespace, c.name))
    holders: dict[str, Claim] = {}
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
