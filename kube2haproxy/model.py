"""The model: what HAProxy should run, as frozen values in a canonical order.

Everything here is already validated: every string is drawn from a strict grammar (names, IP
literals, enumerations), every number is in range. Templates only format these values; a template
`if` about Kubernetes semantics means a field is missing here. Durations are milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import NamedTuple, TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value_class(cls: type[T]) -> type[T]:
    """A value class of the model: a dataclass that is frozen for the type checker (mypy, strict,
    in CI) and plain slots at run time, with equality and a hash over its fields. Nothing may
    assign to its fields after construction; mypy refuses it where `frozen=True` would refuse
    it at run time. The model is built once per service on the cold path, and a frozen
    dataclass's `__init__` (one `object.__setattr__` per field) took 3.5x as long as this one:
    about 0.25 s of translating 10,000 services (bench/cold.py --phases)."""
    made = dataclass(slots=True, unsafe_hash=True)(cls)
    VALUE_CLASSES.append(made)
    return made


VALUE_CLASSES: list[type] = []  # every value class, for tests/test_model_values.py


class Balance(StrEnum):
    ROUNDROBIN = "roundrobin"
    STATIC_RR = "static-rr"
    LEASTCONN = "leastconn"
    FIRST = "first"
    SOURCE = "source"
    RANDOM = "random"


class CheckKind(StrEnum):
    NONE = "none"
    TCP = "tcp"
    HTTP = "http"


class ProxyProtocol(StrEnum):
    NONE = "none"
    V1 = "v1"
    V2 = "v2"


def hostport(ip: str, port: int) -> str:
    """`10.0.0.1:80` or `[fd00::1]:80`: HAProxy's address syntax for both families."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@value_class
class HealthCheck:
    kind: CheckKind
    interval_ms: int
    rise: int
    fall: int
    path: str  # HTTP checks only; "/" otherwise


@value_class
class Affinity:
    """sessionAffinity: ClientIP, as a stick table on the client's source address."""

    table_type: str  # "ip" when every VIP is IPv4, "ipv6" otherwise (stores both families)
    expire_s: int
    size: int


class ServerState(StrEnum):
    READY = "ready"  # takes new connections
    DRAIN = "drain"  # terminating but serving: finishes its connections, takes no new ones
    PARKED = "parked"  # a free slot: disabled, at PARKED_IP:PARKED_PORT (slots.py)


class Server(NamedTuple):
    """One server line (a slot). A NamedTuple, not a dataclass: a cluster has ~10x more
    servers than backends, and a tuple is built three times faster than a frozen dataclass."""

    name: str
    ip: str  # canonical text of an IP literal
    port: int
    address: str  # hostport(ip, port), precomputed for rendering
    state: ServerState = ServerState.READY

    @property
    def parked(self) -> bool:
        return self.state is ServerState.PARKED


@value_class
class SourceRule:
    """Accept a connection only from `sources` (CIDRs); when `destinations` is non-empty, the rule
    applies only to connections addressed to those VIPs (loadBalancerSourceRanges guard only the
    load balancer's addresses, as in kube-proxy). An empty `sources` rejects everything."""

    sources: tuple[str, ...]
    destinations: tuple[str, ...] = ()


@value_class
class Backend:
    name: str
    namespace: str
    service: str
    port_key: str  # the service port's name, or its number when unnamed
    servers: tuple[Server, ...]
    balance: Balance | None = None  # None: the defaults section's algorithm
    connect_timeout_ms: int | None = None
    server_timeout_ms: int | None = None
    tunnel_timeout_ms: int | None = None
    check: HealthCheck | None = None
    server_maxconn: int | None = None
    proxy_protocol: ProxyProtocol = ProxyProtocol.NONE
    affinity: Affinity | None = None
    # The frontend's access rules again: the per-port layout shares frontends between
    # services, so it enforces each service's rules in its backend.
    source_rules: tuple[SourceRule, ...] = ()

    @property
    def settings(self) -> tuple[object, ...]:
        """Everything but the servers: what a runtime update cannot change."""
        return tuple(getattr(self, name) for name in _BACKEND_SETTINGS)


_BACKEND_SETTINGS = tuple(f.name for f in fields(Backend) if f.name != "servers")


@value_class
class Bind:
    ip: str
    port: int
    address: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", hostport(self.ip, self.port))


@value_class
class Frontend:
    name: str
    namespace: str
    service: str
    port_key: str
    protocol: str  # "TCP": the only protocol HAProxy 2.6 balances
    binds: tuple[Bind, ...]
    backend: str
    port: int = 0  # the service port every bind listens on
    client_timeout_ms: int | None = None
    source_rules: tuple[SourceRule, ...] = ()


@value_class
class ServicePort:
    name: str  # "" when unnamed
    port: int
    protocol: str


@value_class
class ServiceEntry:
    """Where a served service lives: its VIPs and served ports (for DNS and VIP publication)."""

    namespace: str
    name: str
    vips: tuple[str, ...]  # every address it is bound on
    ports: tuple[ServicePort, ...]
    primary: tuple[str, ...] = ()  # its cluster IPs, or pool addresses: what DNS publishes


@value_class
class Model:
    """Everything one haproxy.cfg is rendered from. Tuples are sorted by name."""

    frontends: tuple[Frontend, ...] = ()
    backends: tuple[Backend, ...] = ()
    services: tuple[ServiceEntry, ...] = ()

    @property
    def server_count(self) -> int:
        """Endpoints served (server lines that are not parked slots)."""
        parked = ServerState.PARKED  # not `s.parked`: a property call per line, 0.1 s at 10,000
        return sum(1 for b in self.backends for s in b.servers if s.state is not parked)
