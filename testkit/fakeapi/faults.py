"""Faults scheduled by a test: requests queued to fail with a given status, and resources whose
watches hang.

A queued failure is taken by the next request (list or watch) of its resource, before anything
else is looked at. A hung resource's watches, open or future, send nothing at all (a new one not
even its response headers) while their connections stay open, like a dead peer: the handler
checks ``is_hung`` before writing anything, and holds the watch's queue back until ``unhang``.
The other injectable faults belong to what they break: ``Store.compact``, ``Pager.expire``,
``Watches.drop`` and ``Watches.bookmark``.
"""

from __future__ import annotations

import threading
from collections import deque

from .resources import RESOURCES
from .wire import Failure


class Faults:
    """Guarded by the server's shared `cond`, which is notified so hung streams wake up."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._failures: dict[str, deque[int]] = {}
        self._hung: set[str] = set()

    def fail_next(self, resource: str, status: int, times: int) -> None:
        with self._cond:
            self._failures.setdefault(resource, deque()).extend([status] * times)

    def take_failure(self, resource: str) -> None:
        """Raise the next queued failure of `resource` as a `Failure`, if there is one."""
        with self._cond:
            queue = self._failures.get(resource)
            if not queue:
                return
            code = queue.popleft()
        raise Failure(code, f"injected failure ({code}) for {resource}")

    def hang(self, resource: str | None) -> None:
        with self._cond:
            self._hung.update(RESOURCES if resource is None else {resource})
            self._cond.notify_all()

    def unhang(self) -> None:
        with self._cond:
            self._hung.clear()
            self._cond.notify_all()

    def is_hung(self, resource: str) -> bool:
        # Read under the lock by the streaming loop, which holds it already.
        return resource in self._hung
