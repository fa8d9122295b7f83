"""The probe server and what it answers from: a health monitor that remembers when HAProxy last
answered, so a probe never waits on HAProxy; a client that goes away is no error."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from kube2haproxy.errors import EnvironmentProblem
from kube2haproxy.health import HealthMonitor
from kube2haproxy.probes import ProbeServer
from tests.live import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_monitor_remembers_the_last_answer_and_forgets_a_stale_one():
    clock, answers = Clock(), [True]
    monitor = HealthMonitor(lambda: answers[-1], interval_s=1.0, clock=clock)
    assert not monitor.healthy() and monitor.silence() is None  # nothing asked yet
    monitor.poll()
    assert monitor.healthy() and monitor.silence() == 0
    clock.now += 5
    assert monitor.healthy()  # the last look is recent enough
    clock.now += 10
    assert not monitor.healthy()  # no look for 15 s: a stuck check is no answer
    monitor.poll()
    assert monitor.healthy()
    answers.append(False)
    clock.now += 1
    monitor.poll()
    assert not monitor.healthy() and monitor.silence() == 1


def test_a_check_that_raises_counts_as_no_answer(caplog):
    def broken() -> bool:
        raise RuntimeError("a bug")

    monitor = HealthMonitor(broken, clock=Clock())
    monitor.poll()
    assert not monitor.healthy()
    assert "health check failed" in caplog.text


def test_a_probe_client_that_goes_away_is_not_an_error(caplog):
    """The check takes a while (as a probe on a busy controller may); the client gives up and
    resets the connection; the answer written afterwards finds nobody: logged at debug."""
    release = threading.Event()

    def slow() -> tuple[bool, str]:
        release.wait(5)
        return True, "ok"

    server = ProbeServer("127.0.0.1:0", live=slow, ready=slow, registry=CollectorRegistry())
    server.start()
    caplog.set_level(logging.DEBUG, logger="kube2haproxy.probes")
    try:
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", server.port))
            client.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # a reset: the probe gave up
        release.set()
        wait_for(lambda: caplog.text.count("went away") >= 1, what="the vanished clients")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5) as r:
            assert r.read() == b"ok\n"  # the server lives on
    finally:
        release.set()
        server.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Traceback" not in caplog.text


def test_a_port_in_use_is_an_environment_problem():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EnvironmentProblem, match=f"--listen 127.0.0.1:{port}: cannot listen"):
            ProbeServer(
                f"127.0.0.1:{port}",
                live=lambda: (True, ""),
                ready=lambda: (True, ""),
                registry=CollectorRegistry(),
            )


def test_a_probe_answers_at_once_from_a_monitor_whose_check_hangs():
    """The monitor's thread may be stuck asking a stalled HAProxy; the probe is not."""
    hang = threading.Event()
    calls = []

    def check() -> bool:
        calls.append(1)
        if len(calls) > 1:
            hang.wait(10)
        return True

    monitor = HealthMonitor(check, interval_s=0.05)
    monitor.start()
    server = ProbeServer(
        "127.0.0.1:0",
        live=lambda: (monitor.healthy(), "ok" if monitor.healthy() else "silent"),
        ready=lambda: (True, "ok"),
        registry=CollectorRegistry(),
    )
    server.start()
    try:
        wait_for(lambda: len(calls) > 1, what="the check hanging")
        # Answered (the timeout would fail the test), not stuck behind the check.
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        hang.set()
        monitor.stop()
        server.stop()
