"""services: one Service, with its endpoints, becomes its frontends and backends.

The Kubernetes rules of a Service live here: what is not ours to serve (skip reasons, reported
as information), its ports (TCP only, as the API server validates them), session affinity,
source ranges, and its annotations (tuning.py) on the frontends and backends. Pure and
cacheable: the same objects always give the same result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from kube2haproxy import grammar, names, tuning
from kube2haproxy.errors import FieldError, GrammarError
from kube2haproxy.findings import Collector, Finding, SkipReason, shown, subject
from kube2haproxy.model import (
    Affinity,
    Backend,
    Bind,
    CheckKind,
    Frontend,
    HealthCheck,
    ServiceEntry,
    ServicePort,
    SourceRule,
    value_class,
)
from kube2haproxy.resources import (
    JSON,
    Key,
    get_bool,
    get_dict,
    get_list,
    get_str,
    string_map,
)
from kube2haproxy.settings import TranslateSettings
from kube2haproxy.translate import endpoints
from kube2haproxy.translate.addresses import (
    VIP,
    AddressClaim,
    Via,
    Vip,
    address_claim,
    addressless,
    in_vip_cidr,
    service_vips,
    vip_cidr_networks,
)

PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"
DEFAULT_AFFINITY_TIMEOUT_S = 10_800
MAX_AFFINITY_TIMEOUT_S = 86_400

# Annotations that a backend or a frontend takes as they are: a field of tuning.ServiceOptions
# and of the model's Backend (or Frontend) of the same name. A new one needs no line here.
_BACKEND_OPTIONS = tuple(
    f.name for f in fields(tuning.ServiceOptions) if f.name in {g.name for g in fields(Backend)}
)
_FRONTEND_OPTIONS = tuple(
    f.name for f in fields(tuning.ServiceOptions) if f.name in {g.name for g in fields(Frontend)}
)


@value_class
class ServiceResult:
    """One service translated on its own, before conflicts with other services are settled."""

    frontends: tuple[Frontend, ...] = ()
    backends: tuple[Backend, ...] = ()
    entry: ServiceEntry | None = None
    findings: tuple[Finding, ...] = ()
    vips: tuple[Vip, ...] = ()
    created: str = ""  # creationTimestamp; older services win address conflicts
    claim: AddressClaim | None = None  # --vip-mode pool: its claim on a pool address


def translate_service(
    key: Key,
    service: JSON,
    *,
    slices: tuple[JSON, ...],
    endpoints: JSON | None,
    settings: TranslateSettings,
) -> ServiceResult:
    """One Service with its EndpointSlices (or, without slices, its v1 Endpoints)."""
    found = Collector(subject("Service", key.namespace, key.name))
    networks = vip_cidr_networks(settings)
    # The claim on a pool address comes first and stays whatever happens to the rest: a
    # service that is skipped for a while (another proxy's label, no TCP port left, a field
    # error) keeps its address, so no younger service takes it meanwhile.
    claim = address_claim(key, service, networks) if networks else None
    try:
        result = _translate_service(
            key=key,
            service=service,
            found=found,
            slices=slices,
            endpoint_objects=endpoints,
            settings=settings,
        )
    except FieldError as exc:
        found.found.clear()
        found.warn(exc.field, f"{exc.message}; service skipped", SkipReason.INVALID)
        result = ServiceResult()
    # Built whole, not by dataclasses.replace (which costs as much again at 10,000 services).
    return ServiceResult(
        result.frontends,
        result.backends,
        result.entry,
        tuple(found.found),
        result.vips,
        result.created,
        claim,
    )


def _translate_service(
    *,
    key: Key,
    service: JSON,
    found: Collector,
    slices: tuple[JSON, ...],
    endpoint_objects: JSON | None,
    settings: TranslateSettings,
) -> ServiceResult:
    for part, value in (("metadata.namespace", key.namespace), ("metadata.name", key.name)):
        try:
            grammar.dns_label(value)
        except GrammarError as exc:
            found.warn(part, f"{exc}; service skipped", SkipReason.INVALID)
            return ServiceResult()
    meta = get_dict(service, "metadata", "metadata")
    svc_labels = string_map(meta, "labels", "metadata.labels")
    spec = get_dict(service, "spec", "spec")

    skip = _skip_reason(svc_labels, spec, settings)
    if skip is not None:
        reason, field_path, message = skip
        found.note(field_path, message, reason)
        return ServiceResult()

    options, annotation_findings = tuning.parse(
        string_map(meta, "annotations", "metadata.annotations"), subject=found.subject
    )
    found.found.extend(annotation_findings)
    networks = vip_cidr_networks(settings)
    vips = service_vips(service, found, cluster_ips=not networks)
    created = grammar.timestamp(meta.get("creationTimestamp")) or ""
    if networks:
        if not all(in_vip_cidr(ip, networks) for ip in options.vips):
            found.warn(
                f"metadata.annotations[{VIP}]",
                "an address outside --vip-cidr (or its network, broadcast or anycast "
                "address) is ignored",
            )
    elif options.vips:
        found.warn(f"metadata.annotations[{VIP}]", "has no effect unless --vip-mode is pool")
    if not vips and not networks:
        found.warn("spec.clusterIPs", "no usable VIP; service skipped", SkipReason.NO_VIP)
        return ServiceResult()
    affinity = _affinity(spec, vips, found, settings, ipv6=any(n.version == 6 for n in networks))
    source_rules = _source_rules(spec, options.source_ranges, vips, found)
    check = None
    if options.check_kind is not CheckKind.NONE:
        check = HealthCheck(
            options.check_kind,
            options.check_interval_ms,
            options.check_rise,
            options.check_fall,
            options.check_path,
        )
    publish_not_ready = bool(
        get_bool(spec, "publishNotReadyAddresses", "spec.publishNotReadyAddresses")
    )
    groups = endpoints.groups(slices, endpoint_objects, settings, found)
    backend_options, frontend_options = _options_of(options)

    frontends: list[Frontend] = []
    backends: list[Backend] = []
    served: list[ServicePort] = []
    seen_keys: set[str] = set()
    for index, raw_port in enumerate(get_list(spec, "ports", "spec.ports")):
        port = _service_port(raw_port, index, found)
        if port is None:
            continue
        pkey = names.port_key(name=port.name, port=port.port)
        if pkey in seen_keys:
            found.warn(
                f"spec.ports[{index}]", f"duplicate port {pkey}; port skipped", SkipReason.INVALID
            )
            continue
        seen_keys.add(pkey)
        servers = endpoints.servers(
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
                check=check,
                affinity=affinity,
                source_rules=source_rules,
                **backend_options,
            )
        )
        frontends.append(
            Frontend(
                name=names.frontend_name(name),
                namespace=key.namespace,
                service=key.name,
                port_key=pkey,
                protocol=port.protocol,
                binds=tuple([Bind(v.ip, port.port) for v in vips]),
                backend=name,
                port=port.port,
                source_rules=source_rules,
                **frontend_options,
            )
        )
        served.append(port)

    if not served:
        found.note("spec.ports", "no TCP port to serve; service skipped", SkipReason.NO_TCP_PORTS)
        return ServiceResult()
    entry = ServiceEntry(
        key.namespace,
        key.name,
        tuple([v.ip for v in vips]),
        tuple(served),
        primary=tuple([v.ip for v in vips if v.via is Via.CLUSTER_IP]),
    )
    return ServiceResult(tuple(frontends), tuple(backends), entry, (), vips, created)


_DEFAULT_OPTIONS = (
    {name: getattr(tuning.DEFAULTS, name) for name in _BACKEND_OPTIONS},
    {name: getattr(tuning.DEFAULTS, name) for name in _FRONTEND_OPTIONS},
)


def _options_of(options: tuning.ServiceOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """The annotations' fields a backend and a frontend take (most services have none)."""
    if options is tuning.DEFAULTS:
        return _DEFAULT_OPTIONS
    return (
        {name: getattr(options, name) for name in _BACKEND_OPTIONS},
        {name: getattr(options, name) for name in _FRONTEND_OPTIONS},
    )


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
    return addressless(spec)


def _affinity(
    spec: JSON,
    vips: tuple[Vip, ...],
    found: Collector,
    settings: TranslateSettings,
    *,
    ipv6: bool = False,
) -> Affinity | None:
    """sessionAffinity (k/k ValidateService: None or ClientIP; timeoutSeconds in 1..86400).
    `ipv6`: the service will get an IPv6 pool address too."""
    mode = get_str(spec, "sessionAffinity", "spec.sessionAffinity")
    if mode in (None, "None"):
        return None
    if mode != "ClientIP":
        found.warn("spec.sessionAffinity", f"unknown value {shown(mode)}; no affinity")
        return None
    client_ip = get_dict(
        get_dict(spec, "sessionAffinityConfig", "spec.sessionAffinityConfig"),
        "clientIP",
        "spec.sessionAffinityConfig.clientIP",
    )
    timeout = DEFAULT_AFFINITY_TIMEOUT_S
    raw = client_ip.get("timeoutSeconds")
    if raw is not None:
        try:
            timeout = grammar.integer(raw, low=1, high=MAX_AFFINITY_TIMEOUT_S)
        except GrammarError as exc:
            found.warn(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                f"{shown(raw)}: {exc}; using {DEFAULT_AFFINITY_TIMEOUT_S}",
            )
    table_type = "ipv6" if ipv6 or any(":" in v.ip for v in vips) else "ip"
    return Affinity(table_type, timeout, settings.affinity_table_size)


def _source_rules(
    spec: JSON, ranges: tuple[str, ...] | None, vips: tuple[Vip, ...], found: Collector
) -> tuple[SourceRule, ...]:
    rules = []
    if ranges is not None:
        rules.append(SourceRule(ranges))
    raw = get_list(spec, "loadBalancerSourceRanges", "spec.loadBalancerSourceRanges")
    lb_ips = tuple(v.ip for v in vips if v.via is Via.LOAD_BALANCER)
    if raw and lb_ips:
        try:
            sources = tuning.canonical_ranges(grammar.api_cidr(r) for r in raw)
        except GrammarError as exc:
            found.warn(
                "spec.loadBalancerSourceRanges",
                f"{exc}; rejecting every connection to the load balancer IPs",
            )
            sources = ()
        rules.append(SourceRule(sources, lb_ips))
    return tuple(rules)


def _service_port(raw: object, index: int, found: Collector) -> ServicePort | None:
    """A port of the Service (k/k validateServicePort: protocol TCP, UDP or SCTP, port in
    1..65535, name a DNS label), or None (reported) when it is not one we serve."""
    path = f"spec.ports[{index}]"
    if not isinstance(raw, dict):
        found.warn(path, "expected a mapping; port skipped", SkipReason.INVALID)
        return None
    protocol = raw.get("protocol") or "TCP"
    number = raw.get("port")
    if protocol in ("UDP", "SCTP"):
        reason = SkipReason.UDP_PORT if protocol == "UDP" else SkipReason.SCTP_PORT
        # Skipped by design, nothing the user can fix: information, not a warning (--strict
        # must pass on a real cluster, and every cluster has a UDP DNS port).
        found.note(
            f"{path}.protocol",
            f"{protocol} port {shown(number)} skipped: kube2haproxy serves TCP ports only",
            reason,
        )
        return None
    if protocol != "TCP":
        found.warn(
            f"{path}.protocol",
            f"unknown protocol {shown(protocol)}; port skipped",
            SkipReason.INVALID,
        )
        return None
    try:
        port = grammar.integer(number, low=1, high=65535) if isinstance(number, int) else None
    except GrammarError:
        port = None
    if port is None:
        found.warn(
            f"{path}.port",
            f"{shown(number)}: expected an integer in 1..65535; port skipped",
            SkipReason.INVALID,
        )
        return None
    name = raw.get("name") or ""
    if name:
        try:
            grammar.dns_label(name)
        except GrammarError as exc:
            found.warn(f"{path}.name", f"{shown(name)}: {exc}; port skipped", SkipReason.INVALID)
            return None
    return ServicePort(name, port, protocol)
