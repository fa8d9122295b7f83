"""Real parts for the serve tests: HTTP backends on loopback addresses, a client that keeps
sending requests and records every failure, a supervised HAProxy in a temporary directory."""

from __future__ import annotations

import functools
import http.client
import itertools
import os
import socket
import textwrap
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kube2haproxy import configfile
from kube2haproxy.appliers import ApplyReport, Config
from kube2haproxy.appliers.master_cli import MasterCLIApplier
from kube2haproxy.appliers.runtime import RuntimeAPI
from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.capabilities import Capabilities, capabilities
from kube2haproxy.model import Model
from kube2haproxy.plan import Action, Plan

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


def wait_for(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


class Traffic:
    """Sends requests one after another on new connections, until stopped; every failure is
    kept with its time and reason."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.ok = 0
        self.failures: list[str] = []
        self.seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                name = get(self.ip, self.port)
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{time.monotonic():.3f} {type(exc).__name__}: {exc}")
                continue
            self.ok += 1
            self.seen[name] = self.seen.get(name, 0) + 1


@functools.cache
def capabilities_of(binary: str) -> Capabilities:
    """The capabilities of an haproxy executable (asked once per test session)."""
    return capabilities(configfile.binary_version(binary))


def applier_for(
    supervisor: Supervisor, *, binary: str, reload_timeout_s: float = 30.0
) -> MasterCLIApplier:
    """The real applier driving a supervised HAProxy (its config is the supervisor's)."""
    config = Path(supervisor.config)
    return MasterCLIApplier(
        config=config,
        maps_dir=config.parent / "maps",
        binary=binary,
        check_timeout_s=30,
        reload_timeout_s=reload_timeout_s,
        master=supervisor.master,
        runtime=RuntimeAPI(str(Path(supervisor.master.path).parent / "admin.sock")),
        supervisor=supervisor,
        check_capabilities=capabilities_of(binary),
    )


def supervised(tmp: Path, binary: str) -> tuple[Supervisor, MasterCLIApplier]:
    """A supervisor for an HAProxy whose config and master socket live in tmp, and its applier."""
    supervisor = Supervisor(
        binary=binary, config=str(tmp / "haproxy.cfg"), master_socket=str(tmp / "master.sock")
    )
    return supervisor, applier_for(supervisor, binary=binary)


def load(applier: MasterCLIApplier, text: str) -> ApplyReport:
    """Have the applier reload HAProxy with a config text (of no model: tests of the edge)."""
    return applier.apply(Plan(Action.RELOAD, Model()), Config(text))


def haproxy_config(tmp: Path, vip: str, port: int, servers: list[Backend], extra: str = "") -> str:
    """A small valid haproxy.cfg: one frontend on vip:port to the given backends."""
    lines = "\n".join(f"    server s{i} {b.address}" for i, b in enumerate(servers, 1))
    return (
        textwrap.dedent(f"""\
        global
            stats socket {tmp}/admin.sock mode 600 level admin
        defaults
            mode tcp
            timeout connect 2s
            timeout client 10s
            timeout server 10s
        frontend fe_web
            bind {vip}:{port}
            default_backend web
        backend web
        """)
        + lines
        + "\n"
        + extra
    )
