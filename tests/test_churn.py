"""Endpoint churn without reloads, against the real HAProxy: scale up and down, roll every
endpoint to new addresses, terminating endpoints that drain, dozens of changes in a row, all
while a client sends requests without pause. No request fails, the master's reload counter does
not move, and traffic reaches exactly the expected endpoints after each step."""

from __future__ import annotations

import functools
import http.client
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kube2haproxy.appliers.master_cli import MasterCLIApplier
from kube2haproxy.appliers.runtime import RuntimeAPI
from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.settings import Settings, TimingSettings, TranslateSettings
from kube2haproxy.slots import slot_count
from testkit.backends import Backend, fleet, free_port, loopback_ip, responders, serves
from testkit.builders import JSON, service, slice_of
from tests.live import Traffic, capabilities_of, storm, wait_for
from tests.test_serve import serving

SETTINGS = Settings(
    translate=TranslateSettings(allow_loopback_endpoints=True),
    timing=TimingSettings(
        debounce_ms=30,
        max_delay_ms=200,
        runtime_debounce_ms=5,
        retry_interval_ms=300,
        drift_check_interval_ms=0,
    ),
)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    with fleet((f"b{i}" for i in range(12)), keepalive=True) as made:
        yield made


def reloads(supervisor: Supervisor) -> int:
    return supervisor.master.processes().reloads


def test_endpoint_churn_never_reloads(tmp_path, haproxy_bin, backends):
    vip = loopback_ip()
    port = free_port(vip)
    b = {f"b{i}": backend for i, backend in enumerate(backends)}
    with serving(tmp_path, haproxy_bin, SETTINGS) as (controller, source, supervisor):
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
        source.put(slice_of("web", b["b0"], b["b1"]))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        assert reloads(supervisor) == 0

        def step(label: str, slice_obj: JSON, expected: set[str]) -> None:
            updates = controller.runtime_updates
            source.put(slice_obj)
            wait_for(lambda: controller.runtime_updates > updates, what=label)
            assert serves(vip, port, expected) == expected, label

        with Traffic(vip, port) as traffic:
            wait_for(lambda: traffic.ok > 20, what="traffic")
            for n in range(3, 9):  # scale up one by one, into the free slots and past them
                names = [f"b{i}" for i in range(n)]
                step(f"scale up to {n}", slice_of("web", *(b[x] for x in names)), set(names))
            step("scale down", slice_of("web", b["b2"], b["b3"]), {"b2", "b3"})
            step(
                "roll every endpoint",
                slice_of("web", b["b8"], b["b9"], b["b10"]),
                {"b8", "b9", "b10"},
            )
            step(
                "one terminating",
                slice_of("web", b["b9"], b["b10"], terminating=(b["b8"],)),
                {"b9", "b10"},
            )
            step("terminated", slice_of("web", b["b9"], b["b10"]), {"b9", "b10"})
            last = storm(source.put, functools.partial(slice_of, "web"), backends, 30)
            # serves(), not responders(): Traffic shares the round robin with us.
            wait_for(lambda: serves(vip, port, last) == last, what="the last state")
            served = traffic.ok
            wait_for(lambda: traffic.ok > served + 20, what="traffic after the last change")
        assert traffic.failures == [], traffic.failures[:5]
        assert reloads(supervisor) == 0
        assert controller.reloads == 1  # the start
        # The slot count is the cluster's (4 free beyond the endpoints, in blocks of 8),
        # whatever the history: a scale-up past the slots added lines at runtime.
        wanted = slot_count(len(last), free=4, block=8)
        assert controller.applied_model is not None
        assert len(controller.applied_model.backends[0].servers) == wanted
        assert controller.metrics.runtime_updates.labels("fallback")._value.get() == 0
        # The file on disk is what a reload would load: it renders the running state.
        controller._applier.close()
        text = (tmp_path / "haproxy.cfg").read_text()
        assert sum(f":{backends[0].port}" in line for line in text.splitlines()) == len(last)


def test_a_draining_endpoint_keeps_its_open_connection(tmp_path, haproxy_bin, backends):
    vip = loopback_ip()
    port = free_port(vip)
    first, second = backends[0], backends[1]
    with serving(tmp_path, haproxy_bin, SETTINGS) as (controller, source, supervisor):
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
        source.put(slice_of("web", first))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        held = http.client.HTTPConnection(vip, port, timeout=5)
        held.request("GET", "/")
        assert held.getresponse().read() == b"b0"  # a keep-alive connection to b0

        updates = controller.runtime_updates
        source.put(slice_of("web", second, terminating=(first,)))
        wait_for(lambda: controller.runtime_updates > updates, what="b0 draining")
        assert responders(vip, port) == {"b1"}  # no new connection goes to b0
        for _ in range(3):  # the open one still does
            held.request("GET", "/")
            assert held.getresponse().read() == b"b0"
        updates = controller.runtime_updates
        source.put(slice_of("web", second))  # b0 is gone for good
        wait_for(lambda: controller.runtime_updates > updates, what="b0 removed")
        held.request("GET", "/")
        assert held.getresponse().read() == b"b0"  # maintenance cuts nothing either
        held.close()
        assert reloads(supervisor) == 0


def test_growing_past_the_slots_adds_servers_without_a_reload(tmp_path, haproxy_bin, backends):
    vip = loopback_ip()
    port = free_port(vip)
    with serving(tmp_path, haproxy_bin, SETTINGS) as (controller, source, supervisor):
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
        source.put(slice_of("web", *backends[:2]))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        assert isinstance(controller._applier, MasterCLIApplier)
        runtime = controller._applier.runtime
        assert controller.applied_model is not None
        assert len(controller.applied_model.backends[0].servers) == 8
        with Traffic(vip, port) as traffic:
            for n in range(3, 13):
                source.put(slice_of("web", *backends[:n]))

                def served(count: int = n) -> bool:
                    wanted = {f"b{i}" for i in range(count)}
                    return serves(vip, port, wanted) == wanted

                wait_for(served, what=f"{n} endpoints")
        assert traffic.failures == []
        assert reloads(supervisor) == 0
        assert len(controller.applied_model.backends[0].servers) == 16
        assert sum(1 for backend, _ in runtime.servers() if backend == "default_web_http") == 16
        assert controller.metrics.reload_reasons.labels("slots")._value.get() == 0

        # Back to two, with no connection open: the lines beyond 8 go where deleting is safe
        # (3.0 and later), and stay parked on 2.6 until a reload.
        updates = controller.runtime_updates
        source.put(slice_of("web", *backends[:2]))
        wait_for(lambda: controller.runtime_updates > updates, what="the scale-down")
        lines = [
            s for (backend, _), s in runtime.servers().items() if backend == "default_web_http"
        ]
        deletes = capabilities_of(haproxy_bin).safe_server_delete
        assert len(lines) == (8 if deletes else 16)
        assert sum(1 for s in lines if not s.parked) == 2
        assert reloads(supervisor) == 0


class LyingSocket:
    """A runtime socket that refuses every command: a bad reply must cost a reload, never a
    wrong route."""

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(b"Permission denied\n\n")

    def close(self) -> None:
        self.server.close()


def test_a_bad_runtime_reply_falls_back_to_a_reload(tmp_path, haproxy_bin, backends):
    vip = loopback_ip()
    port = free_port(vip)
    with serving(tmp_path, haproxy_bin, SETTINGS) as (controller, source, supervisor):
        liar = LyingSocket(tmp_path / "liar.sock")
        assert isinstance(controller._applier, MasterCLIApplier)
        controller._applier.runtime = RuntimeAPI(str(tmp_path / "liar.sock"))
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
        source.put(slice_of("web", backends[0]))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        with Traffic(vip, port) as traffic:
            source.put(slice_of("web", backends[1]))
            wait_for(lambda: responders(vip, port) == {"b1"}, what="the change, by a reload")
        liar.close()
        assert traffic.failures == []
        assert reloads(supervisor) == 1
        assert controller.metrics.runtime_updates.labels("fallback")._value.get() == 1
        assert controller.metrics.reload_reasons.labels("runtime_fallback")._value.get() == 1


def test_drift_is_found_and_corrected(tmp_path, haproxy_bin, backends):
    vip = loopback_ip()
    port = free_port(vip)
    settings = replace(SETTINGS, timing=replace(SETTINGS.timing, drift_check_interval_ms=200))
    with serving(tmp_path, haproxy_bin, settings) as (controller, source, supervisor):
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
        source.put(slice_of("web", backends[0], backends[1]))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        runtime = RuntimeAPI(str(tmp_path / "admin.sock"))
        assert controller.applied_model is not None
        slot = next(
            s.name
            for s in controller.applied_model.backends[0].servers
            if s.address == backends[1].address
        )
        # Someone puts b1 in maintenance by hand (not checked through traffic: the drift check,
        # every 200 ms, may already have undone it).
        assert runtime.execute([f"set server default_web_http/{slot} state maint"]) == [""]
        wait_for(
            lambda: controller.metrics.drift_corrections.labels("runtime")._value.get() >= 1,
            what="the correction",
        )
        assert serves(vip, port, {"b0", "b1"}) == {"b0", "b1"}
        assert reloads(supervisor) == 0


def test_an_endpoint_loaded_draining_that_serves_again_takes_new_connections(
    tmp_path: Path, haproxy_bin: str, backends: list[Backend]
) -> None:
    """A draining endpoint is rendered `weight 0` (a config has no drain state); when it is
    ready again at runtime, `state ready` alone would leave it at weight 0: no new connection
    would ever reach it, and every drift check would see it draining."""
    vip = loopback_ip()
    port = free_port(vip)
    b0, b1 = backends[0], backends[1]
    with serving(tmp_path, haproxy_bin, SETTINGS) as (controller, source, supervisor):
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
        source.put(slice_of("web", b0, terminating=(b1,)))  # b1 drains in the first config
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        assert responders(vip, port, requests=10) == {"b0"}
        updates = controller.runtime_updates
        source.put(slice_of("web", b0, b1))  # b1 is ready again (a readiness flap)
        wait_for(lambda: controller.runtime_updates > updates, what="b1 ready")
        assert serves(vip, port, {"b0", "b1"}) == {"b0", "b1"}
        applier = controller._applier
        assert isinstance(applier, MasterCLIApplier)
        lines = applier.runtime.servers()
        assert all(
            not s.parked and s.state.value == "ready" for s in lines.values() if s.port == b1.port
        )
        assert reloads(supervisor) == 0


def test_a_static_rr_endpoint_loaded_draining_is_readied_by_one_planned_reload(
    tmp_path: Path, haproxy_bin: str, backends: list[Backend]
) -> None:
    """On a static algorithm HAProxy refuses the `weight 1` a line loaded at weight 0 needs
    (2.6 to 3.4): readying it is planned as a reload, never tried and fallen back from."""
    vip = loopback_ip()
    port = free_port(vip)
    b0, b1 = backends[0], backends[1]
    static = {"kube2haproxy.io/balance": "static-rr"}
    with serving(tmp_path, haproxy_bin, SETTINGS) as (controller, source, supervisor):
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)], annotations=static))
        source.put(slice_of("web", b0, terminating=(b1,)))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        assert responders(vip, port, requests=10) == {"b0"}
        source.put(slice_of("web", b0, b1))
        slots = controller.metrics.reload_reasons.labels("slots")
        wait_for(lambda: slots._value.get() == 1, what="one reload, for the slots")
        assert serves(vip, port, {"b0", "b1"}) == {"b0", "b1"}
        assert reloads(supervisor) == 1
        assert controller.metrics.runtime_updates.labels("fallback")._value.get() == 0
