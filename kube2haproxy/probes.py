"""probes: the controller's HTTP endpoint: /healthz, /readyz and /metrics (Prometheus format).

Plain `http.server` in a thread of its own: three read-only paths do not justify a framework.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


def parse_listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:9333`, `[::1]:9333` or `:9333` (every address)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {value!r}: expected host:port")
    return host.strip("[]"), int(port)


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
            (ThreadingHTTPServer,),
            {"address_family": _family(host), "daemon_threads": True},
        )
        self._server = server_class((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("serving /healthz, /readyz and /metrics on port %d", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


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
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)
