"""LIST responses: namespace and label filtering, pagination with ``limit`` and opaque
``continue`` tokens, the snapshots that keep every page of one list consistent, and their
expiry (410 with a fresh token, as the real server answers).

A token names the snapshot taken by the list's first page and the last key sent; the list's
``metadata.resourceVersion`` is that snapshot's revision. Lists without a token are always served
from the latest state (the ``resourceVersion`` parameter is ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from .labels import Selector
from .resources import ResourceType
from .store import Store, key
from .wire import JSON, Failure, dumps, status_body

CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this response "
    "to retrieve the remainder of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted between the time the "
    "first chunk was returned and now may show up in the list."
)


@dataclass(frozen=True)
class Snapshot:
    resource: str
    rv: int
    objects: tuple[JSON, ...]  # sorted by (namespace, name)


def _without_type(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _encode_token(snapshot_id: int, rv: int, start: tuple[str, str]) -> str:
    raw = dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(start), "snap": snapshot_id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        ns, name = data["start"]
        return int(data["snap"]), (str(ns), str(name))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"continue key is not valid: {exc}") from None


class Pager:
    """Serves lists from a `Store` and keeps the snapshots its continue tokens refer to."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._snapshots: dict[int, Snapshot] = {}
        self._next_snapshot = 1

    def list_response(
        self, rt: ResourceType, namespace: str | None, selector: Selector, query: dict[str, str]
    ) -> JSON:
        """The list response body; ValueError (400) or Failure (410 Expired) for bad input."""
        store = self._store
        limit_text = query.get("limit", "")
        try:
            limit = int(limit_text) if limit_text else 0
        except ValueError:
            raise ValueError(f"invalid limit {limit_text!r}") from None
        token = query.get("continue", "")
        with store.cond:
            snapshot: Snapshot | None = None
            snapshot_id = 0
            start: tuple[str, str] | None = None
            if token:
                snapshot_id, start = _decode_token(token)
                snapshot = self._snapshots.get(snapshot_id)
                if snapshot is None:
                    fresh = self._snapshot(rt)
                    body = status_body(410, CONTINUE_EXPIRED, "Expired")
                    body["metadata"] = {"continue": _encode_token(fresh[0], fresh[1].rv, start)}
                    raise Failure(410, CONTINUE_EXPIRED, body=body)
                if snapshot.resource != rt.resource:
                    raise ValueError("continue key is not valid: it belongs to another resource")
            if snapshot is None:
                objects, rv = store.sorted_objects(rt), store.rv
            else:
                objects, rv = snapshot.objects, snapshot.rv
            selected = [
                o
                for o in objects
                if (namespace is None or o["metadata"]["namespace"] == namespace)
                and selector.matches(o["metadata"].get("labels"))
                and (start is None or key(o) > start)
            ]
            metadata: JSON = {"resourceVersion": str(rv)}
            if limit > 0 and len(selected) > limit:
                if snapshot is None:
                    snapshot_id, _ = self._snapshot(rt, objects, rv)
                page = selected[:limit]
                metadata["continue"] = _encode_token(snapshot_id, rv, key(page[-1]))
                if selector.empty:
                    metadata["remainingItemCount"] = len(selected) - limit
            else:
                page = selected
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": metadata,
            "items": [_without_type(o) for o in page],
        }

    def expire(self) -> None:
        """Forget every snapshot, so every outstanding continue token gets 410."""
        with self._store.cond:
            self._snapshots.clear()

    def _snapshot(
        self, rt: ResourceType, objects: tuple[JSON, ...] | None = None, rv: int | None = None
    ) -> tuple[int, Snapshot]:
        # Caller holds the lock.
        snapshot = Snapshot(
            rt.resource,
            self._store.rv if rv is None else rv,
            self._store.sorted_objects(rt) if objects is None else objects,
        )
        snapshot_id = self._next_snapshot
        self._next_snapshot += 1
        self._snapshots[snapshot_id] = snapshot
        return snapshot_id, snapshot
