"""The HTTP server and its lifecycle: a ``ThreadingHTTPServer`` on 127.0.0.1 and an ephemeral
port, one daemon thread per connection, every connection and thread tracked so that ``stop``
can close them all (watches abruptly) and join them with a deadline instead of leaking them into
the next test."""

from __future__ import annotations

import socket
import sys
import threading
import time
import traceback
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .handler import Handler
from .wire import shutdown

if TYPE_CHECKING:
    from .api import FakeKubeAPI


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # Runner.stop() joins the handler threads, with a deadline
    allow_reuse_address = True

    def __init__(self, api: FakeKubeAPI, runner: Runner) -> None:
        self.api = api
        self.runner = runner
        super().__init__(("127.0.0.1", 0), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"fakeapi-conn-{client_address[1]}",
            daemon=True,
        )
        runner = self.runner
        with runner.cond:
            runner.connections.add(request)
            runner.threads = [t for t in runner.threads if t.is_alive()] + [thread]
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self.runner.cond:
            self.runner.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client or a test (drop, stop) closed the connection
            return
        if exc is not None:
            self.api.errors.append(exc)
        traceback.print_exc()


class Runner:
    """Starts and stops the servers of one ``FakeKubeAPI``, one at a time.

    Connections and threads are tracked here rather than per ``Server`` so that a thread that
    outlived one ``stop`` (which then raised) is still joined by the next.
    """

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond
        self.connections: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self.stopping = False
        self._server: Server | None = None
        self._serve_thread: threading.Thread | None = None

    def start(self, api: FakeKubeAPI) -> None:
        if self._server is not None:
            raise RuntimeError("FakeKubeAPI already started")
        self.stopping = False
        self._server = Server(api, self)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fakeapi-accept",
            daemon=True,
        )
        self._serve_thread.start()

    def stop(self, timeout: float) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        server.shutdown()  # no new connections once this returns
        if self._serve_thread is not None:
            self._serve_thread.join(timeout)
        with self.cond:
            connections = list(self.connections)
            threads = list(self.threads)
        for sock in connections:
            shutdown(sock)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        server.server_close()
        alive = [t.name for t in threads if t.is_alive()]
        with self.cond:
            self.threads = [t for t in self.threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"FakeKubeAPI.stop: threads still running after {timeout}s: {alive}")

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeKubeAPI is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"
