"""The object store: objects by (resource, namespace, name), the ONE revision counter every change
takes (like an etcd revision), the log of ADDED / MODIFIED / DELETED events that watches replay
from, and its compaction.

A change's revision becomes the object's ``metadata.resourceVersion`` and the revision of its
event. Stored objects carry ``kind`` and ``apiVersion``; the list code strips them.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .resources import ResourceType, type_of_kind
from .wire import JSON


@dataclass(frozen=True)
class Event:
    rv: int
    resource: str
    type: str  # ADDED, MODIFIED or DELETED
    obj: JSON  # the new state (for DELETED: the last state), kind/apiVersion included
    prev: JSON | None  # the state before, with this event's resourceVersion (for DELETED: None)


def key(obj: JSON) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta["namespace"], meta["name"])


def at(obj: JSON | None, rv: int) -> JSON | None:
    """A copy of obj with metadata.resourceVersion set to rv."""
    if obj is None:
        return None
    out = dict(obj)
    out["metadata"] = {**obj["metadata"], "resourceVersion": str(rv)}
    return out


class Store:
    """The objects and their history, guarded by `cond`.

    `cond` is the lock of the whole server, shared with lists, watches and fault injection:
    a change, its log entry and its fan-out to the observers (the open watches) happen as one
    step, so a watch opened concurrently sees each event exactly once, by replay or live.
    Attributes are read directly by the rest of the package, under `cond`.
    """

    def __init__(self, cond: threading.Condition, initial_resource_version: int) -> None:
        self.cond = cond
        self.rv = initial_resource_version
        self.compacted = 0  # a watch from an rv below this gets 410
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.log: list[Event] = []
        self._observers: list[Callable[[Event], None]] = []

    def subscribe(self, observer: Callable[[Event], None]) -> None:
        """Call `observer` with every new event, under the lock, before waiters are woken."""
        self._observers.append(observer)

    def put(self, obj: JSON) -> str:
        """Add or replace an object (by kind, namespace, name); return its new resourceVersion.
        A missing namespace is "default"; a missing apiVersion is the kind's."""
        rt = type_of_kind(obj.get("kind"))
        new = {"apiVersion": rt.api_version, "kind": rt.kind, **copy.deepcopy(obj)}
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ValueError("put: metadata is not a mapping")
        meta.setdefault("namespace", "default")
        if not (isinstance(meta.get("name"), str) and meta["name"]):
            raise ValueError("put: metadata.name must be a non-empty string")
        if not (isinstance(meta["namespace"], str) and meta["namespace"]):
            raise ValueError("put: metadata.namespace must be a non-empty string")
        obj_key = (rt.resource, meta["namespace"], meta["name"])
        with self.cond:
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
            prev = self.objects.get(obj_key)
            self.objects[obj_key] = new
            kind = "MODIFIED" if prev else "ADDED"
            self._append(Event(self.rv, rt.resource, kind, new, at(prev, self.rv)))
            return str(self.rv)

    def delete(self, kind: str, namespace: str, name: str) -> str:
        """Remove an object; return the resourceVersion of its DELETED event."""
        rt = type_of_kind(kind)
        obj_key = (rt.resource, namespace, name)
        with self.cond:
            if obj_key not in self.objects:
                raise KeyError(f"no {kind} {namespace}/{name}")
            self.rv += 1
            last = at(self.objects.pop(obj_key), self.rv)
            assert last is not None
            self._append(Event(self.rv, rt.resource, "DELETED", last, None))
            return str(self.rv)

    def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        """The stored object (a copy, kind and apiVersion included), or None."""
        rt = type_of_kind(kind)
        with self.cond:
            obj = self.objects.get((rt.resource, namespace, name))
        return copy.deepcopy(obj)

    def compact(self) -> None:
        """Discard the event log up to the current revision."""
        with self.cond:
            self.compacted = self.rv
            self.log = [e for e in self.log if e.rv > self.rv]

    def sorted_objects(self, rt: ResourceType) -> tuple[JSON, ...]:
        """The current objects of one resource, sorted by (namespace, name). Caller holds the
        lock."""
        items = [o for (resource, _, _), o in self.objects.items() if resource == rt.resource]
        return tuple(sorted(items, key=key))

    def _append(self, event: Event) -> None:
        # Caller holds the lock.
        self.log.append(event)
        for observer in self._observers:
            observer(event)
        self.cond.notify_all()
