"""explain: the whole path of one Service, from its DNS names to every endpoint, and for each
endpoint or port left out, the rule that left it out.

DNS records -> VIP:port (how the service came by each address, and why one is not bound) ->
frontend (per-port: its map entry) -> backend (as HAProxy runs it) -> every endpoint its
EndpointSlices (or v1 Endpoints) list: address:port, pod and node (targetRef, nodeName), its
conditions, its server line, and HAProxy's view of that line when a controller observed it;
or why it is not served (not ready, terminating, an address the API server refuses, a slice
without the port, listed twice, ...). The same for a running controller (what it published,
status.py) and for manifests (a published value made of their translation, dryrun.py). Each
endpoint's verdict is the model's (what HAProxy runs); the rules only say why an endpoint is
missing from it. Pure: times are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from kube2haproxy import dns
from kube2haproxy.errors import FieldError
from kube2haproxy.findings import Collector, shown
from kube2haproxy.linestate import LineView
from kube2haproxy.model import Backend, Model, Server, hostport
from kube2haproxy.resources import JSON, Key
from kube2haproxy.settings import TranslateSettings
from kube2haproxy.status import (
    PENDING,
    SERVED,
    WAITING,
    Index,
    Published,
    Row,
    ServiceObjects,
    SpecPort,
    line_views,
    service_rows,
    spec_ports,
)
from kube2haproxy.translate import translate_service
from kube2haproxy.translate.addresses import Via
from kube2haproxy.translate.endpoints import (
    NOT_READY,
    READY,
    SERVING_TERMINATING,
    address_of,
    group_ports,
    state_of,
)

VERSION = 1

VIA = {
    Via.CLUSTER_IP: "cluster IP",
    Via.POOL: "pool address",
    Via.LOAD_BALANCER: "load balancer IP",
    Via.EXTERNAL_IP: "external IP",
}


@dataclass(frozen=True, slots=True)
class Address:
    """One VIP of a service port."""

    ip: str
    port: int
    via: str  # cluster IP, pool address, load balancer IP, external IP
    bound: bool
    route: str = ""  # per-port: the map entry routing it ("port-80-<hash>.map -> backend")
    reason: str = ""  # why it is not bound

    @property
    def address(self) -> str:
        return hostport(self.ip, self.port)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint a slice (or a v1 Endpoints) lists, on one service port."""

    address: str  # ip:port HAProxy connects to; the listed address as is when unusable
    source: str  # "EndpointSlice web-abc12", "Endpoints web"
    field: str  # where in it: "endpoints[0]", "subsets[0].addresses[1]"
    conditions: str  # "ready", "not ready, terminating", ...
    pod: str = ""  # targetRef
    node: str = ""  # nodeName
    served: bool = False
    server: str = ""  # its server line (slot), when served
    role: str = ""  # ready (takes new connections) or drain (finishes its own), when served
    reason: str = ""  # why it is not served
    haproxy: str = ""  # HAProxy's view of its line: UP, DOWN, MAINT, DRAIN ("?": not seen yet)
    check: str = ""  # the line's last health check (L4OK, L7STS, ...; "no check")


@dataclass(frozen=True, slots=True)
class PortPath:
    port: str  # "http:80", "80", "dns:53/UDP"
    target: str  # targetPort as the Service says it
    state: str  # served, skipped, not-served, waiting, pending
    reason: str = ""
    addresses: tuple[Address, ...] = ()
    frontend: str = ""
    backend: str = ""  # as the config names it
    running: str = ""  # as HAProxy runs it, when another (a spare)
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Explanation:
    namespace: str
    name: str
    source: str  # "controller" (what a running controller published) or "manifests"
    generated_at: float
    state: str  # the service's: served when any port is, else its first port's
    reason: str
    records: tuple[dns.Record, ...] = ()
    ports: tuple[PortPath, ...] = ()
    findings: tuple[str, ...] = ()  # every finding about the service and its endpoint objects
    changed_at: float = 0.0  # when its objects last changed (0: unknown)
    observed_at: float = 0.0  # HAProxy's view: the last drift check (0: none)
    kind: str = "Explanation"
    version: int = VERSION

    def only(self, port: str) -> Explanation:
        """The ports named or numbered `port`."""
        return replace(self, ports=tuple(p for p in self.ports if _is_port(p.port, port)))


def _is_port(label: str, wanted: str) -> bool:
    name, _, number = label.split("/", maxsplit=1)[0].rpartition(":")
    return wanted in (name, number) or wanted == label


def explain(published: Published, key: Key, *, now: float, source: str) -> Explanation | None:
    """The path of one service; None when the service is not known."""
    objects = published.objects.get(key)
    if objects is None or objects.service is None:
        return None
    service = objects.service
    index = Index.of(published)
    rows = service_rows(key, objects, published, index)
    translate = published.settings.translate
    result = translate_service(
        key, service, slices=objects.slices, endpoints=objects.endpoints, settings=translate
    )
    vias = {v.ip: VIA[v.via] for v in result.vips}
    wanted = {(f.port_key, b.ip) for f in result.frontends for b in f.binds}
    by_label = {r.port: r for r in rows}
    findings = index.about(key, objects)
    ports = []
    for port in spec_ports(service):
        row = by_label.get(port.label) or rows[0]
        addresses = _addresses(
            port,
            row,
            wanted=wanted,
            vias=vias,
            published=published,
            findings=[str(f) for f in findings],
        )
        backend = index.backends.get(row.backend)
        listed = port.key and row.state in (SERVED, WAITING, PENDING)
        endpoints = _endpoints(port, objects, published, backend, row) if listed else ()
        ports.append(
            PortPath(
                port.label,
                _target(service, port.index),
                row.state,
                row.reason,
                addresses,
                row.frontend,
                row.backend,
                row.running,
                endpoints,
            )
        )
    served = [r for r in rows if r.state == SERVED] or rows
    model = published.deployed.model if published.deployed is not None else Model()
    entry = next((e for e in model.services if (e.namespace, e.name) == key), None)
    zone = published.settings.publish.dns_zone
    records = () if entry is None else tuple(dns.records(Model(services=(entry,)), zone=zone))
    observed = published.observed
    return Explanation(
        key.namespace,
        key.name,
        source,
        now,
        served[0].state,
        "" if served[0].state == SERVED else served[0].reason,
        records,
        tuple(ports),
        tuple(str(f) for f in findings),
        objects.changed_at,
        observed.at if observed is not None else 0.0,
    )


def _target(service: JSON, index: int) -> str:
    spec = service.get("spec")
    ports = spec.get("ports") if isinstance(spec, dict) else None
    raw = ports[index] if isinstance(ports, list) and index < len(ports) else None
    target = raw.get("targetPort") if isinstance(raw, dict) else None
    if target is None:  # the port itself, as the API server defaults it
        target = raw.get("port") if isinstance(raw, dict) else None
    return str(target) if isinstance(target, int) else _plain(target)


def _plain(value: object) -> str:
    """A name from an object, printed as is when plain, quoted otherwise (findings.shown)."""
    if (
        isinstance(value, str)
        and 0 < len(value) <= 253
        and all(c.isascii() and (c.isalnum() or c in "-._/:") for c in value)
    ):
        return value
    return shown(value)


def _addresses(
    port: SpecPort,
    row: Row,
    *,
    wanted: set[tuple[str, str]],
    vias: Mapping[str, str],
    published: Published,
    findings: Sequence[str],
) -> tuple[Address, ...]:
    """The VIPs of a service port: those it is bound on, and those it wanted and lost (to an
    older service, to an address this host cannot listen on), with the finding that says so."""
    if port.number is None:
        return ()
    number = port.number
    deployed = published.deployed
    out = []
    for ip in row.vips:
        route = ""
        if deployed is not None and number in deployed.maps:
            target = deployed.routes.get(number, {}).get(ip, "")
            route = f"{deployed.maps[number]}: {ip} -> {target or '(none)'}"
        out.append(Address(ip, number, vias.get(ip, VIA[Via.POOL]), True, route))
    for key, ip in sorted(wanted):
        if key != port.key or ip in row.vips:
            continue
        text = hostport(ip, number)
        why = next((f for f in findings if text in f), "") if row.state != PENDING else ""
        out.append(Address(ip, number, vias.get(ip, ""), False, reason=why or "not bound"))
    return tuple(out)


def _endpoints(
    port: SpecPort,
    objects: ServiceObjects,
    published: Published,
    backend: Backend | None,
    row: Row,
) -> tuple[Endpoint, ...]:
    """Every endpoint listed for a service port, with its verdict."""
    served: dict[tuple[str, int], tuple[Server, LineView | None]] = {}
    if backend is not None and published.deployed is not None:
        served = {(s.ip, s.port): (s, v) for s, v in line_views(published, backend)}
    live = published.observed is not None
    out = []
    seen: dict[tuple[str, int], str] = {}
    for listed in _listed(port, objects, published):
        if listed.ip is None or listed.number is None:
            out.append(listed.endpoint)
            continue
        where = (listed.ip, listed.number)
        endpoint = replace(listed.endpoint, address=hostport(*where))
        line = served.get(where)
        if where in seen:
            endpoint = replace(endpoint, reason=f"listed by {seen[where]} too: counted once")
        elif line is not None:
            server, view = line
            endpoint = replace(
                endpoint,
                served=True,
                server=server.name,
                role=server.state.value,
                haproxy=(view.state if view is not None else "?") if live else "",
                check=view.check if view is not None else "",
            )
        else:
            endpoint = replace(endpoint, reason=_left_out(listed, row, published))
        seen.setdefault(where, f"{listed.endpoint.source} {listed.endpoint.field}")
        out.append(endpoint)
    return tuple(out)


def _left_out(listed: _Listed, row: Row, published: Published) -> str:
    """Why a usable endpoint is not in its backend."""
    if row.state != SERVED:
        return f"the port is not served ({row.skip or row.state})"
    if listed.state == NOT_READY:
        return "terminating" if listed.terminating else "not ready"
    if listed.state == SERVING_TERMINATING:
        return "terminating"
    if row.state == PENDING or published.pending:
        return "not applied yet"
    return "not in the config HAProxy runs"


@dataclass(frozen=True, slots=True)
class _Listed:
    endpoint: Endpoint  # its address: as listed; its reason set when unusable
    ip: str | None
    number: int | None
    state: int
    terminating: bool = False


def _listed(port: SpecPort, objects: ServiceObjects, published: Published) -> list[_Listed]:
    settings = published.settings.translate
    out: list[_Listed] = []
    for slice_obj in objects.slices:
        out += _slice_endpoints(port, slice_obj, settings=settings)
    if not objects.slices and objects.endpoints is not None:
        out += _v1_endpoints(port, objects.endpoints, settings=settings)
    return out


def _name(obj: JSON) -> str:
    meta = obj.get("metadata")
    return _plain(meta.get("name") if isinstance(meta, dict) else None)


def _port_of(ports: object, port: SpecPort) -> int | str:
    """The number a port list gives a service port (translate's own reading of the list), or
    why it gives none."""
    if not isinstance(ports, list):
        return "lists no ports"
    number = group_ports(ports, "ports", Collector("")).get((port.name, port.protocol))
    if number is not None:
        return number
    for raw in ports:
        if not isinstance(raw, dict):
            continue
        if (raw.get("name") or "") == port.name and (raw.get("protocol") or "TCP") == port.protocol:
            # An entry for it that translate left out: its number is what is wrong.
            return (
                f"gives port {port.name or '(unnamed)'} no usable number ({shown(raw.get('port'))})"
            )
    named = f"port {port.name!r}" if port.name else "the unnamed port"
    return (
        f"lists no {named} ({port.protocol}): a named targetPort these pods do not declare, "
        "or a port the service does not have"
    )


def _slice_endpoints(
    port: SpecPort, slice_obj: JSON, *, settings: TranslateSettings
) -> list[_Listed]:
    source = f"EndpointSlice {_name(slice_obj)}"
    address_type = slice_obj.get("addressType")
    family = {"IPv4": 4, "IPv6": 6}.get(address_type if isinstance(address_type, str) else "")
    number = _port_of(slice_obj.get("ports"), port)
    listed = slice_obj.get("endpoints")
    out = []
    for i, item in enumerate(listed if isinstance(listed, list) else ()):
        raw = item if isinstance(item, dict) else {}
        addresses = raw.get("addresses")
        first = addresses[0] if isinstance(addresses, list) and addresses else None
        conditions = raw.get("conditions")
        endpoint = Endpoint(
            _plain(first),
            source,
            f"endpoints[{i}]",
            _conditions(conditions),
            _pod(raw.get("targetRef")),
            _plain(raw.get("nodeName")) if raw.get("nodeName") else "",
        )
        try:
            state = state_of(conditions, i)
        except FieldError as exc:
            out.append(_Listed(replace(endpoint, reason=str(exc)), None, None, NOT_READY))
            continue
        if family is None:
            why = (
                "FQDN endpoints are not proxied"
                if address_type == "FQDN"
                else f"the slice's addressType {shown(address_type)} is unknown"
            )
            out.append(_Listed(replace(endpoint, reason=why), None, None, state))
            continue
        ip, why = address_of(first, family, settings=settings, path="")
        if ip is None:
            out.append(_Listed(replace(endpoint, reason=why), None, None, state))
        elif not isinstance(number, int):
            out.append(_Listed(replace(endpoint, reason=f"the slice {number}"), None, None, state))
        else:
            terminating = isinstance(conditions, dict) and conditions.get("terminating") is True
            out.append(_Listed(endpoint, ip, number, state, terminating))
    return out


def _v1_endpoints(port: SpecPort, endpoints: JSON, *, settings: TranslateSettings) -> list[_Listed]:
    source = f"Endpoints {_name(endpoints)}"
    subsets = endpoints.get("subsets")
    out = []
    for s, item in enumerate(subsets if isinstance(subsets, list) else ()):
        subset = item if isinstance(item, dict) else {}
        number = _port_of(subset.get("ports"), port)
        for listing, state in (("addresses", READY), ("notReadyAddresses", NOT_READY)):
            entries = subset.get(listing)
            for i, entry in enumerate(entries if isinstance(entries, list) else ()):
                raw = entry if isinstance(entry, dict) else {}
                endpoint = Endpoint(
                    _plain(raw.get("ip")),
                    source,
                    f"subsets[{s}].{listing}[{i}]",
                    "ready" if state == READY else "not ready",
                    _pod(raw.get("targetRef")),
                    _plain(raw.get("nodeName")) if raw.get("nodeName") else "",
                )
                ip, why = address_of(raw.get("ip"), 0, settings=settings, path="")
                if ip is None:
                    out.append(_Listed(replace(endpoint, reason=why), None, None, state))
                elif not isinstance(number, int):
                    reason = f"the subset {number}"
                    out.append(_Listed(replace(endpoint, reason=reason), None, None, state))
                else:
                    out.append(_Listed(endpoint, ip, number, state))
    return out


def _conditions(conditions: object) -> str:
    """An endpoint's conditions in words; an unset `ready` or `serving` means true."""
    if conditions is None:
        return "ready (no conditions)"
    if not isinstance(conditions, dict):
        return shown(conditions)
    ready, serving, terminating = (conditions.get(k) for k in ("ready", "serving", "terminating"))
    words = ["ready" if ready in (True, None) else "not ready"]
    if terminating is True:
        words.append("terminating")
        words.append("not serving" if serving is False else "serving")
    return ", ".join(words)


def _pod(ref: object) -> str:
    """targetRef as "Kind/name": from the object as written, or as the kube source keeps it
    (resources.prune: that string already)."""
    if isinstance(ref, str):
        return _plain(ref)
    if not isinstance(ref, dict) or not ref.get("name"):
        return ""
    kind = ref.get("kind") or "Pod"
    return f"{_plain(kind)}/{_plain(ref.get('name'))}"
