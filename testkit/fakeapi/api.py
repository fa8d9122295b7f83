"""``FakeKubeAPI``, the facade tests use: lifecycle, the state a test puts and deletes, fault
injection and introspection, each delegated to the module that owns it, plus the underscore hooks
the request handler calls (kept as methods so a test can override one in a subclass).

Every part shares the one ``threading.Condition`` created here: it guards all state and is
notified on every change, which is what the ``wait_for_*`` methods and streaming watches wait on.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from .access import Access
from .faults import Faults
from .handler import Handler
from .labels import Selector
from .pagination import Pager
from .resources import RESOURCES, ResourceType, check_resource, check_target
from .server import Runner
from .store import Store
from .watch import Watch, Watches
from .wire import JSON, RequestRecord


class FakeKubeAPI:
    """A local Kubernetes API server for Services, Endpoints and EndpointSlices (list + watch),
    its version, and SelfSubjectAccessReviews.

    ``with FakeKubeAPI() as api:`` or ``start()`` / ``stop()``. Thread-safe: tests change the
    state from their own thread while handler threads serve clients.
    """

    def __init__(self, *, token: str = "fake-token", initial_resource_version: int = 1) -> None:
        self.token = token
        self.requests: list[RequestRecord] = []
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()
        self._store = Store(self._cond, initial_resource_version)
        self._pager = Pager(self._store)
        self._watches = Watches(self._store)
        self._faults = Faults(self._cond)
        self._access = Access(self._cond)
        self._runner = Runner(self._cond)

    # -- lifecycle

    def start(self) -> Self:
        self._runner.start(self)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (watches abruptly) and join every thread."""
        self._runner.stop(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._runner.url

    def kubeconfig(self, path: str | os.PathLike[str]) -> str:
        """Write a kubeconfig for this server (plain HTTP, context "fake", a bearer token) and
        return its path as a string (kubernetes.config.load_kube_config wants a str)."""
        text = f"""\
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {json.dumps(self.url)}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
users:
- name: fake
  user:
    token: {json.dumps(self.token)}
preferences: {{}}
"""
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return os.fspath(path)

    # -- state

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._store.rv)

    def put(self, obj: JSON) -> str:
        """Add or replace an object (by kind, namespace, name); return its new resourceVersion.
        A missing namespace is "default"; a missing apiVersion is the kind's."""
        return self._store.put(obj)

    def delete(self, kind: str, namespace: str, name: str) -> str:
        """Remove an object; return the resourceVersion of its DELETED event."""
        return self._store.delete(kind, namespace, name)

    def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        """The stored object (a copy, kind and apiVersion included), or None."""
        return self._store.get(kind, namespace, name)

    # -- what a client may do, and the server's version

    @property
    def version_info(self) -> JSON:
        """What ``GET /version`` answers (a copy); ``set_version`` changes it."""
        with self._cond:
            return dict(self._access.version)

    def set_version(self, git_version: str) -> None:
        """Answer ``GET /version`` as a server of this version ("v1.29.3")."""
        major, minor = git_version.lstrip("v").split(".")[:2]
        with self._cond:
            self._access.version.update(major=major, minor=minor, gitVersion=git_version)

    def deny(self, verb: str, resource: str, *, group: str | None = None) -> None:
        """SelfSubjectAccessReviews of `verb` on `resource` (in `group`: by default the served
        resource's own, else the core group) answer ``allowed: false``; others are allowed."""
        self._access.deny(verb, resource, group)

    def allow_all(self) -> None:
        self._access.allow_all()

    @property
    def access_reviews(self) -> list[JSON]:
        """The ``spec.resourceAttributes`` of every review received, in order."""
        with self._cond:
            return list(self._access.reviews)

    # -- fault injection

    def compact(self) -> None:
        """Discard the event log up to the current revision: a later watch from an older
        revision gets a 410 ERROR event. Open watches are not affected."""
        self._store.compact()

    def expire_continue_tokens(self) -> None:
        """Make every outstanding continue token invalid (410 Expired when used)."""
        self._pager.expire()

    def fail_next(self, resource: str, status: int = 500, times: int = 1) -> None:
        """Fail the next `times` requests (list or watch) for `resource` with `status`; also
        "version" (``GET /version``) and "selfsubjectaccessreviews"."""
        self._faults.fail_next(check_target(resource), status, times)

    def bookmark(self, resource: str) -> int:
        """Send a BOOKMARK at the current revision on every open watch of `resource` that asked
        for bookmarks; return how many watches got one."""
        return self._watches.bookmark(RESOURCES[check_resource(resource)])

    def drop_watches(self, resource: str | None = None) -> int:
        """Abruptly close open watch connections (no terminating chunk); return how many."""
        if resource is not None:
            check_resource(resource)
        return self._watches.drop(resource)

    def hang_watches(self, resource: str | None = None) -> None:
        """Open and future watches (of `resource`, or all) send nothing until unhang()."""
        if resource is not None:
            check_resource(resource)
        self._faults.hang(resource)

    def unhang(self) -> None:
        self._faults.unhang()

    # -- introspection

    def open_watches(self, resource: str | None = None) -> int:
        return self._watches.count(resource)

    def wait_for_watch(self, resource: str, timeout: float = 5.0, count: int = 1) -> None:
        """Block until at least `count` watches on `resource` are open; TimeoutError if not."""
        self._watches.wait_for(check_resource(resource), timeout, count)

    def wait_for_request(
        self, predicate: Callable[[RequestRecord], bool], timeout: float = 5.0
    ) -> RequestRecord:
        """Block until a request matching `predicate` has arrived (already or later)."""
        with self._cond:
            found: list[RequestRecord] = []

            def seen() -> bool:
                found[:] = [r for r in self.requests if predicate(r)][:1]
                return bool(found)

            if not self._cond.wait_for(seen, timeout):
                raise TimeoutError(f"no matching request within {timeout}s")
            return found[0]

    # -- hooks called by handler threads

    def _record(self, record: RequestRecord) -> None:
        with self._cond:
            self.requests.append(record)
            self._cond.notify_all()

    def _take_failure(self, resource: str) -> None:
        self._faults.take_failure(resource)

    def _is_hung(self, resource: str) -> bool:
        return self._faults.is_hung(resource)

    def _list(
        self, rt: ResourceType, namespace: str | None, selector: Selector, query: dict[str, str]
    ) -> JSON:
        return self._pager.list_response(rt, namespace, selector, query)

    def _open_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: Selector,
        rv_text: str | None,
        bookmarks: bool,
        deadline: float | None,
        handler: Handler,
    ) -> Watch:
        return self._watches.open(
            rt, namespace, selector, rv_text, bookmarks, deadline, handler.connection
        )

    def _close_watch(self, watch: Watch) -> None:
        self._watches.close(watch)

    def _review(self, body: object) -> JSON:
        return self._access.review(body)
