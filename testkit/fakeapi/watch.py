"""Open watches: what each one sees and the event lines queued for it.

A watch starts from a revision: ``0`` means "any" (a synthetic ADDED event per current object),
one older than the last compaction gets a single 410 ``ERROR`` event and then ends, any other
replays the logged events newer than it. Live events are then queued as the store makes them.
Events are filtered by namespace and label selector the way the watch cache filters them: an
object modified into the selection arrives as ADDED, one modified out of it as DELETED (its
previous state with the new revision). BOOKMARKs and abrupt drops are also queued or applied
here; writing the queue to the socket (and holding it back while hung) is the handler's job.
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass, field

from .labels import Selector
from .resources import ResourceType
from .store import Event, Store
from .wire import JSON, dumps, shutdown, status_body


@dataclass(eq=False)
class Watch:
    rt: ResourceType
    namespace: str | None
    selector: Selector
    bookmarks: bool
    sock: socket.socket
    deadline: float | None
    pending: deque[bytes] = field(default_factory=deque)
    finish: bool = False  # end the stream once pending is sent (the 410 ERROR case)
    dropped: bool = False

    def sees(self, obj: JSON | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.selector.matches(meta.get("labels"))

    def line_for(self, event: Event) -> bytes | None:
        """The event as this watch reports it, or None when the watch does not see it."""
        if event.resource != self.rt.resource:
            return None
        now, before = self.sees(event.obj), self.sees(event.prev)
        if event.type == "DELETED":
            kind, obj = ("DELETED", event.obj) if now else (None, None)
        elif now:
            kind, obj = ("MODIFIED" if before else "ADDED"), event.obj
        elif before:
            kind, obj = "DELETED", event.prev
        else:
            kind, obj = None, None
        if kind is None:
            return None
        return dumps({"type": kind, "object": obj}) + b"\n"


class Watches:
    """The open watches of one server, fed by its `Store` and guarded by the store's lock."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._open: set[Watch] = set()
        store.subscribe(self._publish)

    def open(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: Selector,
        rv_text: str | None,
        bookmarks: bool,
        deadline: float | None,
        sock: socket.socket,
    ) -> Watch:
        """Register a watch with what it must send first already queued."""
        if not rv_text:
            raise ValueError("this fake API server requires resourceVersion on a watch")
        try:
            rv = int(rv_text)
        except ValueError:
            raise ValueError(f"invalid resource version {rv_text!r}") from None
        watch = Watch(rt, namespace, selector, bookmarks, sock, deadline)
        store = self._store
        with store.cond:
            if rv == 0:  # "any": synthetic ADDED events for the current state
                for obj in store.sorted_objects(rt):
                    if watch.sees(obj):
                        watch.pending.append(dumps({"type": "ADDED", "object": obj}) + b"\n")
            elif rv < store.compacted:
                message = f"too old resource version: {rv} ({store.compacted})"
                error = status_body(410, message, "Expired")
                del error["metadata"]
                watch.pending.append(dumps({"type": "ERROR", "object": error}) + b"\n")
                watch.finish = True
            else:
                for event in store.log:
                    if event.rv > rv:
                        line = watch.line_for(event)
                        if line is not None:
                            watch.pending.append(line)
            self._open.add(watch)
            store.cond.notify_all()
        return watch

    def close(self, watch: Watch) -> None:
        with self._store.cond:
            self._open.discard(watch)
            self._store.cond.notify_all()

    def bookmark(self, rt: ResourceType) -> int:
        """Queue a BOOKMARK at the current revision on every open watch of `rt` that asked for
        bookmarks; return how many watches got one."""
        store = self._store
        with store.cond:
            line = (
                dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(store.rv)},
                        },
                    }
                )
                + b"\n"
            )
            count = 0
            for watch in self._open:
                if watch.rt is rt and watch.bookmarks and not watch.finish:
                    watch.pending.append(line)
                    count += 1
            store.cond.notify_all()
            return count

    def drop(self, resource: str | None) -> int:
        """Shut down the sockets of open watches (of `resource`, or all); return how many."""
        with self._store.cond:
            dropped = [w for w in self._open if resource in (None, w.rt.resource)]
            for watch in dropped:
                watch.dropped = True
                shutdown(watch.sock)
            self._store.cond.notify_all()
            return len(dropped)

    def count(self, resource: str | None = None) -> int:
        with self._store.cond:
            return sum(1 for w in self._open if resource in (None, w.rt.resource))

    def wait_for(self, resource: str, timeout: float, count: int) -> None:
        """Block until at least `count` watches on `resource` are open; TimeoutError if not."""
        with self._store.cond:
            if not self._store.cond.wait_for(
                lambda: sum(1 for w in self._open if w.rt.resource == resource) >= count,
                timeout,
            ):
                raise TimeoutError(f"no {count} open watch(es) on {resource} within {timeout}s")

    def _publish(self, event: Event) -> None:
        # Caller (the store) holds the lock. A finishing watch sends its 410 and nothing else.
        for watch in self._open:
            if watch.finish:
                continue
            line = watch.line_for(event)
            if line is not None:
                watch.pending.append(line)
