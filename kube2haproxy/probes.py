"""probes: the controller's HTTP endpoint: /healthz, /readyz and /metrics (Prometheus format),
and what it shows of the services: /status (JSON: every service port), /status/NS/NAME (JSON:
one service's whole path, for `explain`) and / (the same as /status, as an HTML page).

Plain `http.server` in a thread of its own: a few read-only paths do not justify a framework.
Everything answers from state the controller already holds (health.py; the status the
controller publishes, status.py), never by waiting on HAProxy or on the controller's loop, and
a client that goes away before its answer is not an error. The status report is built once per
publication and shared by the requests that ask for it meanwhile.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kube2haproxy import explain, selectors, statuspage
from kube2haproxy import status as reports
from kube2haproxy.errors import EnvironmentProblem, GrammarError
from kube2haproxy.resources import Key
from kube2haproxy.settings import parse_listen
from kube2haproxy.wire import encode

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]
Status = Callable[[], "reports.Published | None"]
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"


class Board:
    """The report of the status last published, built once per publication (a few hundred
    milliseconds at 10,000 services) and shared by the requests that ask meanwhile."""

    def __init__(self, status: Status, *, clock: Callable[[], float] = time.time) -> None:
        self._status = status
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[reports.Published, reports.StatusReport] | None = None

    def report(self) -> reports.StatusReport | None:
        published = self._status()
        if published is None:
            return None
        with self._lock:
            if self._last is None or self._last[0] is not published:
                self._last = (published, reports.report(published, now=published.at))
            found = self._last[1]
        return replace(found, generated_at=self._clock())

    def explain(self, key: Key) -> explain.Explanation | None:
        published = self._status()
        if published is None:
            return None
        return explain.explain(published, key, now=self._clock(), source="controller")


class ProbeServer:
    def __init__(
        self,
        listen: str,
        *,
        live: Check,
        ready: Check,
        registry: CollectorRegistry,
        status: Status | None = None,
    ) -> None:
        """`status`: what the controller last published (None: /status and / are not
        served)."""
        host, port = parse_listen(listen)
        handler = type(
            "Handler",
            (_Handler,),
            {
                "live": staticmethod(live),
                "ready": staticmethod(ready),
                "registry": registry,
                "board": Board(status) if status is not None else None,
            },
        )
        server_class = type(
            "Server",
            (_Server,),
            {"address_family": _family(host), "daemon_threads": True},
        )
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise EnvironmentProblem(
                f"--listen {listen}: cannot listen: {exc.strerror or exc}"
            ) from exc
        self.address = listen
        self._status = status is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        host = self._server.server_address[0] or "every address"
        paths = "/healthz, /readyz, /metrics, /status and /" if self._status else ""
        log.info(
            "serving %s on %s port %d", paths or "/healthz, /readyz and /metrics", host, self.port
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (a probe that timed out, a scraper that closed) is no
        error of ours; anything else is logged once, without killing the server."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("probe client %s went away: %s", client_address, exc)
        else:
            log.warning("probe request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    live: Check
    ready: Check
    registry: CollectorRegistry
    board: Board | None
    server_version = "kube2haproxy"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        check = {"/healthz": self.live, "/livez": self.live, "/readyz": self.ready}.get(path)
        if path == "/metrics":
            self._send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif check is not None:
            ok, why = check()
            self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
        elif self.board is not None and path in ("/", "/status"):
            self._status(self.board, url.query, html=path == "/")
        elif self.board is not None and path.startswith("/status/"):
            self._explain(self.board, path.removeprefix("/status/"))
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _status(self, board: Board, query: str, *, html: bool) -> None:
        asked = urllib.parse.parse_qs(query)
        text = asked.get("selector", [""])[-1]
        try:
            chosen = reports.Filter(
                namespace=asked.get("namespace", [""])[-1] or None,
                selector=selectors.parse(text),
                name=asked.get("name", [""])[-1] or None,
            )
        except GrammarError as exc:
            self._error(400, f"selector: {exc}")
            return
        found = board.report()
        if found is None:
            self._error(503, "the controller has published nothing yet")
            return
        found = reports.filtered(found, chosen)
        if html:
            self._send(200, statuspage.page(found, chosen, selector=text).encode(), HTML_TYPE)
        else:
            self._send(200, json.dumps(encode(found)).encode(), JSON_TYPE)

    def _explain(self, board: Board, rest: str) -> None:
        parts = [urllib.parse.unquote(p) for p in rest.split("/")]
        if len(parts) != 2 or not all(parts):
            self._error(404, "expected /status/NAMESPACE/NAME")
            return
        found = board.explain(Key(parts[0], parts[1]))
        if found is None:
            self._error(404, f"Service {ascii(parts[0])[1:-1]}/{ascii(parts[1])[1:-1]}: not known")
            return
        self._send(200, json.dumps(encode(found)).encode(), JSON_TYPE)

    def _error(self, code: int, message: str) -> None:
        self._send(code, json.dumps({"error": message}).encode(), JSON_TYPE)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError as exc:  # the client went away: nobody to answer
            log.debug("probe client %s went away: %s", self.client_address[0], exc)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)
