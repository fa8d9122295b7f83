"""Builders of Kubernetes objects as plain dicts (the shape the API and `kubectl get -o yaml` give)
and a shortcut through the pure pipeline, for table-driven tests."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kube2haproxy.events import Event, EventType
from kube2haproxy.model import Model
from kube2haproxy.render import Renderer
from kube2haproxy.resources import key_of, kind_of
from kube2haproxy.settings import RenderSettings, TranslateSettings
from kube2haproxy.sources.manifests import Manifests
from kube2haproxy.store import Snapshot, Store
from kube2haproxy.translate import Translation, translate

JSON = dict[str, Any]
PortSpec = tuple[str, int] | tuple[str, int, str] | JSON


def port(spec: PortSpec) -> Any:
    if not isinstance(spec, tuple):
        return spec  # a mapping as is, or garbage for tests of garbage
    name, number, *rest = spec
    out: JSON = {"port": number, "protocol": rest[0] if rest else "TCP"}
    if name:
        out["name"] = name
    return out


def service(
    name: str = "web",
    namespace: str = "default",
    *,
    ports: Sequence[PortSpec] = (("http", 80),),
    cluster_ips: Sequence[str] | None = ("10.96.0.10",),
    annotations: dict[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
    created: str | None = None,
    status: JSON | None = None,
    **spec: Any,
) -> JSON:
    metadata: JSON = {"name": name, "namespace": namespace}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    if created is not None:
        metadata["creationTimestamp"] = created
    body: JSON = {"type": "ClusterIP", "ports": [port(p) for p in ports], **spec}
    if cluster_ips is not None:
        body.setdefault("clusterIP", cluster_ips[0] if cluster_ips else "")
        body.setdefault("clusterIPs", list(cluster_ips))
    obj: JSON = {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": body}
    if status is not None:
        obj["status"] = status
    return obj


def endpoint(
    ip: Any,
    *,
    ready: Any = None,
    serving: Any = None,
    terminating: Any = None,
    more: Sequence[str] = (),
) -> JSON:
    conditions = {
        k: v
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if v is not None
    }
    return {"addresses": [ip, *more], "conditions": conditions}


def endpoint_slice(
    service_name: str = "web",
    namespace: str = "default",
    *,
    name: str | None = None,
    endpoints: Iterable[JSON | str] = (),
    ports: Sequence[PortSpec] = (("http", 8080),),
    address_type: str = "IPv4",
) -> JSON:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-abc12",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": address_type,
        "endpoints": [endpoint(e) if isinstance(e, str) else e for e in endpoints],
        "ports": [port(p) for p in ports],
    }


def endpoints_v1(
    service_name: str = "web",
    namespace: str = "default",
    *,
    ready: Sequence[str] = (),
    not_ready: Sequence[str] = (),
    ports: Sequence[PortSpec] = (("http", 8080),),
) -> JSON:
    subset: JSON = {"ports": [port(p) for p in ports]}
    if ready:
        subset["addresses"] = [{"ip": ip} for ip in ready]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": service_name, "namespace": namespace},
        "subsets": [subset],
    }


def snapshot(*objects: JSON) -> Snapshot:
    store = Store()
    for obj in objects:
        kind = kind_of(obj)
        assert kind is not None, obj
        store.put(kind, key_of(obj), obj)
    return store.snapshot()


def run_loaded(*objects: Any, **settings: Any) -> Translation:
    """Through the manifests loader, which drops unsupported kinds and nameless objects."""
    loaded = Manifests()
    loaded.add("test", objects)
    store = Store()
    for (kind, key), obj in loaded.objects.items():
        store.put(kind, key, obj)
    return translate(store.snapshot(), TranslateSettings(**settings))


def run(*objects: JSON, **settings: Any) -> Translation:
    return translate(snapshot(*objects), TranslateSettings(**settings))


@functools.lru_cache(maxsize=8)
def renderer(settings: RenderSettings) -> Renderer:
    """Compiling the templates takes ~50 ms; property tests render thousands of models."""
    return Renderer(settings)


def render(model: Model, **settings: Any) -> str:
    return renderer(RenderSettings(**settings)).render(model)


def servers(translation: Translation, backend: str, state: str = "ready") -> list[str]:
    """The `ip:port` of the servers of a backend in that state (ready by default), sorted: slots
    place them by hash, tests care about the set."""
    for b in translation.model.backends:
        if b.name == backend:
            return sorted(s.address for s in b.servers if s.state == state)
    raise AssertionError(
        f"no backend {backend}; have {[b.name for b in translation.model.backends]}"
    )


def fields_of(translation: Translation) -> list[tuple[str, str, str]]:
    """(severity, subject, field) of every finding: what tests assert on."""
    return [(f.severity.value, f.subject, f.field) for f in translation.findings]


class ScriptedSource:
    """A source the test drives by hand."""

    def __init__(self, name: str = "test") -> None:
        self.names = (name,)
        self.emit: Callable[[Event], None] = lambda _e: None
        self.stopped = False

    def start(self, emit: Callable[[Event], None]) -> None:
        self.emit = emit

    def stop(self) -> None:
        self.stopped = True

    def put(self, obj: dict) -> None:
        kind = kind_of(obj)
        assert kind is not None
        self.emit(Event(EventType.MODIFIED, self.names[0], kind, key_of(obj), obj))

    def delete(self, obj: dict) -> None:
        kind = kind_of(obj)
        assert kind is not None
        self.emit(Event(EventType.DELETED, self.names[0], kind, key_of(obj), obj))

    def synced(self) -> None:
        self.emit(Event(EventType.SYNCED, self.names[0]))


def backend_servers(text: str, backend: str) -> list[str]:
    """The endpoints of a backend in rendered config text: `ip:port`, plus `weight 0` for a
    draining one (the state words that follow the address; the options every line of the
    backend carries are left out), parked slots left out, sorted."""
    section = text.split(f"\nbackend {backend}\n", 1)[1].split("\n\n", 1)[0]
    lines = [line.split() for line in section.splitlines() if line.startswith("    server ")]
    return sorted(
        " ".join(words[2:5] if words[3:5] == ["weight", "0"] else words[2:3])
        for words in lines
        if words[3:4] != ["disabled"]
    )


def server_line(text: str, address: str) -> str:
    """The whole `server` line of an endpoint in rendered config text."""
    match = re.search(rf"^    server s\d+ {re.escape(address)}\b.*$", text, re.M)
    assert match is not None, address
    return match.group(0)
