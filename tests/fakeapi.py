"""A fake Kubernetes API server that speaks the list and watch wire protocol over real HTTP.

Tests of the controller point the official ``kubernetes`` client at it (``api.kubeconfig()``)
instead of patching the client, so what is exercised is the client's real request building,
urllib3's real chunked decoding and the controller's real error handling.

The server is standard library only: ``http.server.ThreadingHTTPServer`` speaking HTTP/1.1
(keep-alive) on 127.0.0.1 and an ephemeral port, one thread per connection.

Resources (``GET`` only; the plural paths of the real API server, cluster-wide or namespaced):

    /api/v1/services                 /api/v1/namespaces/{ns}/services
    /api/v1/endpoints                /api/v1/namespaces/{ns}/endpoints
    /apis/discovery.k8s.io/v1/endpointslices
    /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices

Anything else is 404 with a ``Status`` body (another method is 405); a malformed query is 400.

State. ``put(obj)`` and ``delete(kind, ns, name)`` change the store. Every change takes the next
value of ONE global counter (like an etcd revision), which becomes the object's
``metadata.resourceVersion`` and the revision of the ADDED / MODIFIED / DELETED event recorded in
a log that watches replay from. ``resourceVersion`` values on the wire are decimal strings.

LIST (no ``watch``)::

    200 {"kind": "ServiceList", "apiVersion": "v1",
         "metadata": {"resourceVersion": "42", "continue": "...", "remainingItemCount": 3},
         "items": [{"metadata": ...}, ...]}

Items are sorted by namespace then name and carry no ``kind``/``apiVersion`` (as the real server
sends them). ``labelSelector`` takes comma-separated (AND) terms ``key``, ``!key``, ``key=value``,
``key==value`` and ``key!=value`` (which also matches objects without the key). With ``limit`` the
list is paginated: ``metadata.continue`` is present only while items remain (and
``remainingItemCount`` too, when no selector is used); the token is opaque and every page of one
list comes from the snapshot taken by the first page, whose revision is the list's
``metadata.resourceVersion``. After ``expire_continue_tokens()`` a request with an old token gets
410 ``Expired`` whose ``Status`` carries, as the real server's does, a fresh ``metadata.continue``
that continues from the same key on the current state (an inconsistent list). The list's
``resourceVersion`` parameter is ignored: lists are always served from the latest state.

WATCH (``watch=true``, or any value Go's ``strconv.ParseBool`` reads as true)::

    200  Content-Type: application/json  Transfer-Encoding: chunked
    {"type":"ADDED","object":{"kind":"Service","apiVersion":"v1","metadata":{...},...}}\\n
    {"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1","metadata":{...}}}\\n
    0\\r\\n\\r\\n  (the terminating chunk, when timeoutSeconds runs out)

One JSON event per line, each line written and flushed as its own HTTP chunk. ``resourceVersion``
is required (400 without it). The stream first replays every logged event of the resource newer
than that revision, then streams live events; ``resourceVersion=0`` instead starts with a
synthetic ADDED event for each current object (the real server's "any" semantics). Events are
filtered by namespace and ``labelSelector`` the way the watch cache filters them: an object
modified into the selection arrives as ADDED, one modified out of it as DELETED (its previous
state with the new revision). Event objects DO carry ``kind``/``apiVersion``.
``timeoutSeconds`` (whole seconds) ends the stream cleanly with the terminating chunk; without it
the stream stays open until the test stops the server. With ``allowWatchBookmarks=true``,
``bookmark(resource)`` sends a BOOKMARK at the current revision.

Failures a test can inject:

- ``compact()``: the log of every revision up to the current one is discarded. A watch from a
  revision older than that one (it would need a discarded event) gets HTTP 200 and a
  single ``ERROR`` event carrying a 410 ``Expired`` Status ("too old resource version: X (Y)"),
  then the stream ends cleanly. A watch from the current revision or a newer one is served, so a
  client that relists after the 410 recovers. Open watches are not affected.
- ``fail_next(resource, status, times)``: the next requests (list or watch) fail with that
  status and a ``Status`` body.
- ``expire_continue_tokens()``: see LIST.
- ``drop_watches()``: open watch sockets are shut down with no terminating chunk, so the client
  sees a broken chunked stream (urllib3 ``ProtocolError``, ``http.client.IncompleteRead``).
- ``hang_watches()``: open and future watches send nothing at all (a new watch does not even get
  its response headers) while their TCP connections stay open, like a dead peer, so only a client
  read timeout notices; ``unhang()`` delivers what was held back, in order. ``timeoutSeconds``
  does not fire while a watch is hung. A hung watch counts in ``open_watches()``.

Introspection: ``requests`` (every request as a ``RequestRecord``), ``open_watches()``,
``wait_for_watch()``, ``wait_for_request()`` and ``errors`` (unexpected exceptions in handler
threads: a correct run leaves it empty).

Seen from the kubernetes client (37.x), worth knowing when writing the controller's tests:
``load_kube_config`` wants the kubeconfig path as a ``str`` (a ``Path`` fails), which is what
``kubeconfig()`` returns; the client's default urllib3 ``Retry(3)`` retries a GET whose response
headers time out, so a watch opened while hung is sent 4 times before ``MaxRetryError``; and a
urllib3 streaming response must be iterated through ONE iterator (an abandoned ``iter(resp)``
closes the connection), and closed with ``close()``, not ``release_conn()``, mid-stream.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]

__all__ = ["RESOURCES", "FakeKubeAPI", "RequestRecord", "ResourceType", "Selector"]


@dataclass(frozen=True)
class ResourceType:
    """One served resource: its plural (the path segment), kinds and API group prefix."""

    resource: str
    kind: str
    list_kind: str
    api_version: str
    prefix: str


RESOURCES: dict[str, ResourceType] = {
    rt.resource: rt
    for rt in (
        ResourceType("services", "Service", "ServiceList", "v1", "/api/v1"),
        ResourceType("endpoints", "Endpoints", "EndpointsList", "v1", "/api/v1"),
        ResourceType(
            "endpointslices",
            "EndpointSlice",
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            "/apis/discovery.k8s.io/v1",
        ),
    )
}
_BY_KIND = {rt.kind: rt for rt in RESOURCES.values()}

_ROUTE = re.compile(
    r"^(?P<prefix>/api/v1|/apis/discovery\.k8s\.io/v1)"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[a-z]+)$"
)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this response "
    "to retrieve the remainder of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted between the time the "
    "first chunk was returned and now may show up in the list."
)

# How often a waiting watch thread checks whether its client went away.
_POLL = 0.05


def status_body(code: int, message: str, reason: str | None = None) -> JSON:
    """A ``Status`` object as the API server sends with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which the API server uses for query flags."""
    if text in {"1", "t", "T", "TRUE", "true", "True"}:
        return True
    if text in {"0", "f", "F", "FALSE", "false", "False"}:
        return False
    raise ValueError(f"invalid boolean value {text!r}")


# ---------------------------------------------------------------------------------------------
# Label selectors


_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_KEY = rf"(?:{_NAME}/)?{_NAME}"  # an optional DNS-subdomain-like prefix, then a name
_LABEL_VALUE = rf"(?:{_NAME})?"
_TERM = re.compile(
    rf"^(?:(?P<not>!)\s*(?P<nkey>{_LABEL_KEY})"
    rf"|(?P<key>{_LABEL_KEY})\s*(?:(?P<op>==|!=|=)\s*(?P<value>{_LABEL_VALUE}))?)$"
)


@dataclass(frozen=True)
class Selector:
    """An equality-based label selector: terms of (key, op, value), all of which must hold.
    op is "exists", "!exists", "=" or "!="."""

    terms: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Selector:
        if not text.strip():
            return cls()
        terms: list[tuple[str, str, str]] = []
        for raw in text.split(","):
            match = _TERM.match(raw.strip())
            if match is None:
                raise ValueError(f"unable to parse requirement: {raw.strip()!r}")
            if match["not"]:
                terms.append((match["nkey"], "!exists", ""))
            elif match["op"] is None:
                terms.append((match["key"], "exists", ""))
            else:
                op = "!=" if match["op"] == "!=" else "="
                terms.append((match["key"], op, match["value"]))
        return cls(tuple(terms))

    def matches(self, labels: Any) -> bool:
        if not isinstance(labels, dict):  # absent, or garbage a test put on purpose
            labels = {}
        for key, op, value in self.terms:
            if op == "exists" and key not in labels:
                return False
            if op == "!exists" and key in labels:
                return False
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.terms


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. Header names are lower-cased; for a repeated query
    parameter the first value is kept (as Go's url.Values.Get does)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    resource: str | None = None

    @property
    def watch(self) -> bool:
        try:
            return _parse_bool(self.query.get("watch", "false"))
        except ValueError:
            return False


@dataclass(frozen=True)
class _Event:
    rv: int
    resource: str
    type: str  # ADDED, MODIFIED or DELETED
    obj: JSON  # the new state (for DELETED: the last state), kind/apiVersion included
    prev: JSON | None  # the state before, with this event's resourceVersion (for DELETED: None)


@dataclass(frozen=True)
class _Snapshot:
    resource: str
    rv: int
    objects: tuple[JSON, ...]  # sorted by (namespace, name)


@dataclass(eq=False)
class _Watch:
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

    def line_for(self, event: _Event) -> bytes | None:
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
        return _dumps({"type": kind, "object": obj}) + b"\n"


def _key(obj: JSON) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta["namespace"], meta["name"])


def _without_type(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _encode_token(snapshot_id: int, rv: int, start: tuple[str, str]) -> str:
    raw = _dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(start), "snap": snapshot_id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        ns, name = data["start"]
        return int(data["snap"]), (str(ns), str(name))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"continue key is not valid: {exc}") from None


class _Failure(Exception):
    """An error response: the status code and its Status body."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, body: JSON | None = None
    ) -> None:
        super().__init__(message)
        self.body = body or status_body(code, message, reason)
        self.code = code


# ---------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # FakeKubeAPI.stop() joins the handler threads, with a deadline
    allow_reuse_address = True

    def __init__(self, api: FakeKubeAPI) -> None:
        self.api = api
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"fakeapi-conn-{client_address[1]}",
            daemon=True,
        )
        with self.api._cond:
            self.api._connections.add(request)
            self.api._threads = [t for t in self.api._threads if t.is_alive()] + [thread]
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self.api._cond:
            self.api._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client or a test (drop, stop) closed the connection
            return
        if exc is not None:
            self.api.errors.append(exc)
        traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing

    def _send_json(self, code: int, body: JSON) -> None:
        data = _dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- methods

    def do_GET(self) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        match = _ROUTE.match(split.path)
        rt = None
        if match:
            candidate = RESOURCES.get(match["resource"])
            if candidate is not None and candidate.prefix == match["prefix"]:
                rt = candidate
        api._record(
            RequestRecord(
                method=self.command,
                path=split.path,
                query=query,
                headers={k.lower(): v for k, v in self.headers.items()},
                resource=rt.resource if rt else None,
            )
        )
        try:
            if rt is None or match is None:
                raise _Failure(404, "the server could not find the requested resource")
            api._take_failure(rt.resource)
            watch = _parse_bool(query.get("watch", "false"))
            selector = Selector.parse(query.get("labelSelector", ""))
            if watch:
                self._watch(rt, match["ns"], selector, query)
            else:
                self._send_json(200, api._list(rt, match["ns"], selector, query))
        except _Failure as failure:
            self._send_json(failure.code, failure.body)
        except ValueError as exc:
            self._send_json(400, status_body(400, str(exc)))

    def _not_allowed(self) -> None:
        self.server.api._record(
            RequestRecord(
                method=self.command,
                path=urlsplit(self.path).path,
                query={},
                headers={k.lower(): v for k, v in self.headers.items()},
            )
        )
        self.close_connection = True  # the request body, if any, is not read
        self._send_json(405, status_body(405, f"the server does not allow method {self.command}"))

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _not_allowed

    def _watch(
        self, rt: ResourceType, namespace: str | None, selector: Selector, query: dict[str, str]
    ) -> None:
        api = self.server.api
        timeout = query.get("timeoutSeconds")
        deadline = None
        if timeout not in (None, ""):
            try:
                deadline = time.monotonic() + int(timeout)
            except ValueError:
                raise ValueError(f"invalid timeoutSeconds {timeout!r}") from None
        bookmarks = _parse_bool(query.get("allowWatchBookmarks", "false"))
        watch = api._open_watch(
            rt, namespace, selector, query.get("resourceVersion"), bookmarks, deadline, self
        )
        try:
            self._stream(watch)
        except OSError:
            self.close_connection = True
        finally:
            api._close_watch(watch)

    def _stream(self, watch: _Watch) -> None:
        api = self.server.api
        started = False
        while True:
            with api._cond:
                while True:
                    expired = False
                    if api._stopping or watch.dropped or _peer_closed(watch.sock):
                        self.close_connection = True
                        return
                    if not api._is_hung(watch.rt.resource):
                        expired = watch.deadline is not None and time.monotonic() >= watch.deadline
                        if not started or watch.pending or watch.finish or expired:
                            break
                    wait = _POLL
                    if watch.deadline is not None:
                        wait = max(0.0, min(wait, watch.deadline - time.monotonic()))
                    api._cond.wait(wait)
                lines = list(watch.pending)
                watch.pending.clear()
                end = not lines and (watch.finish or expired)
            if not started:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Cache-Control", "no-cache, private")
                self.end_headers()
                self.wfile.flush()
                started = True
            for line in lines:
                self._send_chunk(line)
            if end:
                self._send_chunk(b"")  # the terminating zero-length chunk: a clean end
                return


def _peer_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


# ---------------------------------------------------------------------------------------------
# The API


class FakeKubeAPI:
    """A local Kubernetes API server for Services, Endpoints and EndpointSlices (list + watch).

    ``with FakeKubeAPI() as api:`` or ``start()`` / ``stop()``. Thread-safe: tests change the
    state from their own thread while handler threads serve clients.
    """

    def __init__(self, *, token: str = "fake-token", initial_resource_version: int = 1) -> None:
        self.token = token
        self.requests: list[RequestRecord] = []
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()
        self._rv = initial_resource_version
        self._compacted = 0  # a watch from an rv below this gets 410
        self._objects: dict[tuple[str, str, str], JSON] = {}
        self._log: list[_Event] = []
        self._snapshots: dict[int, _Snapshot] = {}
        self._next_snapshot = 1
        self._failures: dict[str, deque[int]] = {}
        self._watches: set[_Watch] = set()
        self._hung: set[str] = set()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeKubeAPI already started")
        self._stopping = False
        self._server = _Server(self)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fakeapi-accept",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (watches abruptly) and join every thread."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()  # no new connections once this returns
        if self._serve_thread is not None:
            self._serve_thread.join(timeout)
        with self._cond:
            connections = list(self._connections)
            threads = list(self._threads)
        for sock in connections:
            _shutdown(sock)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        server.server_close()
        alive = [t.name for t in threads if t.is_alive()]
        with self._cond:
            self._threads = [t for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"FakeKubeAPI.stop: threads still running after {timeout}s: {alive}")

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
        if self._server is None:
            raise RuntimeError("FakeKubeAPI is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

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
            return str(self._rv)

    def put(self, obj: JSON) -> str:
        """Add or replace an object (by kind, namespace, name); return its new resourceVersion.
        A missing namespace is "default"; a missing apiVersion is the kind's."""
        rt = self._type_of_kind(obj.get("kind"))
        new = {"apiVersion": rt.api_version, "kind": rt.kind, **copy.deepcopy(obj)}
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ValueError("put: metadata is not a mapping")
        meta.setdefault("namespace", "default")
        if not (isinstance(meta.get("name"), str) and meta["name"]):
            raise ValueError("put: metadata.name must be a non-empty string")
        if not (isinstance(meta["namespace"], str) and meta["namespace"]):
            raise ValueError("put: metadata.namespace must be a non-empty string")
        key = (rt.resource, meta["namespace"], meta["name"])
        with self._cond:
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            prev = self._objects.get(key)
            self._objects[key] = new
            kind = "MODIFIED" if prev else "ADDED"
            self._append(_Event(self._rv, rt.resource, kind, new, _at(prev, self._rv)))
            return str(self._rv)

    def delete(self, kind: str, namespace: str, name: str) -> str:
        """Remove an object; return the resourceVersion of its DELETED event."""
        rt = self._type_of_kind(kind)
        key = (rt.resource, namespace, name)
        with self._cond:
            if key not in self._objects:
                raise KeyError(f"no {kind} {namespace}/{name}")
            self._rv += 1
            last = _at(self._objects.pop(key), self._rv)
            assert last is not None
            self._append(_Event(self._rv, rt.resource, "DELETED", last, None))
            return str(self._rv)

    def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        """The stored object (a copy, kind and apiVersion included), or None."""
        rt = self._type_of_kind(kind)
        with self._cond:
            obj = self._objects.get((rt.resource, namespace, name))
        return copy.deepcopy(obj)

    # -- fault injection

    def compact(self) -> None:
        """Discard the event log up to the current revision: a later watch from an older
        revision gets a 410 ERROR event. Open watches are not affected."""
        with self._cond:
            self._compacted = self._rv
            self._log = [e for e in self._log if e.rv > self._rv]

    def expire_continue_tokens(self) -> None:
        """Make every outstanding continue token invalid (410 Expired when used)."""
        with self._cond:
            self._snapshots.clear()

    def fail_next(self, resource: str, status: int = 500, times: int = 1) -> None:
        """Fail the next `times` requests (list or watch) for `resource` with `status`."""
        self._check_resource(resource)
        with self._cond:
            self._failures.setdefault(resource, deque()).extend([status] * times)

    def bookmark(self, resource: str) -> int:
        """Send a BOOKMARK at the current revision on every open watch of `resource` that asked
        for bookmarks; return how many watches got one."""
        rt = RESOURCES[self._check_resource(resource)]
        with self._cond:
            line = (
                _dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(self._rv)},
                        },
                    }
                )
                + b"\n"
            )
            count = 0
            for watch in self._watches:
                if watch.rt is rt and watch.bookmarks and not watch.finish:
                    watch.pending.append(line)
                    count += 1
            self._cond.notify_all()
            return count

    def drop_watches(self, resource: str | None = None) -> int:
        """Abruptly close open watch connections (no terminating chunk); return how many."""
        if resource is not None:
            self._check_resource(resource)
        with self._cond:
            dropped = [w for w in self._watches if resource in (None, w.rt.resource)]
            for watch in dropped:
                watch.dropped = True
                _shutdown(watch.sock)
            self._cond.notify_all()
            return len(dropped)

    def hang_watches(self, resource: str | None = None) -> None:
        """Open and future watches (of `resource`, or all) send nothing until unhang()."""
        if resource is not None:
            self._check_resource(resource)
        with self._cond:
            self._hung.update(RESOURCES if resource is None else {resource})
            self._cond.notify_all()

    def unhang(self) -> None:
        with self._cond:
            self._hung.clear()
            self._cond.notify_all()

    # -- introspection

    def open_watches(self, resource: str | None = None) -> int:
        with self._cond:
            return sum(1 for w in self._watches if resource in (None, w.rt.resource))

    def wait_for_watch(self, resource: str, timeout: float = 5.0, count: int = 1) -> None:
        """Block until at least `count` watches on `resource` are open; TimeoutError if not."""
        self._check_resource(resource)
        with self._cond:
            if not self._cond.wait_for(
                lambda: sum(1 for w in self._watches if w.rt.resource == resource) >= count,
                timeout,
            ):
                raise TimeoutError(f"no {count} open watch(es) on {resource} within {timeout}s")

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

    # -- internals (called by handler threads)

    def _type_of_kind(self, kind: Any) -> ResourceType:
        if kind not in _BY_KIND:
            raise ValueError(f"unsupported kind {kind!r}: one of {sorted(_BY_KIND)}")
        return _BY_KIND[kind]

    @staticmethod
    def _check_resource(resource: str) -> str:
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}: one of {sorted(RESOURCES)}")
        return resource

    def _record(self, record: RequestRecord) -> None:
        with self._cond:
            self.requests.append(record)
            self._cond.notify_all()

    def _take_failure(self, resource: str) -> None:
        with self._cond:
            queue = self._failures.get(resource)
            if not queue:
                return
            code = queue.popleft()
        raise _Failure(code, f"injected failure ({code}) for {resource}")

    def _is_hung(self, resource: str) -> bool:
        return resource in self._hung

    def _append(self, event: _Event) -> None:
        # Caller holds the lock.
        self._log.append(event)
        for watch in self._watches:
            if watch.finish:
                continue
            line = watch.line_for(event)
            if line is not None:
                watch.pending.append(line)
        self._cond.notify_all()

    def _sorted_objects(self, rt: ResourceType) -> tuple[JSON, ...]:
        items = [o for (resource, _, _), o in self._objects.items() if resource == rt.resource]
        return tuple(sorted(items, key=_key))

    def _list(
        self, rt: ResourceType, namespace: str | None, selector: Selector, query: dict[str, str]
    ) -> JSON:
        limit_text = query.get("limit", "")
        try:
            limit = int(limit_text) if limit_text else 0
        except ValueError:
            raise ValueError(f"invalid limit {limit_text!r}") from None
        token = query.get("continue", "")
        with self._cond:
            snapshot: _Snapshot | None = None
            snapshot_id = 0
            start: tuple[str, str] | None = None
            if token:
                snapshot_id, start = _decode_token(token)
                snapshot = self._snapshots.get(snapshot_id)
                if snapshot is None:
                    fresh = self._snapshot(rt)
                    body = status_body(410, _CONTINUE_EXPIRED, "Expired")
                    body["metadata"] = {"continue": _encode_token(fresh[0], fresh[1].rv, start)}
                    raise _Failure(410, _CONTINUE_EXPIRED, body=body)
                if snapshot.resource != rt.resource:
                    raise ValueError("continue key is not valid: it belongs to another resource")
            if snapshot is None:
                objects, rv = self._sorted_objects(rt), self._rv
            else:
                objects, rv = snapshot.objects, snapshot.rv
            selected = [
                o
                for o in objects
                if (namespace is None or o["metadata"]["namespace"] == namespace)
                and selector.matches(o["metadata"].get("labels"))
                and (start is None or _key(o) > start)
            ]
            metadata: JSON = {"resourceVersion": str(rv)}
            if limit > 0 and len(selected) > limit:
                if snapshot is None:
                    snapshot_id, _ = self._snapshot(rt, objects, rv)
                page = selected[:limit]
                metadata["continue"] = _encode_token(snapshot_id, rv, _key(page[-1]))
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

    def _snapshot(
        self, rt: ResourceType, objects: tuple[JSON, ...] | None = None, rv: int | None = None
    ) -> tuple[int, _Snapshot]:
        # Caller holds the lock.
        snapshot = _Snapshot(
            rt.resource,
            self._rv if rv is None else rv,
            self._sorted_objects(rt) if objects is None else objects,
        )
        snapshot_id = self._next_snapshot
        self._next_snapshot += 1
        self._snapshots[snapshot_id] = snapshot
        return snapshot_id, snapshot

    def _open_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: Selector,
        rv_text: str | None,
        bookmarks: bool,
        deadline: float | None,
        handler: _Handler,
    ) -> _Watch:
        if not rv_text:
            raise ValueError("this fake API server requires resourceVersion on a watch")
        try:
            rv = int(rv_text)
        except ValueError:
            raise ValueError(f"invalid resource version {rv_text!r}") from None
        watch = _Watch(rt, namespace, selector, bookmarks, handler.connection, deadline)
        with self._cond:
            if rv == 0:  # "any": synthetic ADDED events for the current state
                for obj in self._sorted_objects(rt):
                    if watch.sees(obj):
                        watch.pending.append(_dumps({"type": "ADDED", "object": obj}) + b"\n")
            elif rv < self._compacted:
                message = f"too old resource version: {rv} ({self._compacted})"
                error = status_body(410, message, "Expired")
                del error["metadata"]
                watch.pending.append(_dumps({"type": "ERROR", "object": error}) + b"\n")
                watch.finish = True
            else:
                for event in self._log:
                    if event.rv > rv:
                        line = watch.line_for(event)
                        if line is not None:
                            watch.pending.append(line)
            self._watches.add(watch)
            self._cond.notify_all()
        return watch

    def _close_watch(self, watch: _Watch) -> None:
        with self._cond:
            self._watches.discard(watch)
            self._cond.notify_all()


def _at(obj: JSON | None, rv: int) -> JSON | None:
    """A copy of obj with metadata.resourceVersion set to rv."""
    if obj is None:
        return None
    out = dict(obj)
    out["metadata"] = {**obj["metadata"], "resourceVersion": str(rv)}
    return out


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)
