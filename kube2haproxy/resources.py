"""Typed views of the Kubernetes objects we read: kinds, keys and field accessors over plain dicts.

Objects arrive as plain JSON-like dicts (from YAML files or the API's raw JSON). Nothing here trusts
their shape: every accessor checks the type it returns and raises `FieldError` with the field's path
when the object disagrees. Validating *values* (names, addresses) is translate's job.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, NamedTuple

from kube2haproxy.errors import FieldError
from kube2haproxy.findings import shown

JSON = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_NAMESPACE = "default"


class Kind(StrEnum):
    SERVICE = "Service"
    ENDPOINT_SLICE = "EndpointSlice"
    ENDPOINTS = "Endpoints"


# The apiVersion each kind must carry; anything else (EndpointSlice v1beta1, ...) is ignored.
_API_VERSIONS = {
    Kind.SERVICE: "v1",
    Kind.ENDPOINT_SLICE: "discovery.k8s.io/v1",
    Kind.ENDPOINTS: "v1",
}


class Key(NamedTuple):
    """Namespace and name of an object; the store's identity for it within its kind.

    A NamedTuple rather than a dataclass: it is hashed and sorted on every snapshot, and tuple
    comparison is several times faster than a dataclass's generated ordering."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def kind_of(obj: object) -> Kind | None:
    """The kind of a supported object, or None for anything else (other kinds are ignored)."""
    if not isinstance(obj, dict):
        return None
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    for candidate, version in _API_VERSIONS.items():
        if kind == candidate.value and api_version == version:
            return candidate
    return None


def key_of(obj: JSON) -> Key:
    """metadata.namespace (default "default", as kubectl applies it) and metadata.name."""
    meta = get_dict(obj, "metadata", "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise FieldError("metadata.name", "missing or not a string")
    namespace = meta.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        raise FieldError("metadata.namespace", "not a string")
    return Key(namespace, name)


def get_dict(obj: JSON, key: str, path: str) -> JSON:
    """obj[key] as a dict; missing or null is an empty dict."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(path, f"expected a mapping, got {type(value).__name__}")
    return value


def get_list(obj: JSON, key: str, path: str) -> list[Any]:
    """obj[key] as a list; missing or null is an empty list."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError(path, f"expected a list, got {type(value).__name__}")
    return value


def get_str(obj: JSON, key: str, path: str) -> str | None:
    """obj[key] as a string, or None when missing or null."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(path, f"expected a string, got {type(value).__name__}")
    return value


def get_int(obj: JSON, key: str, path: str) -> int | None:
    """obj[key] as an integer (booleans are not integers here), or None when missing or null."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(path, f"expected an integer, got {type(value).__name__}")
    return value


def get_bool(obj: JSON, key: str, path: str) -> bool | None:
    """obj[key] as a boolean, or None when missing or null."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise FieldError(path, f"expected a boolean, got {type(value).__name__}")
    return value


def string_map(obj: JSON, key: str, path: str) -> dict[str, str]:
    """Labels and annotations: a mapping of strings; non-string entries are a field error."""
    raw = get_dict(obj, key, path)
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise FieldError(f"{path}[{shown(k)}]", "must map strings to strings")
    return raw


def labels_of(obj: JSON) -> dict[str, str]:
    return string_map(get_dict(obj, "metadata", "metadata"), "labels", "metadata.labels")


def service_of_slice(slice_obj: JSON) -> Key | None:
    """The Service an EndpointSlice belongs to, through its kubernetes.io/service-name label."""
    try:
        name = labels_of(slice_obj).get(SERVICE_NAME_LABEL)
        key = key_of(slice_obj)
    except FieldError:
        return None
    if not name:
        return None
    return Key(key.namespace, name)


# What translate reads. Objects from the API are cut down to this on arrival: a 10,000-service
# cluster's slices carry 100,000 targetRefs, nodeNames and zones we would otherwise keep. What
# `explain` shows of an endpoint's pod and node stays, compactly (`_endpoint`).
_METADATA_KEPT = (
    "name",
    "namespace",
    "labels",
    "annotations",
    "creationTimestamp",
    "resourceVersion",
)
_ENDPOINT_KEPT = ("addresses", "conditions")


def prune(kind: Kind, obj: JSON, *, intern: Callable[[str], str] = str) -> JSON:
    """A copy of obj holding only the fields translate (and the sources) read, and what
    `explain` shows. Fields of the wrong type are kept as they are, for translate to report.
    `intern` shares equal strings (sys.intern; the core may not import sys)."""
    out: JSON = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        out["metadata"] = {k: metadata[k] for k in _METADATA_KEPT if k in metadata}
    elif "metadata" in obj:
        out["metadata"] = metadata
    if kind is Kind.SERVICE:
        spec = obj.get("spec")
        if isinstance(spec, dict):
            out["spec"] = {k: v for k, v in spec.items() if k != "selector"}
        elif "spec" in obj:
            out["spec"] = spec
        status = obj.get("status")
        if isinstance(status, dict) and "loadBalancer" in status:
            out["status"] = {"loadBalancer": status["loadBalancer"]}
        elif status is not None and not isinstance(status, dict):
            out["status"] = status
    elif kind is Kind.ENDPOINT_SLICE:
        for key in ("addressType", "ports"):
            if key in obj:
                out[key] = obj[key]
        endpoints = obj.get("endpoints")
        if isinstance(endpoints, list):
            out["endpoints"] = [
                _endpoint(e, intern) if isinstance(e, dict) else e for e in endpoints
            ]
        elif "endpoints" in obj:
            out["endpoints"] = endpoints
    else:
        for key in ("subsets",):
            if key in obj:
                out[key] = obj[key]
    return out


def _endpoint(endpoint: JSON, intern: Callable[[str], str]) -> JSON:
    """An endpoint as translate reads it, with its pod and node for `explain`: nodeName interned
    (a few nodes' names shared by every endpoint), targetRef cut to one "Kind/name" string (a
    dict of four strings otherwise). About 80 bytes an endpoint: the pod's name."""
    out = {k: endpoint[k] for k in _ENDPOINT_KEPT if k in endpoint}
    node = endpoint.get("nodeName")
    if isinstance(node, str):
        out["nodeName"] = intern(node)
    ref = endpoint.get("targetRef")
    if isinstance(ref, dict):
        kind, name = ref.get("kind"), ref.get("name")
        if isinstance(name, str) and name:
            out["targetRef"] = f"{kind if isinstance(kind, str) and kind else 'Pod'}/{name}"
    return out
