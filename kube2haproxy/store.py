"""The store: the latest version of every object the sources reported, and frozen snapshots of it.

It holds what Kubernetes says, nothing about HAProxy. Objects are plain dicts that nobody mutates
after handing them over (sources build a new dict per version), so a snapshot shares them safely.
EndpointSlices are indexed by the Service they belong to (the kubernetes.io/service-name label).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from kube2haproxy.events import Event, EventType
from kube2haproxy.resources import JSON, Key, Kind, service_of_slice


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What Kubernetes said at one moment, frozen."""

    services: Mapping[Key, JSON]
    slices: Mapping[Key, tuple[JSON, ...]]  # by Service key, in slice-name order
    endpoints: Mapping[Key, JSON]  # v1 Endpoints, by name (= the Service's name)

    @staticmethod
    def empty() -> Snapshot:
        return Snapshot(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))


class Store:
    """Latest object per (kind, key). Not thread-safe: one consumer (the controller) owns it."""

    def __init__(self) -> None:
        self._services: dict[Key, JSON] = {}
        self._endpoints: dict[Key, JSON] = {}
        self._slices: dict[Key, JSON] = {}
        self._slice_owner: dict[Key, Key] = {}
        self._slices_by_service: dict[Key, dict[Key, JSON]] = {}

    def __len__(self) -> int:
        return len(self._services) + len(self._endpoints) + len(self._slices)

    def get(self, kind: Kind, key: Key) -> JSON | None:
        return self._table(kind).get(key)

    def keys(self, kind: Kind) -> frozenset[Key]:
        return frozenset(self._table(kind))

    def record(self, event: Event) -> frozenset[Key]:
        """Apply one event; the Services whose translation it may change (empty: no change)."""
        if event.kind is None or event.key is None:
            return frozenset()
        if event.type is EventType.DELETED:
            return self.delete(event.kind, event.key)
        if event.type in (EventType.ADDED, EventType.MODIFIED) and event.obj is not None:
            return self.put(event.kind, event.key, event.obj)
        return frozenset()

    def put(self, kind: Kind, key: Key, obj: JSON) -> frozenset[Key]:
        table = self._table(kind)
        if table.get(key) == obj:
            return frozenset()
        table[key] = obj
        if kind is not Kind.ENDPOINT_SLICE:
            return frozenset((key,))
        before = self._unindex(key)
        owner = service_of_slice(obj)
        if owner is not None:
            self._slice_owner[key] = owner
            self._slices_by_service.setdefault(owner, {})[key] = obj
        return frozenset(k for k in (before, owner) if k is not None)

    def delete(self, kind: Kind, key: Key) -> frozenset[Key]:
        table = self._table(kind)
        if key not in table:
            return frozenset()
        del table[key]
        if kind is not Kind.ENDPOINT_SLICE:
            return frozenset((key,))
        owner = self._unindex(key)
        return frozenset((owner,)) if owner is not None else frozenset()

    def slices_of(self, service: Key) -> tuple[JSON, ...]:
        """The EndpointSlices of a Service, in slice-name order."""
        by_key = self._slices_by_service.get(service, {})
        return tuple(by_key[k] for k in sorted(by_key))

    def snapshot(self) -> Snapshot:
        slices = {service: self.slices_of(service) for service in self._slices_by_service}
        return Snapshot(
            services=MappingProxyType(dict(self._services)),
            slices=MappingProxyType(slices),
            endpoints=MappingProxyType(dict(self._endpoints)),
        )

    def _table(self, kind: Kind) -> dict[Key, JSON]:
        if kind is Kind.SERVICE:
            return self._services
        if kind is Kind.ENDPOINT_SLICE:
            return self._slices
        return self._endpoints

    def _unindex(self, slice_key: Key) -> Key | None:
        owner = self._slice_owner.pop(slice_key, None)
        if owner is None:
            return None
        siblings = self._slices_by_service[owner]
        siblings.pop(slice_key, None)
        if not siblings:
            del self._slices_by_service[owner]
        return owner
