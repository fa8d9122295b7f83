"""Serving for real: the controller drives a supervised HAProxy through a series of changes that
each force a reload, while a client sends requests without pause. No request may fail, and after
each change the traffic reaches exactly the new set of backends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.controller import Controller
from kube2haproxy.metrics import Metrics
from kube2haproxy.render import Renderer
from kube2haproxy.settings import (
    KubeSettings,
    RenderPaths,
    RenderSettings,
    Settings,
    TimingSettings,
    TranslateSettings,
)
from kube2haproxy.sockets import LocalHost
from kube2haproxy.sources.kube import KubeSource, api_client
from testkit.backends import Backend, fleet, free_port, loopback_ip, responders, routes, serves
from testkit.builders import endpoint, endpoint_slice, service, slice_of
from testkit.fakeapi import FakeKubeAPI
from tests.live import Traffic, refusing_templates, supervised, wait_for
from tests.pipeline import ScriptedSource

SETTINGS = Settings(
    translate=TranslateSettings(allow_loopback_endpoints=True),
    timing=TimingSettings(debounce_ms=20, max_delay_ms=200, retry_interval_ms=500),
)


@contextmanager
def serving(
    tmp: Path, haproxy_bin: str, settings: Settings = SETTINGS
) -> Iterator[tuple[Controller, ScriptedSource, Supervisor]]:
    supervisor, applier = supervised(tmp, haproxy_bin)
    source = ScriptedSource()
    paths = RenderPaths(
        runtime_socket=str(tmp / "admin.sock"),
        maps_dir=settings.paths.maps_dir or str(tmp / "maps"),  # where the applier puts them
    )
    controller = Controller(
        settings=settings,
        sources=[source],
        applier=applier,
        renderer=Renderer(settings.render, paths),
        metrics=Metrics(),
        host=LocalHost(pids=applier.pids, transparent=settings.render.bind_transparent),
    )
    controller.start_sources()
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        yield controller, source, supervisor
    finally:
        controller.stop()
        thread.join(timeout=10)
        supervisor.stop(grace_s=3)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    with fleet("abcdef") as made:
        yield made


def test_reloads_drop_nothing_and_route_to_exactly_the_new_backends(
    tmp_path, haproxy_bin, backends
):
    a, b, c, d, e, f = backends
    vip = loopback_ip()
    port = free_port(vip)
    web = service("web", cluster_ips=[vip], ports=[("http", port)])
    with serving(tmp_path, haproxy_bin) as (controller, source, supervisor):
        source.put(web)
        source.put(slice_of("web", a, b))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        assert serves(vip, port, {"a", "b"}) == {"a", "b"}

        steps = [
            ("endpoints replaced", [slice_of("web", c, d)], {"c", "d"}),
            ("an endpoint added", [slice_of("web", c, d, e)], {"c", "d", "e"}),
            ("a second slice", [slice_of("web", f, name="web-b")], {"c", "d", "e", "f"}),
            (
                "not ready and terminating",
                [
                    endpoint_slice(
                        "web",
                        ports=[("http", b.port)],
                        endpoints=[
                            endpoint(c.ip, ready=False, serving=True, terminating=True),
                            endpoint(d.ip, ready=True),
                            endpoint(e.ip, ready=False),
                        ],
                    )
                ],
                {"d", "f"},
            ),
            (
                "annotation and balance",
                [
                    service(
                        "web",
                        cluster_ips=[vip],
                        ports=[("http", port)],
                        annotations={"kube2haproxy.io/balance": "leastconn"},
                    )
                ],
                {"d", "f"},
            ),
            (
                "all endpoints rolled",
                [slice_of("web", a), slice_of("web", b, name="web-b")],
                {"a", "b"},
            ),
        ]
        with Traffic(vip, port) as traffic:
            wait_for(lambda: traffic.ok > 20, what="traffic flowing")
            for i, (label, objects, expected) in enumerate(steps):

                def reloaded(before: int = controller.reloads) -> bool:
                    return controller.reloads > before

                # Each step also changes a setting of the service: endpoint changes alone go
                # through the runtime API (tests/test_churn.py); here every step reloads.
                annotations = {"kube2haproxy.io/timeout-server": f"{30 + i}s"}
                if label == "annotation and balance":
                    annotations["kube2haproxy.io/balance"] = "leastconn"
                source.put(
                    service(
                        "web", cluster_ips=[vip], ports=[("http", port)], annotations=annotations
                    )
                )
                for obj in objects:
                    source.put(obj)
                wait_for(reloaded, what=label)
                assert serves(vip, port, expected) == expected, label
            served = traffic.ok
            wait_for(lambda: traffic.ok > served + 20, what="traffic after the last change")

        assert traffic.failures == [], traffic.failures[:5]
        assert supervisor.master.processes().reloads == len(steps)
        assert controller.failures == 0
        assert controller.metrics.reloads.labels("success")._value.get() == len(steps) + 1


def test_a_config_haproxy_refuses_keeps_the_last_good_one_serving(tmp_path, haproxy_bin, backends):
    """A user template that renders an invalid config: nothing is installed, traffic goes on,
    the error is counted, and the next good change is applied."""
    a, b, *_ = backends
    templates = refusing_templates(tmp_path)
    settings = replace(SETTINGS, render=RenderSettings(templates=str(templates)))
    vip = loopback_ip()
    port = free_port(vip)
    with serving(tmp_path, haproxy_bin, settings) as (controller, source, _):
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
        source.put(slice_of("web", a))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        good = (tmp_path / "haproxy.cfg").read_text()
        with Traffic(vip, port) as traffic:
            source.put(
                service(
                    "web",
                    cluster_ips=[vip],
                    ports=[("http", port)],
                    annotations={"kube2haproxy.io/balance": "leastconn"},
                )
            )
            source.put(slice_of("web", b))
            # The metric is set last (after the failure count): wait for what is asserted.
            wait_for(
                lambda: controller.metrics.validation_failed._value.get() == 1,
                what="the refused config",
            )
            assert (tmp_path / "haproxy.cfg").read_text() == good
            assert responders(vip, port) == {"a"}
            assert controller.metrics.validation_failed._value.get() == 1
            source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
            wait_for(lambda: responders(vip, port) == {"b"}, what="the next good change")
        assert traffic.failures == []
        assert controller.metrics.validation_failed._value.get() == 0


def test_a_service_created_at_the_api_is_served_through_cut_watches(
    tmp_path, haproxy_bin, backends
):
    """The whole product: the official client watching a (local) API server, the controller,
    a supervised HAProxy, real traffic."""
    a, b, *_ = backends
    vip = loopback_ip()
    port = free_port(vip)
    supervisor, applier = supervised(tmp_path, haproxy_bin)
    with FakeKubeAPI() as api:
        api.put(service("other", cluster_ips=[loopback_ip()], ports=[("http", port)]))
        kube = KubeSettings(
            kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
            watch_timeout_ms=2_000,
            backoff_max_ms=200,
        )
        settings = replace(SETTINGS, kube=kube)
        source = KubeSource(kube, client=api_client(kube), read_grace_s=1.0)
        controller = Controller(
            settings=settings,
            sources=[source],
            applier=applier,
            renderer=Renderer(
                settings.render, RenderPaths(runtime_socket=str(tmp_path / "admin.sock"))
            ),
            metrics=Metrics(),
            host=LocalHost(pids=applier.pids, transparent=settings.render.bind_transparent),
        )
        controller.start_sources()
        thread = threading.Thread(target=controller.run, daemon=True)
        thread.start()
        try:
            wait_for(controller.ready.is_set, what="the first config")
            api.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
            api.put(slice_of("web", a))
            wait_for(lambda: routes(vip, port) == {"a"}, what="the new service")
            api.drop_watches()
            api.put(slice_of("web", b))
            wait_for(lambda: routes(vip, port) == {"b"}, what="a change after a cut watch")
            api.hang_watches()
            api.compact()
            api.delete("Service", "default", "web")
            api.unhang()
            api.drop_watches()
            wait_for(
                lambda: (
                    "frontend fe_default_web_http" not in (tmp_path / "haproxy.cfg").read_text()
                ),
                what="the deletion after a relist",
            )
        finally:
            controller.stop()
            thread.join(timeout=10)
            supervisor.stop(grace_s=3)


def test_an_address_this_host_cannot_listen_on_blocks_nothing(tmp_path, haproxy_bin, backends):
    """A tenant's Service asks for an external IP this host cannot bind. A reload HAProxy
    refuses pauses every listener for ~2 s (HAProxy 2.6): the address is found before the
    reload, left out with a warning, and every other change goes on."""
    a, b, c, *_ = backends
    vip, other = loopback_ip(), loopback_ip()
    port = free_port(vip)
    settings = replace(SETTINGS, render=RenderSettings(bind_transparent=False))
    with serving(tmp_path, haproxy_bin, settings) as (controller, source, _):
        source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
        source.put(slice_of("web", a))
        source.synced()
        wait_for(controller.ready.is_set, what="the first config")
        with Traffic(vip, port) as traffic:
            source.put(
                service(
                    "tenant",
                    "other",
                    cluster_ips=[other],
                    externalIPs=["192.0.2.1"],
                    ports=[("http", port)],
                )
            )
            wait_for(lambda: controller.reloads == 2, what="the tenant's service")
            cfg = (tmp_path / "haproxy.cfg").read_text()
            assert f"bind {other}:{port}" in cfg and "192.0.2.1" not in cfg
            source.put(slice_of("web", b))
            wait_for(lambda: responders(vip, port, requests=10) == {"b"}, what="a later change")
            source.put(
                service(
                    "web",
                    cluster_ips=[vip],
                    ports=[("http", port)],
                    annotations={"kube2haproxy.io/balance": "leastconn"},
                )
            )
            source.put(slice_of("web", c))
            wait_for(lambda: responders(vip, port, requests=10) == {"c"}, what="another one")
        assert traffic.failures == []
        assert controller.failures == 0
        assert controller.metrics.warnings._value.get() == 1
