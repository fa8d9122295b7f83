"""translate: a snapshot of Kubernetes objects becomes the model, with findings.

Every Kubernetes rule lives here: which services are served, on which VIPs, with which endpoints
(readiness, terminating endpoints, named target ports, several slices, the Endpoints fallback),
and how annotations tune them. Each service is translated on its own (`translate_service`, pure,
cacheable by its inputs); one final pass settles address:port conflicts between services.
No I/O, no clock: the same snapshot always yields the same model.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from kube2haproxy import grammar, names, slots, tuning
from kube2haproxy import vips as vips_mod
from kube2haproxy.findings import Finding, SkipReason, info, shown, subject, warning
from kube2haproxy.model import (
    Affinity,
    Backend,
    Bind,
    CheckKind,
    Frontend,
    HealthCheck,
    Model,
    Server,
    ServerState,
    ServiceEntry,
    ServicePort,
    SourceRule,
)
from kube2haproxy.resources import (
    JSON,
    FieldError,
    Key,
    get_bool,
    get_dict,
    get_list,
    get_str,
    string_map,
)
from kube2haproxy.settings import TranslateSettings
from kube2haproxy.store import Snapshot

PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"
DEFAULT_AFFINITY_TIMEOUT_S = 10_800
MAX_AFFINITY_TIMEOUT_S = 86_400


class Claim(IntEnum):
    """How a service came to bind an address; on a conflict the lowest wins."""

    CLUSTER_IP = 0
    POOL = 1
    LOAD_BALANCER = 2
    EXTERNAL_IP = 3


@dataclass(frozen=True, slots=True)
class Vip:
    ip: str
    claim: Claim


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """One service translated on its own, before conflicts with other services are settled."""

    frontends: tuple[Frontend, ...] = ()
    backends: tuple[Backend, ...] = ()
    entry: ServiceEntry | None = None
    findings: tuple[Finding, ...] = ()
    vips: tuple[Vip, ...] = ()
    created: str = ""  # creationTimestamp; older services win address conflicts
    pool: vips_mod.Claim | None = None  # --vip-mode pool: its claim on a pool address


@dataclass(frozen=True, slots=True)
class Translation:
    model: Model
    findings: tuple[Finding, ...]

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def skipped(self) -> Mapping[SkipReason, int]:
        """Services (and ports) not served, counted by reason."""
        return Counter(f.skip for f in self.findings if f.skip is not None)


class TranslateCache:
    """Per-service results of earlier translations, reused while the service's inputs are the very
    same objects: the store hands out one dict per object version, so identity means unchanged.
    A long-running controller keeps one, making a change cost O(changed services)."""

    def __init__(self) -> None:
        self._entries: dict[Key, tuple[tuple[object, ...], ServiceResult]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: Key, inputs: tuple[object, ...]) -> ServiceResult | None:
        entry = self._entries.get(key)
        if entry is None or len(entry[0]) != len(inputs):
            return None
        if all(a is b for a, b in zip(entry[0], inputs, strict=True)):
            return entry[1]
        return None

    def store(self, key: Key, inputs: tuple[object, ...], result: ServiceResult) -> None:
        self._entries[key] = (inputs, result)

    def previous(self, key: Key) -> ServiceResult | None:
        """The last result stored for a service, whatever its inputs were."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget the services that are gone."""
        keep = set(keys)
        for key in [k for k in self._entries if k not in keep]:
            del self._entries[key]


def translate(
    snapshot: Snapshot,
    settings: TranslateSettings,
    *,
    cache: TranslateCache | None = None,
    unbindable: Mapping[tuple[str, int], str] | None = None,
) -> Translation:
    """The model of a snapshot. `unbindable`: address:port pairs this host cannot listen on
    (found by the controller), with why; they are left out, with a warning for their service."""
    results = [
        translate_cached(
            key,
            service,
            slices=snapshot.slices.get(key, ()),
            endpoints=snapshot.endpoints.get(key),
            settings=settings,
            cache=cache,
        )
        for key, service in sorted(snapshot.services.items())
    ]
    if cache is not None and len(cache) > len(snapshot.services):
        cache.retain(snapshot.services)
    return assemble(results, unbindable=unbindable, pool=pool_networks(settings))


def translate_cached(
    key: Key,
    service: JSON,
    *,
    slices: tuple[JSON, ...],
    endpoints: JSON | None,
    settings: TranslateSettings,
    cache: TranslateCache | None,
) -> ServiceResult:
    """translate_service, through the cache when there is one."""
    inputs = (settings, service, endpoints, *slices)
    result = cache.lookup(key, inputs) if cache is not None else None
    if result is None:
        result = translate_service(
            key, service, slices=slices, endpoints=endpoints, settings=settings
        )
        if cache is not None:
            cache.store(key, inputs, result)
    return result


def confined(old: ServiceResult, new: ServiceResult) -> bool:
    """Only the servers of the service's backends differ: its frontends, addresses and backend
    settings are the same, so the rest of the model (address conflicts included) is too."""
    return (
        old.frontends == new.frontends
        and old.vips == new.vips
        and old.entry == new.entry
        and old.created == new.created
        and old.pool == new.pool
        and len(old.backends) == len(new.backends)
        and all(
            a.name == b.name and a.settings == b.settings
            for a, b in zip(old.backends, new.backends, strict=True)
        )
    )


def pool_networks(settings: TranslateSettings) -> tuple[vips_mod.IPNetwork, ...]:
    """The --vip-cidr networks in --vip-mode pool, else none. GrammarError when invalid (the CLI
    checks them first): a comma-separated list, at most one network per family."""
    if settings.vip_mode != "pool" or not settings.vip_cidr:
        return ()
    return _parse_networks(settings.vip_cidr)


# Never handed out: no host can listen there, or keepalived advertises there (link-local).
# Loopback stays allowed (a pool on one host, the tests).
_NOT_POOLS = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", "::/128", "fe80::/10", "ff00::/8")
)


@functools.lru_cache(maxsize=8)
def _parse_networks(text: str) -> tuple[vips_mod.IPNetwork, ...]:
    networks = tuple(grammar.cidr(item.strip()) for item in text.split(","))
    if len({n.version for n in networks}) != len(networks):
        raise grammar.GrammarError("expected at most one IPv4 and one IPv6 network")
    for network in networks:
        for special in _NOT_POOLS:
            if network.version == special.version and network.overlaps(special):
                raise grammar.GrammarError(
                    f"{network} overlaps {special} (unspecified, link-local, multicast or "
                    "reserved addresses), which a service cannot listen on"
                )
    return networks


def assemble(
    results: Iterable[ServiceResult],
    *,
    unbindable: Mapping[tuple[str, int], str] | None = None,
    pool: Sequence[vips_mod.IPNetwork] = (),
) -> Translation:
    """Merge per-service results into one model: pool addresses allocated, address:port
    conflicts settled, the addresses this host cannot listen on left out."""
    results = list(results)
    findings = [f for r in results for f in r.findings]
    if pool:
        results = _allocate_pool(results, pool, findings)
    lost = _settle_conflicts(results, findings)
    if unbindable:
        lost |= _unbindable(results, unbindable, findings)
    frontends: list[Frontend] = []
    backends: list[Backend] = []
    entries: list[ServiceEntry] = []
    for result in results:
        kept = []
        for frontend in result.frontends:
            binds = tuple(b for b in frontend.binds if (frontend.name, b) not in lost)
            if binds:
                kept.append(replace(frontend, binds=binds) if binds != frontend.binds else frontend)
        if not kept:
            continue
        frontends.extend(kept)
        used = {f.backend for f in kept}
        backends.extend(b for b in result.backends if b.name in used)
        if result.entry is not None:
            bound = {b.ip for f in kept for b in f.binds}
            keys = {f.port_key for f in kept}
            entry = result.entry
            vips = tuple(ip for ip in entry.vips if ip in bound)
            primary = tuple(ip for ip in entry.primary if ip in bound)
            ports = tuple(
                p for p in entry.ports if names.port_key(name=p.name, port=p.port) in keys
            )
            if (vips, ports, primary) != (entry.vips, entry.ports, entry.primary):
                entry = replace(entry, vips=vips, ports=ports, primary=primary)
            entries.append(entry)
    model = Model(
        frontends=tuple(sorted(frontends, key=lambda f: f.name)),
        backends=tuple(sorted(backends, key=lambda b: b.name)),
        services=tuple(sorted(entries, key=lambda e: (e.namespace, e.name))),
    )
    return Translation(model, tuple(findings))


def _settle_conflicts(
    results: list[ServiceResult], findings: list[Finding]
) -> set[tuple[str, Bind]]:
    """Two frontends must never listen on one address:port (the kernel would split the traffic
    between them). The claim by cluster IP wins, then the older service, then the name order."""
    claims: dict[tuple[str, int], list[tuple[tuple[int, str, str, str], Frontend, Bind]]] = {}
    for result in results:
        rank = {v.ip: v.claim for v in result.vips}
        for frontend in result.frontends:
            for bind in frontend.binds:
                order = (rank[bind.ip], result.created or "~", frontend.namespace, frontend.service)
                claims.setdefault((bind.ip, bind.port), []).append((order, frontend, bind))
    lost: set[tuple[str, Bind]] = set()
    for contenders in claims.values():
        if len(contenders) < 2:
            continue
        contenders.sort(key=lambda c: c[0])
        winner = contenders[0][1]
        for _, frontend, bind in contenders[1:]:
            lost.add((frontend.name, bind))
            findings.append(
                warning(
                    subject("Service", frontend.namespace, frontend.service),
                    f"port {frontend.port_key}",
                    f"{bind.address} is already served by Service "
                    f"{winner.namespace}/{winner.service}; not bound for this service",
                )
            )
    return lost


def _allocate_pool(
    results: list[ServiceResult], pool: Sequence[vips_mod.IPNetwork], findings: list[Finding]
) -> list[ServiceResult]:
    """Give each claim its pool addresses. A pool address belongs to its service on every
    port: another service's external or load-balancer IP on it is refused (the service's own
    is merely redundant)."""
    claims = [r.pool for r in results if r.pool is not None]
    allocated, refused = vips_mod.allocate(claims, pool)
    for refusal in refused:
        findings.append(
            warning(
                subject("Service", refusal.namespace, refusal.name),
                f"metadata.annotations[{VIP}]" if refusal.requested else "metadata.name",
                f"pool address {refusal.address} belongs to the older Service {refusal.holder}; "
                f"not bound (set {VIP} to another address of --vip-cidr)",
            )
        )
    owners = {ip: key for key, addresses in allocated.items() for ip in addresses}
    out = []
    for result in results:
        claim = result.pool
        key = (claim.namespace, claim.name) if claim is not None else None
        addresses = allocated.get(key, ()) if key is not None else ()
        if not addresses and not any(v.ip in owners for v in result.vips):
            out.append(result)
            continue
        for vip in result.vips:
            owner = owners.get(vip.ip)
            if owner is not None and owner != key and result.frontends:
                first = result.frontends[0]
                field = (
                    "spec.externalIPs"
                    if vip.claim is Claim.EXTERNAL_IP
                    else "status.loadBalancer.ingress"
                )
                findings.append(
                    warning(
                        subject("Service", first.namespace, first.service),
                        field,
                        f"{vip.ip} is the pool address of Service {owner[0]}/{owner[1]}; "
                        "not bound for this service",
                    )
                )
        others = tuple(v for v in result.vips if v.ip not in owners)
        frontends = tuple(
            replace(
                f,
                binds=tuple(Bind(ip, f.port) for ip in addresses)
                + tuple(b for b in f.binds if b.ip not in owners),
            )
            for f in result.frontends
        )
        entry = result.entry
        if entry is not None:
            kept = tuple(ip for ip in entry.vips if ip not in owners)
            entry = replace(entry, vips=addresses + kept, primary=addresses)
        pool_vips = tuple(Vip(ip, Claim.POOL) for ip in addresses)
        out.append(replace(result, frontends=frontends, entry=entry, vips=pool_vips + others))
    return out


VIP = tuning.PREFIX + "vip"


def _unbindable(
    results: list[ServiceResult],
    unbindable: Mapping[tuple[str, int], str],
    findings: list[Finding],
) -> set[tuple[str, Bind]]:
    lost = set()
    for result in results:
        for frontend in result.frontends:
            for bind in frontend.binds:
                why = unbindable.get((bind.ip, bind.port))
                if why is not None:
                    lost.add((frontend.name, bind))
                    findings.append(
                        warning(
                            subject("Service", frontend.namespace, frontend.service),
                            f"port {frontend.port_key}",
                            f"{bind.address} cannot be listened on by this host ({why}); not bound "
                            "until it can be",
                        )
                    )
    return lost


def translate_service(
    key: Key,
    service: JSON,
    *,
    slices: tuple[JSON, ...],
    endpoints: JSON | None,
    settings: TranslateSettings,
) -> ServiceResult:
    """One Service with its EndpointSlices (or, without slices, its v1 Endpoints)."""
    who = subject("Service", key.namespace, key.name)
    networks = pool_networks(settings)
    # The claim on a pool address comes first and stays whatever happens to the rest: a
    # service that is skipped for a while (another proxy's label, no TCP port left, a field
    # error) keeps its address, so no younger service takes it meanwhile.
    claim = _pool_claim(key, service, networks) if networks else None
    try:
        result = _translate_service(
            key=key, service=service, who=who, slices=slices, endpoints=endpoints, settings=settings
        )
    except FieldError as exc:
        result = ServiceResult(
            findings=(
                warning(who, exc.field, f"{exc.message}; service skipped", SkipReason.INVALID),
            )
        )
    return replace(result, pool=claim) if result.pool != claim else result


def _pool_claim(
    key: Key, service: JSON, networks: Sequence[vips_mod.IPNetwork]
) -> vips_mod.Claim | None:
    """The service's claim on pool addresses: every Service but the headless and ExternalName
    ones (which never have an address), whether it is served or not. Garbage in its fields makes
    a claim without a request (and without a creation time: the newest)."""
    try:
        meta = get_dict(service, "metadata", "metadata")
        if _addressless(get_dict(service, "spec", "spec")) is not None:
            return None
    except FieldError:
        return vips_mod.Claim(key.namespace, key.name, "")
    created = grammar.timestamp(meta.get("creationTimestamp")) or ""
    requested: tuple[str, ...] = ()
    annotations = meta.get("annotations")
    value = annotations.get(VIP) if isinstance(annotations, dict) else None
    if isinstance(value, str):
        with contextlib.suppress(grammar.GrammarError):  # reported when it is translated
            requested = tuple(ip for ip in tuning.vip_request(value) if _in_pool(ip, networks))
    return vips_mod.Claim(key.namespace, key.name, created, requested)


def _in_pool(ip: str, networks: Sequence[vips_mod.IPNetwork]) -> bool:
    """An address the pool may give a service (inside a network, not one it reserves)."""
    return any(vips_mod.holds(n, grammar.ip_literal(ip)) for n in networks)


def _translate_service(
    *,
    key: Key,
    service: JSON,
    who: str,
    slices: tuple[JSON, ...],
    endpoints: JSON | None,
    settings: TranslateSettings,
) -> ServiceResult:
    for part, value in (("metadata.namespace", key.namespace), ("metadata.name", key.name)):
        try:
            grammar.dns_label(value)
        except grammar.GrammarError as exc:
            return ServiceResult(
                findings=(warning(who, part, f"{exc}; service skipped", SkipReason.INVALID),)
            )
    meta = get_dict(service, "metadata", "metadata")
    svc_labels = string_map(meta, "labels", "metadata.labels")
    spec = get_dict(service, "spec", "spec")

    skip = _skip_reason(svc_labels, spec, settings)
    if skip is not None:
        reason, field_path, message = skip
        return ServiceResult(findings=(info(who, field_path, message, reason),))

    findings: list[Finding] = []
    options, annotation_findings = tuning.parse(
        string_map(meta, "annotations", "metadata.annotations"), subject=who
    )
    findings.extend(annotation_findings)
    networks = pool_networks(settings)
    vips = service_vips(service, who=who, findings=findings, cluster_ips=not networks)
    created = grammar.timestamp(meta.get("creationTimestamp")) or ""
    if networks:
        if not all(_in_pool(ip, networks) for ip in options.vips):
            findings.append(
                warning(
                    who,
                    f"metadata.annotations[{VIP}]",
                    "an address outside --vip-cidr (or its network, broadcast or anycast "
                    "address) is ignored",
                )
            )
    elif options.vips:
        findings.append(
            warning(who, f"metadata.annotations[{VIP}]", "has no effect unless --vip-mode is pool")
        )
    if not vips and not networks:
        findings.append(
            warning(who, "spec.clusterIPs", "no usable VIP; service skipped", SkipReason.NO_VIP)
        )
        return ServiceResult(findings=tuple(findings))
    affinity = _affinity(
        spec, vips, who, findings, settings, ipv6=any(n.version == 6 for n in networks)
    )
    source_rules = _source_rules(spec, options.source_ranges, vips, who, findings)
    check = None
    if options.check is not CheckKind.NONE:
        check = HealthCheck(
            options.check,
            options.check_interval_ms,
            options.check_rise,
            options.check_fall,
            options.check_path,
        )
    publish_not_ready = bool(
        get_bool(spec, "publishNotReadyAddresses", "spec.publishNotReadyAddresses")
    )
    groups = (
        [_parse_slice(s, settings, findings) for s in slices]
        if slices
        else _parse_endpoints(endpoints, settings, findings)
    )

    frontends: list[Frontend] = []
    backends: list[Backend] = []
    served: list[ServicePort] = []
    seen_keys: set[str] = set()
    ports = get_list(spec, "ports", "spec.ports")
    for index, raw_port in enumerate(ports):
        port = _service_port(raw_port, index, who, findings)
        if port is None:
            continue
        pkey = names.port_key(name=port.name, port=port.port)
        if pkey in seen_keys:
            findings.append(
                warning(
                    who,
                    f"spec.ports[{index}]",
                    f"duplicate port {pkey}; port skipped",
                    SkipReason.INVALID,
                )
            )
            continue
        seen_keys.add(pkey)
        servers = _servers(
            groups,
            port,
            publish_not_ready=publish_not_ready,
            free=options.slots_free if options.slots_free is not None else settings.slots_free,
            block=settings.slots_block,
        )
        name = names.proxy_name(namespace=key.namespace, service=key.name, port_key=pkey)
        backends.append(
            Backend(
                name=name,
                namespace=key.namespace,
                service=key.name,
                port_key=pkey,
                servers=servers,
                balance=options.balance,
                connect_timeout_ms=options.connect_timeout_ms,
                server_timeout_ms=options.server_timeout_ms,
                tunnel_timeout_ms=options.tunnel_timeout_ms,
                check=check,
                server_maxconn=options.server_maxconn,
                proxy_protocol=options.proxy_protocol,
                affinity=affinity,
                source_rules=source_rules,
            )
        )
        frontends.append(
            Frontend(
                name=names.frontend_name(name),
                namespace=key.namespace,
                service=key.name,
                port_key=pkey,
                protocol=port.protocol,
                binds=tuple(Bind(v.ip, port.port) for v in vips),
                backend=name,
                port=port.port,
                client_timeout_ms=options.client_timeout_ms,
                source_rules=source_rules,
            )
        )
        served.append(port)

    if not served:
        findings.append(
            info(
                who, "spec.ports", "no TCP port to serve; service skipped", SkipReason.NO_TCP_PORTS
            )
        )
        return ServiceResult(findings=tuple(findings))
    entry = ServiceEntry(
        key.namespace,
        key.name,
        tuple(v.ip for v in vips),
        tuple(served),
        primary=tuple(v.ip for v in vips if v.claim is Claim.CLUSTER_IP),
    )
    return ServiceResult(tuple(frontends), tuple(backends), entry, tuple(findings), vips, created)


def _skip_reason(
    svc_labels: Mapping[str, str], spec: JSON, settings: TranslateSettings
) -> tuple[SkipReason, str, str] | None:
    """Services that are not ours to serve, by design (reported as info, not as warnings)."""
    if PROXY_NAME_LABEL in svc_labels and svc_labels[PROXY_NAME_LABEL] != settings.proxy_name:
        ours = settings.proxy_name or "(none: --proxy-name unset)"
        return (
            SkipReason.OTHER_PROXY,
            f"metadata.labels[{PROXY_NAME_LABEL}]",
            f"served by proxy {shown(svc_labels[PROXY_NAME_LABEL])}, not ours {ours}; skipped",
        )
    if HEADLESS_LABEL in svc_labels:
        return (
            SkipReason.HEADLESS_LABEL,
            f"metadata.labels[{HEADLESS_LABEL}]",
            "labelled headless; skipped",
        )
    return _addressless(spec)


def _addressless(spec: JSON) -> tuple[SkipReason, str, str] | None:
    """ExternalName and headless services, which never have an address of their own."""
    if get_str(spec, "type", "spec.type") == "ExternalName":
        return SkipReason.EXTERNAL_NAME, "spec.type", "ExternalName is resolved by DNS; skipped"
    cluster_ips = get_list(spec, "clusterIPs", "spec.clusterIPs")
    if get_str(spec, "clusterIP", "spec.clusterIP") == "None" or cluster_ips[:1] == ["None"]:
        return SkipReason.HEADLESS, "spec.clusterIP", "headless (clusterIP: None); skipped"
    return None


def service_vips(
    service: JSON, *, who: str, findings: list[Finding], cluster_ips: bool = True
) -> tuple[Vip, ...]:
    """The addresses a service is bound on: spec.clusterIPs (or clusterIP; unless `cluster_ips`
    is false: --vip-mode pool), spec.externalIPs and status.loadBalancer.ingress[].ip, in that
    order, each once. With pool addresses (assemble), the one place VIPs are chosen."""
    spec = get_dict(service, "spec", "spec")
    status = get_dict(service, "status", "status")
    sources: list[tuple[Claim, str, object]] = []
    if cluster_ips:
        listed = get_list(spec, "clusterIPs", "spec.clusterIPs")
        if listed:
            sources += [
                (Claim.CLUSTER_IP, f"spec.clusterIPs[{i}]", ip) for i, ip in enumerate(listed)
            ]
        elif single := get_str(spec, "clusterIP", "spec.clusterIP"):
            sources.append((Claim.CLUSTER_IP, "spec.clusterIP", single))
    sources += [
        (Claim.EXTERNAL_IP, f"spec.externalIPs[{i}]", ip)
        for i, ip in enumerate(get_list(spec, "externalIPs", "spec.externalIPs"))
    ]
    load_balancer = get_dict(status, "loadBalancer", "status.loadBalancer")
    for i, ingress in enumerate(get_list(load_balancer, "ingress", "status.loadBalancer.ingress")):
        path = f"status.loadBalancer.ingress[{i}]"
        if not isinstance(ingress, dict):
            findings.append(warning(who, path, "expected a mapping; ignored"))
            continue
        if ingress.get("ip") is not None:
            sources.append((Claim.LOAD_BALANCER, f"{path}.ip", ingress["ip"]))
    vips: dict[str, Vip] = {}
    for claim, path, raw in sources:
        try:
            ip, version = grammar.ip_text(raw)
        except grammar.GrammarError as exc:
            findings.append(warning(who, path, f"{shown(raw)}: {exc}; address ignored"))
            continue
        # External IPs are refused on special addresses by the API server (k/k ValidateService:
        # ValidateNonSpecialIP); no address at all can be listened on when it is a wildcard,
        # multicast or broadcast.
        special = grammar.special_ip(ip, version) if claim is Claim.EXTERNAL_IP else None
        problem = special or grammar.unlistenable_ip(ip, version)
        if problem is not None:
            findings.append(
                warning(who, path, f"{ip} is {problem}: not a service address; ignored")
            )
            continue
        if ip not in vips:
            vips[ip] = Vip(ip, claim)
    return tuple(vips.values())


def _affinity(
    spec: JSON,
    vips: tuple[Vip, ...],
    who: str,
    findings: list[Finding],
    settings: TranslateSettings,
    *,
    ipv6: bool = False,
) -> Affinity | None:
    """`ipv6`: the service will get an IPv6 pool address too."""
    mode = get_str(spec, "sessionAffinity", "spec.sessionAffinity")
    if mode in (None, "None"):
        return None
    if mode != "ClientIP":
        findings.append(
            warning(who, "spec.sessionAffinity", f"unknown value {shown(mode)}; no affinity")
        )
        return None
    config = get_dict(
        get_dict(spec, "sessionAffinityConfig", "spec.sessionAffinityConfig"),
        "clientIP",
        "spec.sessionAffinityConfig.clientIP",
    )
    timeout = DEFAULT_AFFINITY_TIMEOUT_S
    raw = config.get("timeoutSeconds")
    if raw is not None:
        try:
            timeout = grammar.integer(raw, low=1, high=MAX_AFFINITY_TIMEOUT_S)
        except grammar.GrammarError as exc:
            findings.append(
                warning(
                    who,
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    f"{shown(raw)}: {exc}; using {DEFAULT_AFFINITY_TIMEOUT_S}",
                )
            )
    table_type = "ipv6" if ipv6 or any(":" in v.ip for v in vips) else "ip"
    return Affinity(table_type, timeout, settings.affinity_table_size)


def _source_rules(
    spec: JSON,
    ranges: tuple[str, ...] | None,
    vips: tuple[Vip, ...],
    who: str,
    findings: list[Finding],
) -> tuple[SourceRule, ...]:
    rules = []
    if ranges is not None:
        rules.append(SourceRule(ranges))
    raw = get_list(spec, "loadBalancerSourceRanges", "spec.loadBalancerSourceRanges")
    lb_ips = tuple(v.ip for v in vips if v.claim is Claim.LOAD_BALANCER)
    if raw and lb_ips:
        try:
            sources = tuning.canonical_ranges(grammar.api_cidr(r) for r in raw)
        except grammar.GrammarError as exc:
            findings.append(
                warning(
                    who,
                    "spec.loadBalancerSourceRanges",
                    f"{exc}; rejecting every connection to the load balancer IPs",
                )
            )
            sources = ()
        rules.append(SourceRule(sources, lb_ips))
    return tuple(rules)


def _service_port(raw: object, index: int, who: str, findings: list[Finding]) -> ServicePort | None:
    path = f"spec.ports[{index}]"
    if not isinstance(raw, dict):
        findings.append(warning(who, path, "expected a mapping; port skipped", SkipReason.INVALID))
        return None
    protocol = raw.get("protocol") or "TCP"
    number = raw.get("port")
    if protocol in ("UDP", "SCTP"):
        reason = SkipReason.UDP_PORT if protocol == "UDP" else SkipReason.SCTP_PORT
        # Skipped by design, nothing the user can fix: information, not a warning (--strict
        # must pass on a real cluster, and every cluster has a UDP DNS port).
        findings.append(
            info(
                who,
                f"{path}.protocol",
                f"{protocol} port {shown(number)} skipped: kube2haproxy serves TCP ports only",
                reason,
            )
        )
        return None
    if protocol != "TCP":
        findings.append(
            warning(
                who,
                f"{path}.protocol",
                f"unknown protocol {shown(protocol)}; port skipped",
                SkipReason.INVALID,
            )
        )
        return None
    try:
        port = grammar.integer(number, low=1, high=65535) if isinstance(number, int) else None
    except grammar.GrammarError:
        port = None
    if port is None:
        findings.append(
            warning(
                who,
                f"{path}.port",
                f"{shown(number)}: expected an integer in 1..65535; port skipped",
                SkipReason.INVALID,
            )
        )
        return None
    name = raw.get("name") or ""
    if name:
        try:
            grammar.dns_label(name)
        except grammar.GrammarError as exc:
            findings.append(
                warning(
                    who, f"{path}.name", f"{shown(name)}: {exc}; port skipped", SkipReason.INVALID
                )
            )
            return None
    return ServicePort(name, port, protocol)


# --- endpoints -------------------------------------------------------------------------------
# This is the hot path (100,000 endpoints at 10,000 services): endpoints travel as plain tuples.

NOT_READY, SERVING_TERMINATING, READY = 0, 1, 2  # an endpoint's state; merging keeps the highest
ordinary_ipv4 = grammar.ORDINARY_IPV4.fullmatch


@dataclass(frozen=True, slots=True)
class _Group:
    """Addresses sharing one port list: an EndpointSlice, or one subset of a v1 Endpoints."""

    ports: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, protocol) -> port
    addresses: tuple[tuple[str, int], ...] = ()  # (canonical IP, state)


def _group_ports(
    raw_ports: list[object], path: str, who: str, findings: list[Finding]
) -> dict[tuple[str, str], int]:
    ports: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(raw_ports):
        if not isinstance(raw, dict):
            findings.append(warning(who, f"{path}[{i}]", "expected a mapping; port ignored"))
            continue
        number = raw.get("port")
        if number is None:  # "no restriction on ports": nothing a proxy can connect to
            continue
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            findings.append(
                warning(
                    who,
                    f"{path}[{i}].port",
                    f"{shown(number)}: expected an integer in 1..65535; ignored",
                )
            )
            continue
        name = raw.get("name") or ""
        protocol = raw.get("protocol") or "TCP"
        if name:
            try:
                grammar.dns_label(name)
            except grammar.GrammarError as exc:
                findings.append(warning(who, f"{path}[{i}].name", f"{shown(name)}: {exc}; ignored"))
                continue
        if protocol not in ("TCP", "UDP", "SCTP"):
            findings.append(
                warning(
                    who, f"{path}[{i}].protocol", f"unknown protocol {shown(protocol)}; ignored"
                )
            )
            continue
        ports[(name, protocol)] = number
    return ports


def _endpoint_ip(
    raw: object,
    family: int,
    *,
    who: str,
    settings: TranslateSettings,
    findings: list[Finding],
    path: str,
    index: int,
) -> str | None:
    """The canonical address of an endpoint, or None (reported at path.format(index)) when it
    cannot be one."""
    try:
        ip, version = grammar.ip_text(raw)
    except grammar.GrammarError as exc:
        findings.append(warning(who, path.format(index), f"{shown(raw)}: {exc}; endpoint ignored"))
        return None
    if family and version != family:
        findings.append(
            warning(who, path.format(index), f"{ip} is not IPv{family}; endpoint ignored")
        )
        return None
    special = grammar.special_ip(ip, version)
    if special is None or (special == "loopback" and settings.allow_loopback_endpoints):
        return ip
    # The API server refuses these for endpoints (k/k ValidateNonSpecialIP, from
    # validateEndpointAddress and the discovery validateEndpoints); a manifest gets the same
    # rule, so no hand-made slice points the pool at itself or a metadata service.
    findings.append(
        warning(who, path.format(index), f"{ip} is {special}: not an endpoint; endpoint ignored")
    )
    return None


def _state(conditions: object, index: int) -> int:
    """READY, SERVING_TERMINATING or NOT_READY from EndpointConditions. Unset ready and
    serving mean true, unset terminating false (the API's contract)."""
    if conditions is None:
        return READY
    path = f"endpoints[{index}].conditions"
    if not isinstance(conditions, dict):
        raise FieldError(path, "expected a mapping")
    ready = conditions.get("ready")
    if ready is True or ready is None:  # the common case; serving and terminating are moot
        return READY
    serving = conditions.get("serving")
    terminating = conditions.get("terminating")
    for name, value in (("ready", ready), ("serving", serving), ("terminating", terminating)):
        if value is not None and not isinstance(value, bool):
            raise FieldError(f"{path}.{name}", f"expected a boolean, got {type(value).__name__}")
    if serving is not False and terminating is True:
        return SERVING_TERMINATING
    return NOT_READY


def _metadata(obj: JSON) -> JSON:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _parse_slice(slice_obj: JSON, settings: TranslateSettings, findings: list[Finding]) -> _Group:
    meta = _metadata(slice_obj)
    who = subject("EndpointSlice", meta.get("namespace", "default"), meta.get("name"))
    try:
        address_type = get_str(slice_obj, "addressType", "addressType")
        if address_type == "FQDN":
            findings.append(
                info(who, "addressType", "FQDN endpoints are not proxied; slice skipped")
            )
            return _Group()
        if address_type not in ("IPv4", "IPv6"):
            findings.append(
                warning(
                    who, "addressType", f"unknown address type {shown(address_type)}; slice skipped"
                )
            )
            return _Group()
        family = 4 if address_type == "IPv4" else 6
        ports = _group_ports(get_list(slice_obj, "ports", "ports"), "ports", who, findings)
        addresses = []
        for i, raw in enumerate(get_list(slice_obj, "endpoints", "endpoints")):
            # Paths are only formatted for a finding: this loop runs once per endpoint.
            try:
                if not isinstance(raw, dict):
                    raise FieldError(f"endpoints[{i}]", "expected a mapping")
                listed = raw.get("addresses")
                if not isinstance(listed, list) or not listed:
                    raise FieldError(f"endpoints[{i}].addresses", "expected a non-empty list")
                state = _state(raw.get("conditions"), i)
            except FieldError as exc:
                findings.append(warning(who, exc.field, f"{exc.message}; endpoint ignored"))
                continue
            # Addresses of one endpoint are fungible; kube-proxy uses the first.
            first = listed[0]
            if family == 4 and isinstance(first, str) and ordinary_ipv4(first):
                addresses.append((first, state))
                continue
            ip = _endpoint_ip(
                first,
                family,
                who=who,
                settings=settings,
                findings=findings,
                path="endpoints[{}].addresses[0]",
                index=i,
            )
            if ip is not None:
                addresses.append((ip, state))
        return _Group(ports, tuple(addresses))
    except FieldError as exc:
        findings.append(warning(who, exc.field, f"{exc.message}; slice skipped"))
        return _Group()


def _parse_endpoints(
    endpoints: JSON | None, settings: TranslateSettings, findings: list[Finding]
) -> list[_Group]:
    """v1 Endpoints, for a service without EndpointSlices (old clusters and old dumps)."""
    if endpoints is None:
        return []
    meta = _metadata(endpoints)
    who = subject("Endpoints", meta.get("namespace", "default"), meta.get("name"))
    groups = []
    try:
        for s, subset in enumerate(get_list(endpoints, "subsets", "subsets")):
            path = f"subsets[{s}]"
            if not isinstance(subset, dict):
                findings.append(warning(who, path, "expected a mapping; subset skipped"))
                continue
            ports = _group_ports(
                get_list(subset, "ports", f"{path}.ports"), f"{path}.ports", who, findings
            )
            addresses = []
            for listing, state in (("addresses", READY), ("notReadyAddresses", NOT_READY)):
                for i, raw in enumerate(get_list(subset, listing, f"{path}.{listing}")):
                    ip = _endpoint_ip(
                        raw.get("ip") if isinstance(raw, dict) else None,
                        0,
                        who=who,
                        settings=settings,
                        findings=findings,
                        path=f"{path}.{listing}[{{}}].ip",
                        index=i,
                    )
                    if ip is not None:
                        addresses.append((ip, state))
            groups.append(_Group(ports, tuple(addresses)))
    except FieldError as exc:
        findings.append(warning(who, exc.field, f"{exc.message}; Endpoints ignored"))
        return []
    return groups


def _servers(
    groups: list[_Group],
    port: ServicePort,
    *,
    publish_not_ready: bool,
    free: int,
    block: int,
) -> tuple[Server, ...]:
    """The server lines (slots) of one service port.

    Endpoints are chosen as kube-proxy chooses: ready ones; when none, the serving terminating
    ones (a rollout's last pods still take traffic); publishNotReadyAddresses takes every
    endpoint. Serving terminating endpoints are kept beside ready ones as draining servers, so
    their open connections finish while new ones go elsewhere. An endpoint listed by several
    slices (moving between them) counts once, with its most ready report. Slots: slots.py."""
    best: dict[tuple[str, int], int] = {}
    wanted = (port.name, port.protocol)
    for group in groups:
        number = group.ports.get(wanted)
        if number is None:
            continue
        for ip, state in group.addresses:
            key = (ip, number)
            if best.get(key, -1) < state:
                best[key] = state
    chosen: dict[tuple[str, int], ServerState]
    if publish_not_ready:
        chosen = dict.fromkeys(best, ServerState.READY)
    elif any(state == READY for state in best.values()):
        chosen = {k: ServerState.READY for k, state in best.items() if state == READY}
        chosen.update(
            (k, ServerState.DRAIN) for k, state in best.items() if state == SERVING_TERMINATING
        )
    else:
        chosen = {k: ServerState.READY for k, state in best.items() if state == SERVING_TERMINATING}
    total = slots.slot_count(len(best), free=free, block=block)
    return slots.layout([(ip, port, state) for (ip, port), state in chosen.items()], total)
