"""HTTP request handling: routing a path to a resource, recording every request, answering a list
with one JSON body and a watch with a chunked stream of event lines, and turning failures into
``Status`` responses (``Failure``: its code; ``ValueError``: 400; another method: 405). Beside
the resources: ``GET /version`` and ``POST`` of a SelfSubjectAccessReview (access.py).

The handler reaches the server's state through ``FakeKubeAPI``'s underscore hooks (``_record``,
``_take_failure``, ``_list``, ``_open_watch``, ``_close_watch``, ``_is_hung``, ``_review``) and
its lock ``_cond``, never around them, because tests subclass the facade to change a hook
(test_kube's ``ExpiringAPI`` and ``QuirkyAPI``). Only the stop flag comes from the server's
``Runner``.
"""

from __future__ import annotations

import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .access import REVIEWS_PATH, VERSION_PATHS
from .labels import Selector
from .resources import RESOURCES, ResourceType
from .wire import JSON, Failure, RequestRecord, dumps, parse_bool, status_body

if TYPE_CHECKING:
    from .server import Server
    from .watch import Watch

_ROUTE = re.compile(
    r"^(?P<prefix>/api/v1|/apis/discovery\.k8s\.io/v1)"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[a-z]+)$"
)

# How often a waiting watch thread checks whether its client went away.
_POLL = 0.05


def route(path: str) -> tuple[ResourceType | None, str | None]:
    """The resource a path names and its namespace (None: cluster-wide); (None, None) when the
    path names no served resource."""
    match = _ROUTE.match(path)
    if match:
        candidate = RESOURCES.get(match["resource"])
        if candidate is not None and candidate.prefix == match["prefix"]:
            return candidate, match["ns"]
    return None, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing

    def _send_json(self, code: int, body: JSON) -> None:
        data = dumps(body)
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
        if split.path in VERSION_PATHS:
            self._version(query)
            return
        rt, namespace = route(split.path)
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
            if rt is None:
                raise Failure(404, "the server could not find the requested resource")
            api._take_failure(rt.resource)
            watch = parse_bool(query.get("watch", "false"))
            selector = Selector.parse(query.get("labelSelector", ""))
            if watch:
                self._watch(rt, namespace, selector, query)
            else:
                self._send_json(200, api._list(rt, namespace, selector, query))
        except Failure as failure:
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

    do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _not_allowed

    def do_POST(self) -> None:
        if urlsplit(self.path).path != REVIEWS_PATH:
            self._not_allowed()
            return
        api = self.server.api
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(data or b"null")
        except ValueError:
            body = None
        api._record(
            RequestRecord(
                method="POST",
                path=REVIEWS_PATH,
                query={},
                headers={k.lower(): v for k, v in self.headers.items()},
                resource="selfsubjectaccessreviews",
                body=body,
            )
        )
        try:
            api._take_failure("selfsubjectaccessreviews")
            self._send_json(201, api._review(body))
        except Failure as failure:
            self._send_json(failure.code, failure.body)

    def _version(self, query: dict[str, str]) -> None:
        api = self.server.api
        api._record(
            RequestRecord(
                method=self.command,
                path=urlsplit(self.path).path,
                query=query,
                headers={k.lower(): v for k, v in self.headers.items()},
                resource="version",
            )
        )
        try:
            api._take_failure("version")
            self._send_json(200, api.version_info)
        except Failure as failure:
            self._send_json(failure.code, failure.body)

    # -- watch streaming

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
        bookmarks = parse_bool(query.get("allowWatchBookmarks", "false"))
        watch = api._open_watch(
            rt, namespace, selector, query.get("resourceVersion"), bookmarks, deadline, self
        )
        try:
            self._stream(watch)
        except OSError:
            self.close_connection = True
        finally:
            api._close_watch(watch)

    def _stream(self, watch: Watch) -> None:
        api = self.server.api
        started = False
        while True:
            with api._cond:
                while True:
                    expired = False
                    if self.server.runner.stopping or watch.dropped or _peer_closed(watch.sock):
                        self.close_connection = True
                        return
                    # While hung not even the headers go out, and the deadline does not fire.
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
