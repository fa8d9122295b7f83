"""probes: the controller's HTTP endpoint: /healthz, /readyz and /metrics (Prometheus format).

Plain `http.server` in a thread of its own: three read-only paths do not justify a framework.
The checks answer from state the controller already holds (health.py), never by waiting on
HAProxy, and a client that goes away before its answer is not an error.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kube2haproxy.errors import EnvironmentProblem
from kube2haproxy.settings import parse_listen

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


class ProbeServer:
    def __init__(
        self, listen: str, *, live: Check, ready: Check, registry: CollectorRegistry
    ) -> None:
        host, port = parse_listen(listen)
        handler = type(
            "Handler",
            (_Handler,),
            {"live": staticmethod(live), "ready": staticmethod(ready), "registry": registry},
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
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        host = self._server.server_address[0] or "every address"
        log.info("serving /healthz, /readyz and /metrics on %s port %d", host, self.port)

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
    server_version = "kube2haproxy"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        check = {"/healthz": self.live, "/livez": self.live, "/readyz": self.ready}.get(path)
        if path == "/metrics":
            self._send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif check is not None:
            ok, why = check()
            self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

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
