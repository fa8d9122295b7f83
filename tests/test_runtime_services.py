"""New and deleted services without a reload (per-port layout): a real HAProxy, real backends,
a client sending requests without pause. A new service on a port already listened on takes a
spare backend and a map entry; a deleted one loses its entry; only running out of spares
reloads, once. The file on disk is always what a reload of the cluster would load."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.controller import Controller
from kube2haproxy.errors import HAProxyUnavailable
from kube2haproxy.render import Renderer
from kube2haproxy.settings import RenderPaths, RenderSettings, Settings
from testkit.backends import Backend, fleet, free_port, loopback_ip, responders, routes
from testkit.builders import JSON, service, slice_of
from tests.live import Traffic, wait_for
from tests.pipeline import ScriptedSource, run
from tests.test_churn import SETTINGS as CHURN
from tests.test_serve import serving

SPARES = 3
SETTINGS: Settings = replace(
    CHURN, render=RenderSettings(frontend_layout="per-port", spare_backends=SPARES)
)


@pytest.fixture
def pods() -> Iterator[dict[str, Backend]]:
    with fleet(("web", "a", "b", "c", "d", "e")) as made:
        yield {backend.name: backend for backend in made}


def objects_for(name: str, vip: str, port: int, pod: Backend) -> list[JSON]:
    return [service(name, cluster_ips=[vip], ports=[("http", port)]), slice_of(name, pod)]


def reloads(supervisor: Supervisor) -> int | None:
    """The master's reload count; None while it re-executes itself (2.6, during a reload)."""
    try:
        return supervisor.master.processes().reloads
    except HAProxyUnavailable:
        return None


@contextmanager
def web_served(
    tmp_path: Path, haproxy_bin: str, pods: dict[str, Backend]
) -> Iterator[tuple[Controller, ScriptedSource, Supervisor, str, int]]:
    """default/web served on a port of its own, the first config applied."""
    web, port = loopback_ip(), free_port("127.0.0.1")
    with serving(tmp_path, haproxy_bin, SETTINGS) as (controller, source, supervisor):
        for obj in objects_for("web", web, port, pods["web"]):
            source.put(obj)
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        yield controller, source, supervisor, web, port


def test_new_and_deleted_services_change_routes_without_a_reload(tmp_path, haproxy_bin, pods):
    with web_served(tmp_path, haproxy_bin, pods) as (controller, source, supervisor, web, port):
        started = reloads(supervisor)
        assert started is not None  # the first config is loaded: no reload under way
        vips: dict[str, str] = {}
        with Traffic(web, port) as traffic:
            wait_for(lambda: traffic.ok > 10, what="traffic")
            for name in ("a", "b", "c"):  # as many as there are spares
                vips[name] = loopback_ip()
                for obj in objects_for(name, vips[name], port, pods[name]):
                    source.put(obj)

                def routed(name: str = name) -> bool:
                    return routes(vips[name], port, requests=3) == {name}

                wait_for(routed, what=f"service {name} routed")
            assert reloads(supervisor) == started, "spares and map entries: no reload"

            # A deleted service stops routing at once: its address reaches nothing.
            source.delete(service("b", cluster_ips=[vips["b"]], ports=[("http", port)]))
            wait_for(lambda: routes(vips["b"], port) == set(), what="service b no longer routed")
            assert responders(vips["a"], port, requests=3) == {"a"}
            assert reloads(supervisor) == started

            # Its spare is free again: one more service still needs no reload.
            vips["d"] = loopback_ip()
            for obj in objects_for("d", vips["d"], port, pods["d"]):
                source.put(obj)
            wait_for(lambda: routes(vips["d"], port, requests=3) == {"d"}, what="service d")
            assert reloads(supervisor) == started

            # No spare left: exactly one reload, which gives every service its own backend
            # and refills the pool.
            vips["e"] = loopback_ip()
            for obj in objects_for("e", vips["e"], port, pods["e"]):
                source.put(obj)
            wait_for(lambda: routes(vips["e"], port, requests=3) == {"e"}, what="service e")
            wait_for(lambda: reloads(supervisor) == started + 1, what="exactly one reload")
            spares = controller.metrics.reload_reasons.labels("spares")
            wait_for(lambda: spares._value.get() == 1, what="the reload counted, for its reason")
            served = traffic.ok
            wait_for(lambda: traffic.ok > served + 10, what="traffic after the reload")
        assert traffic.failures == [], traffic.failures[:5]
        assert reloads(supervisor) == started + 1, "one reload, for the spares only"
        for name in ("a", "d", "e"):
            assert responders(vips[name], port, requests=3) == {name}
        assert routes(vips["b"], port) == set()


def test_a_restart_from_the_file_serves_what_ran(tmp_path, haproxy_bin, pods):
    """After runtime changes the file (and its maps) are what a reload of the cluster loads:
    byte-identical to a fresh render of it, and a new HAProxy started from them serves every
    service, by its own backend."""
    web, port = loopback_ip(), free_port("127.0.0.1")
    cluster = objects_for("web", web, port, pods["web"])
    vips = {"a": loopback_ip(), "b": loopback_ip()}
    with serving(tmp_path, haproxy_bin, SETTINGS) as (controller, source, supervisor):
        for obj in cluster:
            source.put(obj)
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        started = reloads(supervisor)
        for name, vip in vips.items():
            added = objects_for(name, vip, port, pods[name])
            cluster += added
            for obj in added:
                source.put(obj)

            def routed(vip: str = vip, name: str = name) -> bool:
                return routes(vip, port, requests=3) == {name}

            wait_for(routed)
        assert reloads(supervisor) == started
        # HAProxy routes a service before the applier hands its file to the writer: wait for
        # the controller to record the apply, then for the background write.
        wait_for(
            lambda: (
                controller.applied_model is not None
                and len(controller.applied_model.services) == 1 + len(vips)
            ),
            what="the last runtime change recorded",
        )
        controller._applier.close()  # the file is written in the background
        on_disk = (tmp_path / "haproxy.cfg").read_text()
        paths = RenderPaths(
            runtime_socket=str(tmp_path / "admin.sock"), maps_dir=str(tmp_path / "maps")
        )
        fresh = Renderer(SETTINGS.render, paths).render(
            run(*cluster, allow_loopback_endpoints=True).model
        )
        assert on_disk == fresh
        for name in vips:
            assert f"backend default_{name}_http\n" in on_disk
        (map_name,) = re.findall(rf"port-{port}-[0-9a-f]+\.map", on_disk)
        entries = (tmp_path / "maps" / map_name).read_text().splitlines()
        assert sorted(entries) == sorted(
            [f"{web} default_web_http", *(f"{vip} default_{n}_http" for n, vip in vips.items())]
        )
    # HAProxy and the controller are gone; a new HAProxy loads the file as it is.
    restarted = Supervisor(
        binary=haproxy_bin,
        config=str(tmp_path / "haproxy.cfg"),
        master_socket=str(tmp_path / "m2.sock"),
    )
    restarted.start(ready_timeout_s=20)
    try:
        assert responders(web, port, requests=3) == {"web"}
        for name, vip in vips.items():
            assert responders(vip, port, requests=3) == {name}
    finally:
        restarted.stop(grace_s=3)


def test_a_service_a_spare_cannot_serve_waits_for_a_reload(tmp_path, haproxy_bin, pods):
    with web_served(tmp_path, haproxy_bin, pods) as (controller, source, supervisor, _, port):
        started = reloads(supervisor)
        assert started is not None  # the first config is loaded: no reload under way
        vip = loopback_ip()
        source.put(
            service("sticky", cluster_ips=[vip], ports=[("http", port)], sessionAffinity="ClientIP")
        )
        source.put(slice_of("sticky", pods["a"]))
        wait_for(lambda: routes(vip, port, requests=3) == {"a"}, what="the sticky service")
        wait_for(lambda: reloads(supervisor) == started + 1, what="exactly one reload")
        reason = controller.metrics.reload_reasons.labels("service_settings")
        wait_for(lambda: reason._value.get() == 1, what="the reload counted, for its reason")
