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
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return None
    return _KINDS.get((kind, api_version))


_KINDS = {(kind.value, version): kind for kind, version in _API_VERSIONS.items()}


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


# What translate reads. Objects from the API and the manifests are cut down to this on arrival: a
# 10,000-service cluster's slices carry 100,000 targetRefs, nodeNames and zones we would
# otherwise keep. What `explain` shows of an endpoint's pod and node stays, compactly
# (`_cut_endpoints`).
_METADATA_KEPT = frozenset(
    ("name", "namespace", "labels", "annotations", "creationTimestamp", "resourceVersion")
)
_KEPT = {
    Kind.SERVICE: frozenset(("apiVersion", "kind", "metadata", "spec", "status")),
    Kind.ENDPOINT_SLICE: frozenset(
        ("apiVersion", "kind", "metadata", "addressType", "ports", "endpoints")
    ),
    Kind.ENDPOINTS: frozenset(("apiVersion", "kind", "metadata", "subsets")),
}
_ENDPOINT_KEPT = frozenset(("addresses", "conditions", "nodeName", "targetRef"))


def prune(kind: Kind, obj: JSON, *, intern: Callable[[str], str] = str) -> JSON:
    """A copy of obj holding only the fields translate (and the sources) read, and what
    `explain` shows (`cut`); obj is left as it is."""
    out = dict(obj)
    for key in ("metadata", "spec", "status"):
        value = out.get(key)
        if isinstance(value, dict):
            out[key] = dict(value)
    endpoints = out.get("endpoints")
    if kind is Kind.ENDPOINT_SLICE and isinstance(endpoints, list):
        out["endpoints"] = [_copy_endpoint(e) if isinstance(e, dict) else e for e in endpoints]
    return cut(kind, out, intern=intern)


def _copy_endpoint(endpoint: JSON) -> JSON:
    """Its conditions too: the dict `cut` shares is then ours, never the caller's."""
    out = dict(endpoint)
    conditions = out.get("conditions")
    if isinstance(conditions, dict):
        out["conditions"] = dict(conditions)
    return out


def cut(kind: Kind, obj: JSON, *, intern: Callable[[str], str] = str) -> JSON:
    """obj itself, changed in place to hold only the fields translate (and the sources) read,
    and what `explain` shows: for an object just decoded, that nobody else holds (a new dict
    per object would cost a third more time and leave the decoded one's memory in holes).
    Fields of the wrong type are kept as they are, for translate to report. `intern` shares
    equal strings (sys.intern; the core may not import sys). Cutting again changes nothing:
    YAML aliases may hand the same dict twice."""
    _keep(obj, _KEPT[kind])
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        _keep(metadata, _METADATA_KEPT)
        namespace = metadata.get("namespace")
        if type(namespace) is str:  # a few namespaces shared by every object
            metadata["namespace"] = intern(namespace)
    if kind is Kind.SERVICE:
        spec = obj.get("spec")
        if isinstance(spec, dict):
            spec.pop("selector", None)
        status = obj.get("status")
        if isinstance(status, dict) and "loadBalancer" in status:
            _keep(status, frozenset(("loadBalancer",)))
        elif status is None or isinstance(status, dict):
            obj.pop("status", None)
    elif kind is Kind.ENDPOINT_SLICE:
        endpoints = obj.get("endpoints")
        if isinstance(endpoints, list):
            _cut_endpoints(endpoints, intern)
    return obj


def _keep(obj: JSON, names: frozenset[str]) -> None:
    if not obj.keys() <= names:
        for name in [n for n in obj if n not in names]:
            del obj[name]


def _cut_endpoints(endpoints: list[Any], intern: Callable[[str], str]) -> None:
    """Endpoints as translate reads them, with their pod and node for `explain`: nodeName
    interned (a few nodes' names shared by every endpoint), targetRef cut to one "Kind/name"
    string (a dict of four strings otherwise), conditions shared (`_shared_conditions`).
    About 80 bytes an endpoint besides its address: the pod's name. 100,000 endpoints at
    10,000 services pass here: one loop, no call for the common case."""
    last: JSON | None = None  # the previous endpoint's conditions, shared: mostly the same
    for endpoint in endpoints:
        if not isinstance(endpoint, dict):
            continue
        if not endpoint.keys() <= _ENDPOINT_KEPT:
            _keep(endpoint, _ENDPOINT_KEPT)
        conditions = endpoint.get("conditions")
        if type(conditions) is dict and conditions is not last:
            same = last if conditions == last else _shared_conditions(conditions)
            if same is not None:
                # Equal is not enough: 1 == True, and 1 is no boolean for translate.
                for value in conditions.values():
                    if value is not True and value is not False and value is not None:
                        break
                else:
                    endpoint["conditions"] = last = same
        node = endpoint.get("nodeName")
        if node is not None:
            if isinstance(node, str):
                endpoint["nodeName"] = intern(node)
            else:
                del endpoint["nodeName"]
        ref = endpoint.get("targetRef")
        if ref is None or type(ref) is str:  # a string: cut already (an alias)
            continue
        name = ref.get("name") if type(ref) is dict else None
        if type(name) is str and name:
            kind = ref.get("kind")
            endpoint["targetRef"] = f"{kind if type(kind) is str and kind else 'Pod'}/{name}"
        else:
            del endpoint["targetRef"]


_CONDITION_NAMES = frozenset(("ready", "serving", "terminating"))
# Equal EndpointConditions, one dict for all: at most 226 (each of the three names absent or
# set to true, false or null, in any order).
_conditions: dict[tuple[tuple[str, bool | None], ...], JSON] = {}


def _shared_conditions(conditions: JSON) -> JSON | None:
    """The one dict of these EndpointConditions' value that every endpoint with that value
    shares (100,000 endpoints at 10,000 services hold a few distinct ones: 18 MB saved): these
    the first time; None for what translate would not read as they are (other names, values
    other than booleans or null). An equal dict may hold 1 for True: the caller compares."""
    try:
        key = tuple(conditions.items())
        same = _conditions.get(key)
    except TypeError:  # an unhashable value
        return None
    if same is not None or len(conditions) > len(_CONDITION_NAMES):
        return same
    for name, value in key:
        if name not in _CONDITION_NAMES or not (value is None or value is True or value is False):
            return None
    return _conditions.setdefault(key, conditions)
