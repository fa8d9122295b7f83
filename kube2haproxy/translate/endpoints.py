"""endpoints: EndpointSlices (or v1 Endpoints) become the server lines of a service port.

The hot path: 100,000 endpoints at 10,000 services, so endpoints travel as plain tuples and
paths are formatted only for a finding. Readiness is read as kube-proxy reads it, addresses as
the API server validates them (grammar.py), and the lines are laid out in slots (slots.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kube2haproxy import grammar, slots
from kube2haproxy.errors import FieldError, GrammarError
from kube2haproxy.findings import Collector, shown, subject
from kube2haproxy.model import Server, ServerState, ServicePort
from kube2haproxy.resources import JSON, get_list, get_str
from kube2haproxy.settings import TranslateSettings

NOT_READY, SERVING_TERMINATING, READY = 0, 1, 2  # an endpoint's state; merging keeps the highest
ordinary_ipv4 = grammar.ORDINARY_IPV4.fullmatch


@dataclass(frozen=True, slots=True)
class Group:
    """Addresses sharing one port list: an EndpointSlice, or one subset of a v1 Endpoints."""

    ports: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, protocol) -> port
    addresses: tuple[tuple[str, int], ...] = ()  # (canonical IP, state)


def groups(
    slices: Sequence[JSON], endpoints: JSON | None, settings: TranslateSettings, found: Collector
) -> list[Group]:
    """The endpoint groups of a service: its EndpointSlices, or without any, its v1 Endpoints."""
    if slices:
        return [parse_slice(s, settings, found) for s in slices]
    return parse_endpoints(endpoints, settings, found)


def group_ports(raw_ports: list[object], path: str, found: Collector) -> dict[tuple[str, str], int]:
    ports: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(raw_ports):
        if not isinstance(raw, dict):
            found.warn(f"{path}[{i}]", "expected a mapping; port ignored")
            continue
        number = raw.get("port")
        if number is None:  # "no restriction on ports": nothing a proxy can connect to
            continue
        # The API server does not validate an EndpointSlice's port numbers: one that no proxy
        # can connect to is left out here.
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            found.warn(
                f"{path}[{i}].port", f"{shown(number)}: expected an integer in 1..65535; ignored"
            )
            continue
        name = raw.get("name") or ""
        protocol = raw.get("protocol") or "TCP"
        if name:
            try:
                grammar.dns_label(name)
            except GrammarError as exc:
                found.warn(f"{path}[{i}].name", f"{shown(name)}: {exc}; ignored")
                continue
        if protocol not in ("TCP", "UDP", "SCTP"):
            found.warn(f"{path}[{i}].protocol", f"unknown protocol {shown(protocol)}; ignored")
            continue
        ports[(name, protocol)] = number
    return ports


def _endpoint_ip(
    raw: object, family: int, *, settings: TranslateSettings, found: Collector, path: str
) -> str | None:
    """The canonical address of an endpoint, or None (reported at `path`) when it cannot be
    one."""
    try:
        ip, version = grammar.ip_text(raw)
    except GrammarError as exc:
        found.warn(path, f"{shown(raw)}: {exc}; endpoint ignored")
        return None
    if family and version != family:
        found.warn(path, f"{ip} is not IPv{family}; endpoint ignored")
        return None
    special = grammar.special_ip(ip, version)
    if special is None or (special == "loopback" and settings.allow_loopback_endpoints):
        return ip
    # The API server refuses these for endpoints (k/k ValidateNonSpecialIP, from
    # validateEndpointAddress and the discovery validateEndpoints); a manifest gets the same
    # rule, so no hand-made slice points the pool at itself or a metadata service.
    found.warn(path, f"{ip} is {special}: not an endpoint; endpoint ignored")
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


def state_of(conditions: object, index: int) -> int:
    """READY, SERVING_TERMINATING or NOT_READY, as `servers` reads an endpoint's conditions
    (FieldError when they are not conditions): for `explain`."""
    return _state(conditions, index)


def address_of(
    raw: object, family: int, *, settings: TranslateSettings, path: str
) -> tuple[str | None, str]:
    """An endpoint's canonical address as translate reads it, or None and why it is refused:
    for `explain`."""
    found = Collector("")
    ip = _endpoint_ip(raw, family, settings=settings, found=found, path=path)
    why = found.found[0].message.removesuffix("; endpoint ignored") if found.found else ""
    return ip, why


def _subject(kind: str, obj: JSON) -> str:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return subject(kind, meta.get("namespace", "default"), meta.get("name"))


def parse_slice(slice_obj: JSON, settings: TranslateSettings, service: Collector) -> Group:
    group = plain_slice(slice_obj)
    return group if group is not None else full_slice(slice_obj, settings, service)


def full_slice(slice_obj: JSON, settings: TranslateSettings, service: Collector) -> Group:
    """An EndpointSlice read field by field, each problem reported."""
    found = service.about(_subject("EndpointSlice", slice_obj))
    try:
        address_type = get_str(slice_obj, "addressType", "addressType")
        if address_type == "FQDN":
            found.note("addressType", "FQDN endpoints are not proxied; slice skipped")
            return Group()
        if address_type not in ("IPv4", "IPv6"):
            found.warn("addressType", f"unknown address type {shown(address_type)}; slice skipped")
            return Group()
        family = 4 if address_type == "IPv4" else 6
        ports = group_ports(get_list(slice_obj, "ports", "ports"), "ports", found)
        addresses = []
        for i, raw in enumerate(get_list(slice_obj, "endpoints", "endpoints")):
            try:
                if not isinstance(raw, dict):
                    raise FieldError(f"endpoints[{i}]", "expected a mapping")
                listed = raw.get("addresses")
                if not isinstance(listed, list) or not listed:
                    raise FieldError(f"endpoints[{i}].addresses", "expected a non-empty list")
                state = _state(raw.get("conditions"), i)
            except FieldError as exc:
                found.warn(exc.field, f"{exc.message}; endpoint ignored")
                continue
            # Addresses of one endpoint are fungible; kube-proxy uses the first.
            first = listed[0]
            if family == 4 and isinstance(first, str) and ordinary_ipv4(first):
                addresses.append((first, state))
                continue
            ip = _endpoint_ip(
                first, family, settings=settings, found=found, path=f"endpoints[{i}].addresses[0]"
            )
            if ip is not None:
                addresses.append((ip, state))
        return Group(ports, tuple(addresses))
    except FieldError as exc:
        found.warn(exc.field, f"{exc.message}; slice skipped")
        return Group()


def plain_slice(slice_obj: JSON) -> Group | None:
    """The group of an IPv4 slice on which the full reading (above) would find nothing to
    report, read without it; None for anything else, which the full reading then takes: every
    value accepted here is one it accepts, giving the same group. 100,000 endpoints at 10,000
    services pass here: exact types, one regex per address, no paths formatted."""
    if slice_obj.get("addressType") != "IPv4":
        return None
    raw_ports = slice_obj.get("ports")
    raw_endpoints = slice_obj.get("endpoints")
    if type(raw_ports) is not list or type(raw_endpoints) is not list:
        return None
    ports: dict[tuple[str, str], int] = {}
    for raw in raw_ports:
        if type(raw) is not dict:
            return None
        number = raw.get("port")
        name = raw.get("name") or ""
        protocol = raw.get("protocol") or "TCP"
        if (
            type(number) is not int
            or not 1 <= number <= 65535
            or protocol not in _PROTOCOLS
            or (name and not (type(name) is str and dns_label(name)))
        ):
            return None
        ports[(name, protocol)] = number
    addresses = []
    for raw in raw_endpoints:
        if type(raw) is not dict:
            return None
        listed = raw.get("addresses")
        if type(listed) is not list or not listed:
            return None
        conditions = raw.get("conditions")
        if conditions is None:
            state = READY
        elif type(conditions) is dict:
            ready = conditions.get("ready")
            if ready is True or ready is None:
                state = READY
            elif ready is False:
                serving = conditions.get("serving")
                terminating = conditions.get("terminating")
                if not (_boolean(serving) and _boolean(terminating)):
                    return None
                state = (
                    SERVING_TERMINATING
                    if serving is not False and terminating is True
                    else NOT_READY
                )
            else:
                return None
        else:
            return None
        first = listed[0]
        if type(first) is not str or not ordinary_ipv4(first):
            return None
        addresses.append((first, state))
    return Group(ports, tuple(addresses))


_PROTOCOLS = ("TCP", "UDP", "SCTP")
dns_label = grammar.DNS_LABEL.fullmatch


def _boolean(value: object) -> bool:
    """Unset or a JSON boolean (by identity: 0 and 1 are not booleans)."""
    return value is None or value is True or value is False


def parse_endpoints(
    endpoints: JSON | None, settings: TranslateSettings, service: Collector
) -> list[Group]:
    """v1 Endpoints, for a service without EndpointSlices (old clusters and old dumps)."""
    if endpoints is None:
        return []
    found = service.about(_subject("Endpoints", endpoints))
    out = []
    try:
        for s, subset in enumerate(get_list(endpoints, "subsets", "subsets")):
            path = f"subsets[{s}]"
            if not isinstance(subset, dict):
                found.warn(path, "expected a mapping; subset skipped")
                continue
            ports = group_ports(get_list(subset, "ports", f"{path}.ports"), f"{path}.ports", found)
            addresses = []
            for listing, state in (("addresses", READY), ("notReadyAddresses", NOT_READY)):
                for i, raw in enumerate(get_list(subset, listing, f"{path}.{listing}")):
                    ip = _endpoint_ip(
                        raw.get("ip") if isinstance(raw, dict) else None,
                        0,
                        settings=settings,
                        found=found,
                        path=f"{path}.{listing}[{i}].ip",
                    )
                    if ip is not None:
                        addresses.append((ip, state))
            out.append(Group(ports, tuple(addresses)))
    except FieldError as exc:
        found.warn(exc.field, f"{exc.message}; Endpoints ignored")
        return []
    return out


def servers(
    endpoint_groups: list[Group],
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
    for group in endpoint_groups:
        number = group.ports.get(wanted)
        if number is None:
            continue
        for ip, state in group.addresses:
            key = (ip, number)
            if best.get(key, -1) < state:
                best[key] = state
    ready_state, drain_state = ServerState.READY, ServerState.DRAIN
    if publish_not_ready:
        chosen = [(ip, number, ready_state) for (ip, number) in best]
    else:
        chosen = [
            (ip, number, ready_state) for (ip, number), state in best.items() if state == READY
        ]
        if chosen:
            chosen += [
                (ip, number, drain_state)
                for (ip, number), state in best.items()
                if state == SERVING_TERMINATING
            ]
        else:
            chosen = [
                (ip, number, ready_state)
                for (ip, number), state in best.items()
                if state == SERVING_TERMINATING
            ]
    total = slots.slot_count(len(best), free=free, block=block)
    return slots.layout(chosen, total)
