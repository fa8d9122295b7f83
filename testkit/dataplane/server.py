"""server: the HTTP server of the emulator: routing, basic auth, faults, the request log.

A `ThreadingHTTPServer` on 127.0.0.1 and an ephemeral port (HTTP/1.1, keep-alive) that, as
dataplaneapi's middleware chain does, authenticates every request first (HTTP basic: 401 with
`WWW-Authenticate: Basic realm="API"`, "missing or invalid authorization" or "unauthorized"),
then routes it: 404 "path ... was not found" for an unknown path, 405 with `Allow` for a known
path and another method. Every response carries `Configuration-Version`, 401 and 404 included.
Before routing, an injected fault answers instead (`fail_next`). What the endpoints do is
emulator.py's, servers.py's and maps.py's.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from testkit.dataplane.wire import ApiError, Request, Response, Route, negotiate


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the emulator answered it."""

    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass(slots=True)
class Fault:
    status: int
    message: str
    path_prefix: str | None
    method: str | None
    times: int

    def matches(self, method: str, path: str) -> bool:
        return (self.path_prefix is None or path.startswith(self.path_prefix)) and (
            self.method is None or self.method == method
        )


class ApiServer:
    """A threaded HTTP server on 127.0.0.1 and an ephemeral port answering `routes`."""

    def __init__(
        self,
        routes: list[Route],
        *,
        user: str,
        password: str,
        version: Callable[[], int],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.routes = routes
        self._credentials = f"{user}:{password}".encode()
        self._version = version
        self.requests: list[Recorded] = []
        self.errors: list[BaseException] = []  # unexpected exceptions in handlers: a bug
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()  # open: a stopped API drops them
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Go's server
            # TCP_NODELAY, as Go sets on every connection: with Nagle, a reply's body waits for
            # the client's delayed ACK of its headers (40 ms a request on Linux).
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with api._lock:
                    api._connections.add(self.connection)

            def finish(self) -> None:
                with api._lock:
                    api._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                api._serve(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            # The handshake runs in the handler's thread, not in accept(): a client that
            # refuses the certificate must not stall the server.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self._scheme = "https"
            # A client that refuses our certificate ends its connection in the handshake:
            # what a TLS server sees every day, not a traceback.
            self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        # A short poll: shutdown() waits for it, and every test stops an emulator.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="dataplane-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop answering: no new connection, and the open ones (keep-alive) are closed."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def fail_next(
        self, status: int, message: str, *, path_prefix: str | None, method: str | None, times: int
    ) -> None:
        with self._lock:
            self._faults.append(Fault(status, message, path_prefix, method, times))

    # --- one request ----------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        url = urlsplit(handler.path)
        request = Request(
            handler.command, url.path, dict(parse_qsl(url.query)), handler.headers, body
        )
        try:
            response = self._answer(request)
        except ApiError as exc:
            response = Response.error(exc)
        except Exception as exc:  # a bug in the emulator: answered as dataplaneapi's recover
            self.errors.append(exc)
            response = Response.error(ApiError(500, f"emulator: {type(exc).__name__}: {exc}"))
        with self._lock:
            self.requests.append(
                Recorded(request.method, request.path, request.query, response.status)
            )
        self._write(handler, response)

    def _answer(self, request: Request) -> Response:
        self._authenticate(request.headers.get("Authorization"))
        with self._lock:
            fault = next((f for f in self._faults if f.matches(request.method, request.path)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
        if fault is not None:
            raise ApiError(fault.status, fault.message)
        allowed = []
        for route in self.routes:
            params = route.match(request.path)
            if params is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            route.check(params)
            negotiate(request.headers.get("Accept", ""), route.produces)
            return route.handler(replace(request, params=params))
        if allowed:
            raise ApiError(
                405,
                f"method {request.method} is not allowed for path {request.path}",
                headers={"Allow": ", ".join(allowed)},
            )
        raise ApiError(404, f"path {request.path} was not found")

    def _authenticate(self, header: str | None) -> None:
        challenge = {"WWW-Authenticate": 'Basic realm="API"'}
        scheme, _, encoded = (header or "").partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            given = b""
        if scheme.lower() != "basic" or b":" not in given:
            raise ApiError(401, "missing or invalid authorization", headers=challenge)
        if not hmac.compare_digest(given, self._credentials):
            raise ApiError(401, "unauthorized", headers=challenge)

    def _write(self, handler: BaseHTTPRequestHandler, response: Response) -> None:
        handler.send_response(response.status)
        if response.content_type is not None:
            handler.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        # Read as the status line is written, as dataplaneapi's middleware does: after a write
        # (or a restore after a refused reload) it is the version now on disk.
        handler.send_header("Configuration-Version", str(self._version()))
        body = b"" if response.status in (204, 304) or handler.command == "HEAD" else response.body
        if response.status not in (204, 304):
            handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(body)
