"""Real HTTP on loopback addresses, for tests and benchmarks: backends that answer their own name
(alone or as a fleet on one port, as the pods behind a Service), the clients that ask who
answers, and the client of the controller's probes."""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_next_ip = itertools.count(2)
# pytest-xdist runs tests in several processes ("gw0", "gw1", ...): each takes its own /16.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def loopback_ip() -> str:
    """A fresh 127.x.y.z address for a test (all of 127/8 is local on Linux), one that no other
    test process hands out."""
    n = next(_next_ip)
    return f"127.{20 + _WORKER}.{n // 250}.{n % 250 + 1}"


def free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


class Backend:
    """An HTTP server answering its own name: where a request landed."""

    def __init__(
        self, name: str, ip: str | None = None, port: int | None = None, *, keepalive: bool = False
    ) -> None:
        self.name = name
        self.ip = ip or loopback_ip()
        self.port = port or free_port(self.ip)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keepalive else "HTTP/1.0"

            def do_GET(handler) -> None:
                body = name.encode()
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server_class = type(
            "Server", (ThreadingHTTPServer,), {"daemon_threads": True, "allow_reuse_address": True}
        )
        self.server = server_class((self.ip, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fleet(
    names: Iterable[str], *, port: int | None = None, keepalive: bool = False
) -> Iterator[list[Backend]]:
    """Backends answering their names, each on an address of its own and all on one port (a
    free one unless given), as the pods behind a Service; closed on the way out."""
    port = port or free_port("127.0.0.1")
    made: list[Backend] = []
    try:
        for name in names:
            made.append(Backend(name, port=port, keepalive=keepalive))
        yield made
    finally:
        # Together: each takes up to half a second (its server's poll interval) to stop.
        closing = [threading.Thread(target=backend.close) for backend in made]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()


def get(ip: str, port: int, *, timeout: float = 5.0) -> str:
    connection = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return body
    finally:
        connection.close()


def answer(ip: str, port: int, *, timeout: float = 1.0) -> str:
    """Who answers one request, "" while nothing listens or routes there."""
    try:
        return get(ip, port, timeout=timeout)
    except (OSError, http.client.HTTPException):
        return ""


def responders(ip: str, port: int, *, requests: int = 40) -> set[str]:
    return {get(ip, port) for _ in range(requests)}


def routes(ip: str, port: int, *, requests: int = 5) -> set[str]:
    """Who answers, or nothing while nothing listens or routes there (a predicate for
    wait_for: it never raises for a connection that fails)."""
    try:
        return responders(ip, port, requests=requests)
    except (OSError, http.client.HTTPException):
        return set()


def serves(ip: str, port: int, expected: set[str], *, rounds: int = 5) -> set[str]:
    """Who answers, sampled until every expected endpoint did: round robin is shared with any
    other client, and two clients alternating each see every other server. Stops at once at an
    answer from outside `expected`, so a stale endpoint is never averaged away."""
    seen: set[str] = set()
    for _ in range(rounds):
        got = responders(ip, port)
        seen |= got
        if not got <= expected or seen == expected:
            break
    return seen


def probe(port: int, path: str, *, timeout: float = 5.0) -> tuple[int, str]:
    """The controller's HTTP endpoint on 127.0.0.1 (`--listen`): status and body, or (0, "")
    when nothing answers within `timeout`, as a kubelet's probe gives up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""
