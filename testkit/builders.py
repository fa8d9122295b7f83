"""Builders of Kubernetes objects as plain dicts (the shape the API and `kubectl get -o yaml`
give): Services, EndpointSlices (of addresses, or of real backends), v1 Endpoints; the store
that holds them, as the controller does; and the manifest file a user writes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from kube2haproxy.resources import key_of, kind_of
from kube2haproxy.store import Store

JSON = dict[str, Any]
PortSpec = tuple[str, int] | tuple[str, int, str] | JSON


class Listening(Protocol):
    """Something serving at ip:port: a testkit.backends.Backend."""

    @property
    def ip(self) -> str: ...

    @property
    def port(self) -> int: ...


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


def slice_of(
    service_name: str,
    *backends: Listening,
    namespace: str = "default",
    name: str | None = None,
    ports: Sequence[str] = ("http",),
    terminating: Sequence[Listening] = (),
) -> JSON:
    """The EndpointSlice of a service served by real backends: these, ready, and the
    terminating ones, still serving while they drain. Every port name goes to the port the
    backends share (a slice has one number per port name)."""
    number = (*backends, *terminating)[0].port
    assert all(b.port == number for b in (*backends, *terminating)), "one port per slice"
    return endpoint_slice(
        service_name,
        namespace,
        name=name,
        endpoints=[
            *(b.ip for b in backends),
            *(endpoint(b.ip, ready=False, serving=True, terminating=True) for b in terminating),
        ],
        ports=[(p, number) for p in ports],
    )


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


def store_of(objects: Iterable[JSON]) -> Store:
    """The objects in a store, as the controller and `render` hold them."""
    store = Store()
    for obj in objects:
        kind = kind_of(obj)
        assert kind is not None, obj
        store.put(kind, key_of(obj), obj)
    return store


def write_manifests(path: Path, *objects: JSON) -> None:
    """The objects as one multi-document YAML file, written as editors and kubectl do: whole,
    by renaming a file of another suffix (which the manifests source does not read)."""
    partial = path.with_suffix(".partial")
    partial.write_text(yaml.safe_dump_all(objects))
    partial.rename(path)
