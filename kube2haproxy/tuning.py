"""Per-service tuning through `kube2haproxy.io/*` annotations, each parsed by a strict grammar.

`ANNOTATIONS` is the one table of what exists: key, grammar, default, documentation. The table of
docs/annotations.md is checked against it by the tests. An invalid value is reported and its
fallback used (the default, except for the source allow-list, which fails closed), and the service
is still served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kube2haproxy import grammar
from kube2haproxy.errors import GrammarError
from kube2haproxy.findings import Finding, shown, warning
from kube2haproxy.model import Balance, CheckKind, ProxyProtocol

PREFIX = "kube2haproxy.io/"
MAX_SOURCE_RANGES = 1_000


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Parsed annotations; None means "not set: the defaults section applies"."""

    balance: Balance | None = None
    connect_timeout_ms: int | None = None
    server_timeout_ms: int | None = None
    client_timeout_ms: int | None = None
    tunnel_timeout_ms: int | None = None
    server_maxconn: int | None = None
    check_kind: CheckKind = CheckKind.NONE
    check_path: str = "/"
    check_interval_ms: int = 2_000
    check_rise: int = 2
    check_fall: int = 3
    proxy_protocol: ProxyProtocol = ProxyProtocol.NONE
    source_ranges: tuple[str, ...] | None = None  # None: every source; (): none
    slots_free: int | None = None  # None: --slots-free
    vips: tuple[str, ...] = ()  # pool addresses asked for (canonical text), one per family


DEFAULTS = ServiceOptions()


def vip_request(value: str) -> tuple[str, ...]:
    """One or two comma-separated addresses, at most one per family."""
    items = [item.strip(" ") for item in value.split(",")]
    if not 1 <= len(items) <= 2:
        raise GrammarError("expected an address, or an IPv4 and an IPv6 one")
    ips = [grammar.ip_literal(item) for item in items]
    if len({ip.version for ip in ips}) != len(ips):
        raise GrammarError("expected at most one address per family")
    return tuple(str(ip) for ip in sorted(ips, key=lambda ip: ip.version))


def source_ranges(value: str) -> tuple[str, ...]:
    """Comma-separated CIDRs, canonicalized, deduplicated and sorted."""
    items = [item.strip(" ") for item in value.split(",")]
    if not items or len(items) > MAX_SOURCE_RANGES or any(not item for item in items):
        raise GrammarError(
            f"expected 1-{MAX_SOURCE_RANGES} comma-separated CIDRs such as 10.0.0.0/8, fd00::/8"
        )
    return canonical_ranges(grammar.cidr(item) for item in items)


def canonical_ranges(networks: Iterable[grammar.Network]) -> tuple[str, ...]:
    """Networks as canonical CIDR texts, deduplicated and sorted (IPv4 first)."""
    unique = set(networks)
    return tuple(str(n) for n in sorted(unique, key=lambda n: (n.version, n)))


@dataclass(frozen=True, slots=True)
class Annotation:
    key: str  # after the prefix
    field: str  # of ServiceOptions
    parse: Callable[[str], Any]
    default: str  # as documented
    doc: str
    on_invalid: Any = None  # the fallback when invalid; None: the field's default

    @property
    def name(self) -> str:
        return PREFIX + self.key


def _duration(value: str) -> int:
    return grammar.duration_ms(value)


def _count(low: int, high: int) -> Callable[[str], int]:
    return lambda value: grammar.integer(value, low=low, high=high)


ANNOTATIONS: tuple[Annotation, ...] = (
    Annotation(
        "balance",
        "balance",
        lambda v: Balance(grammar.choice(v, tuple(Balance))),
        "roundrobin",
        "Load-balancing algorithm: " + ", ".join(b.value for b in Balance) + ".",
    ),
    Annotation(
        "timeout-connect",
        "connect_timeout_ms",
        _duration,
        "value of --timeout-connect, 5s by default",
        "Time allowed to connect to an endpoint.",
    ),
    Annotation(
        "timeout-server",
        "server_timeout_ms",
        _duration,
        "value of --timeout-server, 1m by default",
        "Server inactivity timeout before the connection is established.",
    ),
    Annotation(
        "timeout-client",
        "client_timeout_ms",
        _duration,
        "value of --timeout-client, 1m by default",
        "Client inactivity timeout before the connection is established.",
    ),
    Annotation(
        "timeout-tunnel",
        "tunnel_timeout_ms",
        _duration,
        "value of --timeout-tunnel, 1d by default",
        "Inactivity timeout of an established connection (both directions idle).",
    ),
    Annotation(
        "maxconn",
        "server_maxconn",
        _count(1, 1_000_000),
        "unlimited",
        "Concurrent connections per endpoint; more wait in the backend's queue.",
    ),
    Annotation(
        "check",
        "check_kind",
        lambda v: CheckKind(grammar.choice(v, tuple(CheckKind))),
        "none",
        "Active health checks: none (trust readiness), tcp (connect) or http.",
    ),
    Annotation(
        "check-path",
        "check_path",
        grammar.http_path,
        "/",
        "Request path of http checks (GET, 2xx or 3xx is healthy).",
    ),
    Annotation(
        "check-interval",
        "check_interval_ms",
        _duration,
        "2s",
        "Time between two checks of one endpoint.",
    ),
    Annotation(
        "check-rise",
        "check_rise",
        _count(1, 1000),
        "2",
        "Consecutive successful checks that mark an endpoint up.",
    ),
    Annotation(
        "check-fall",
        "check_fall",
        _count(1, 1000),
        "3",
        "Consecutive failed checks that mark an endpoint down.",
    ),
    Annotation(
        "proxy-protocol",
        "proxy_protocol",
        lambda v: ProxyProtocol(grammar.choice(v, tuple(ProxyProtocol))),
        "none",
        "Send the PROXY protocol header to endpoints: none, v1 or v2.",
    ),
    Annotation(
        "slots-free",
        "slots_free",
        _count(0, 1000),
        "value of --slots-free, 4 by default",
        "Free server slots kept beyond the listed endpoints: endpoint changes that fit are "
        "applied without a reload.",
    ),
    Annotation(
        "vip",
        "vips",
        vip_request,
        "hashed from namespace/name",
        "With --vip-mode pool: the pool address(es) to use, inside --vip-cidr (one per family).",
    ),
    Annotation(
        "source-ranges",
        "source_ranges",
        source_ranges,
        "every source",
        "Comma-separated CIDRs allowed to connect to any of the service's VIPs. An "
        "invalid value rejects every connection (fails closed) until it is fixed.",
        on_invalid=(),
    ),
)

_BY_NAME = {a.name: a for a in ANNOTATIONS}
_CHECK_ONLY = {
    "check-path": CheckKind.HTTP,
    "check-interval": None,
    "check-rise": None,
    "check-fall": None,
}


def parse(annotations: Mapping[str, str], *, subject: str) -> tuple[ServiceOptions, list[Finding]]:
    """ServiceOptions from a Service's annotations, with a finding per unusable annotation."""
    ours = sorted(name for name in annotations if name.startswith(PREFIX))
    if not ours:
        return DEFAULTS, []
    findings: list[Finding] = []
    values: dict[str, Any] = {}
    present: set[str] = set()
    for name in ours:
        spec = _BY_NAME.get(name)
        # A known name is ours and safe to print as is; an unknown one may be anything.
        field = f"metadata.annotations[{name if spec is not None else shown(name)}]"
        if spec is None:
            known = ", ".join(a.key for a in ANNOTATIONS)
            findings.append(
                warning(subject, field, f"unknown annotation, ignored (known: {known})")
            )
            continue
        present.add(spec.key)
        try:
            values[spec.field] = spec.parse(annotations[name])
        except (GrammarError, ValueError) as exc:
            fallback = (
                "rejecting every connection"
                if spec.on_invalid == ()
                else (f"using the default ({spec.default})")
            )
            findings.append(
                warning(
                    subject, field, f"invalid value {shown(annotations[name])}: {exc}; {fallback}"
                )
            )
            if spec.on_invalid is not None:
                values[spec.field] = spec.on_invalid
    options = replace(DEFAULTS, **values)
    for key, needed in _CHECK_ONLY.items():
        if key not in present:
            continue
        if options.check_kind is CheckKind.NONE or (
            needed is not None and options.check_kind is not needed
        ):
            want = needed.value if needed is not None else "tcp or http"
            findings.append(
                warning(
                    subject,
                    f"metadata.annotations[{PREFIX}{key}]",
                    f"has no effect unless {PREFIX}check is {want}",
                )
            )
    return options, findings
