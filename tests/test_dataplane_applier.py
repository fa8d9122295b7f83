"""The Data Plane API applier against the emulator of dataplaneapi v3.4.2 (testkit/dataplane) with a
real HAProxy behind it, once per version under test: the traffic tests of the master-CLI applier
(reloads drop nothing, endpoint churn never reloads, a refused config keeps the last good one
serving, drift is corrected), and what only an API has: 409 races, wrong credentials, an API
that does not answer, a password that never shows, map files delivered through its storage, TLS,
reloads the API queues."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from kube2haproxy.appliers import Config
from kube2haproxy.appliers.dataplane import DataplaneApplier
from kube2haproxy.appliers.dataplane_client import DataplaneClient
from kube2haproxy.controller import Controller
from kube2haproxy.deployed import (
    RouteChange,
    RuntimeOps,
    ServerAdd,
    ServerDelete,
    SlotChange,
    loaded,
)
from kube2haproxy.errors import (
    AccessRefused,
    CheckError,
    ConfigRefused,
    HAProxyUnavailable,
    RuntimeUpdateError,
)
from kube2haproxy.metrics import Metrics
from kube2haproxy.model import Model
from kube2haproxy.plan import Action, Changes, Plan
from kube2haproxy.render import Renderer
from kube2haproxy.settings import (
    RenderPaths,
    RenderSettings,
    Settings,
)
from testkit.backends import (
    Backend,
    fleet,
    free_port,
    get,
    loopback_ip,
    responders,
    routes,
    serves,
)
from testkit.builders import JSON, endpoint_slice, service, slice_of
from testkit.dataplane import DataplaneEmulator
from tests.live import Traffic, haproxy_config, refusing_templates, storm, wait_for
from tests.pipeline import ScriptedSource, run
from tests.test_churn import SETTINGS as CHURN

pytestmark = pytest.mark.haproxy

PASSWORD = "pw-5f1c2e9a"  # a test's: it must never show anywhere
USER = "kube2haproxy"
RAW = "/v3/services/haproxy/configuration/raw"
SETTINGS = replace(CHURN, timing=replace(CHURN.timing, debounce_ms=20))
# A reload of no model: the tests of the edge give the config text themselves.
RELOAD = Plan(Action.RELOAD, loaded(Model()))


def client_for(
    emu: DataplaneEmulator, *, password: str = PASSWORD, **kw: object
) -> DataplaneClient:
    options: dict[str, Any] = {"verify": True, "timeout_s": 5.0} | kw
    return DataplaneClient(url=emu.url, username=USER, password=password, **options)


def applier_for(
    emu: DataplaneEmulator, tmp: Path, haproxy_bin: str, **kw: object
) -> DataplaneApplier:
    local = tmp / "local"
    local.mkdir(exist_ok=True)
    options: dict[str, Any] = {
        "client": client_for(emu),
        "config": local / "haproxy.cfg",
        "maps_dir": str(emu.maps_dir),
        "binary": haproxy_bin,
        "check_timeout_s": 30,
        "reload_timeout_s": 30,
    }
    return DataplaneApplier(**(options | kw))


@pytest.fixture
def emulator(haproxy_bin: str, tmp_path: Path) -> Iterator[DataplaneEmulator]:
    with DataplaneEmulator(haproxy_bin, tmp_path / "api", user=USER, password=PASSWORD) as emu:
        yield emu
    assert not emu.errors


@dataclass
class Served:
    controller: Controller
    source: ScriptedSource
    emu: DataplaneEmulator
    applier: DataplaneApplier

    def reloads(self) -> int:
        """Reloads of the HAProxy behind the API (its master's counter)."""
        return self.emu.haproxy.processes().reloads

    def pushes(self, mode: str = "force_reload") -> int:
        """Config pushes with `mode` (force_reload or skip_reload) the API accepted."""
        return sum(
            1
            for r in self.emu.requests
            if r.method == "POST" and r.path == RAW and r.status == 201 and mode in r.query
        )


@contextmanager
def serving(
    tmp: Path, haproxy_bin: str, settings: Settings = SETTINGS, **applier: object
) -> Iterator[Served]:
    """A controller driving the emulator's HAProxy through the Data Plane API applier."""
    with DataplaneEmulator(haproxy_bin, tmp / "api", user=USER, password=PASSWORD) as emu:
        dataplane = applier_for(emu, tmp, haproxy_bin, **applier)
        source = ScriptedSource()
        paths = RenderPaths(runtime_socket=str(emu.stats_socket), maps_dir=str(emu.maps_dir))
        controller = Controller(
            settings=settings,
            sources=[source],
            applier=dataplane,
            renderer=Renderer(settings.render, paths),
            metrics=Metrics(),
        )
        controller.start_sources()
        thread = threading.Thread(target=controller.run, daemon=True)
        thread.start()
        try:
            yield Served(controller, source, emu, dataplane)
        finally:
            controller.stop()
            thread.join(timeout=10)
            dataplane.close()
        assert not emu.errors


@pytest.fixture(name="fleet")
def twelve_backends() -> Iterator[list[Backend]]:
    with fleet((f"b{i}" for i in range(12)), keepalive=True) as made:
        yield made


def web_slice(
    *backends: Backend, terminating: tuple[Backend, ...] = (), name: str = "web-a"
) -> JSON:
    return slice_of("web", *backends, name=name, terminating=terminating)


def started(served: Served, vip: str, port: int, *backends: Backend) -> None:
    served.source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
    served.source.put(web_slice(*backends))
    served.source.synced()
    wait_for(served.controller.ready.is_set, what="the first config")


def reloaded(served: Served, before: int) -> bool:
    return served.controller.reloads > before


def without_version(text: str) -> str:
    first, _, rest = text.partition("\n")
    assert first.startswith("# _version="), first
    return rest


# --- reloads ----------------------------------------------------------------------------------


def test_reloads_drop_nothing_and_route_to_exactly_the_new_backends(tmp_path, haproxy_bin, fleet):
    b = fleet
    vip = loopback_ip()
    port = free_port(vip)
    steps = [
        ("endpoints replaced", [web_slice(b[2], b[3])], {"b2", "b3"}),
        ("an endpoint added", [web_slice(b[2], b[3], b[4])], {"b2", "b3", "b4"}),
        ("a second slice", [web_slice(b[5], name="web-b")], {"b2", "b3", "b4", "b5"}),
        (
            "terminating",
            [web_slice(b[3], terminating=(b[2],)), web_slice(b[5], name="web-b")],
            {"b3", "b5"},
        ),
        ("all rolled", [web_slice(b[0]), web_slice(b[1], name="web-b")], {"b0", "b1"}),
    ]
    with serving(tmp_path, haproxy_bin) as served:
        started(served, vip, port, b[0], b[1])
        assert serves(vip, port, {"b0", "b1"}) == {"b0", "b1"}
        assert served.pushes() == 1
        with Traffic(vip, port) as traffic:
            wait_for(lambda: traffic.ok > 20, what="traffic flowing")
            for i, (label, objects, expected) in enumerate(steps):
                reloads = served.controller.reloads
                # A setting of the service changes too: every step is a push and a reload.
                annotations = {"kube2haproxy.io/timeout-server": f"{30 + i}s"}
                served.source.put(
                    service(
                        "web", cluster_ips=[vip], ports=[("http", port)], annotations=annotations
                    )
                )
                for obj in objects:
                    served.source.put(obj)
                wait_for(partial(reloaded, served, reloads), what=label)
                assert serves(vip, port, expected) == expected, label
            done = traffic.ok
            wait_for(lambda: traffic.ok > done + 20, what="traffic after the last change")
        assert traffic.failures == [], traffic.failures[:5]
        assert served.controller.failures == 0
        assert served.reloads() == len(steps) + 1  # the emulator started its own config
        assert served.pushes() == len(steps) + 1
        # Our copy of what the API was given, and the API's file: the same config.
        local = (tmp_path / "local" / "haproxy.cfg").read_text()
        assert without_version(served.emu.config_text()) == local
        assert f"timeout server {30 + len(steps) - 1}s" in local


# --- endpoint churn ---------------------------------------------------------------------------


def test_endpoint_churn_never_reloads(tmp_path, haproxy_bin, fleet):
    vip = loopback_ip()
    port = free_port(vip)
    b = {backend.name: backend for backend in fleet}
    with serving(tmp_path, haproxy_bin) as served:
        # Five endpoints: 16 lines (at least 4 free, in blocks of 8). The API adds no server:
        # a scale-up fills lines HAProxy runs already, and a scale-down below a block parks the
        # lines beyond the smaller count and keeps them.
        started(served, vip, port, *(b[f"b{i}"] for i in range(5)))
        reloads = served.reloads()
        controller = served.controller

        def step(label: str, slice_obj: JSON, expected: set[str]) -> None:
            updates = controller.runtime_updates
            served.source.put(slice_obj)
            wait_for(lambda: controller.runtime_updates > updates, what=label)
            assert serves(vip, port, expected) == expected, label

        with Traffic(vip, port) as traffic:
            wait_for(lambda: traffic.ok > 20, what="traffic")
            step("below a block", web_slice(b["b0"], b["b1"]), {"b0", "b1"})
            for n in range(3, 9):  # scale up one by one, into the free slots
                names = [f"b{i}" for i in range(n)]
                step(f"scale up to {n}", web_slice(*(b[x] for x in names)), set(names))
            step("scale down", web_slice(b["b2"], b["b3"]), {"b2", "b3"})
            # b8 fills a slot the config parked (`disabled`): readied, drained, emptied, the
            # sequence dataplaneapi misreads (admin 12 reads "maint").
            step("roll every endpoint", web_slice(b["b8"], b["b9"], b["b10"]), {"b8", "b9", "b10"})
            step(
                "one terminating",
                web_slice(b["b9"], b["b10"], terminating=(b["b8"],)),
                {"b9", "b10"},
            )
            step("terminated", web_slice(b["b9"], b["b10"]), {"b9", "b10"})
            step("back", web_slice(b["b8"], b["b9"], b["b10"]), {"b8", "b9", "b10"})
            last = storm(served.source.put, web_slice, fleet, 20)
            wait_for(lambda: serves(vip, port, last) == last, what="the last state")
            done = traffic.ok
            wait_for(lambda: traffic.ok > done + 20, what="traffic after the last change")
        assert traffic.failures == [], traffic.failures[:5]
        assert served.reloads() == reloads
        assert controller.reloads == 1
        assert controller.metrics.runtime_updates.labels("fallback")._value.get() == 0
        assert served.pushes() == 1  # the only push that reloaded: the first
        puts = [r for r in served.emu.requests if r.method == "PUT"]
        assert puts and all(r.status == 200 for r in puts)
        # The API's file follows what runs (written without a reload, in the background).
        served.applier.pusher.sync.flush()
        assert served.pushes("skip_reload") >= 1
        deployed = controller.deployed
        assert deployed is not None
        rendered = controller._renderer.render(deployed.model)
        assert without_version(served.emu.config_text()) == rendered
        # What runs: the file's lines, and the parked ones kept beyond a smaller count.
        running = served.applier.observe()
        assert running is not None
        assert running.servers == {
            (name, s.name): s
            for name, backend in deployed.backends.items()
            for s in backend.servers
        }


def test_a_draining_endpoint_keeps_its_open_connection(tmp_path, haproxy_bin, fleet):
    first, second = fleet[0], fleet[1]
    vip = loopback_ip()
    port = free_port(vip)
    with serving(tmp_path, haproxy_bin) as served:
        started(served, vip, port, second)
        controller = served.controller
        updates = controller.runtime_updates
        served.source.put(web_slice(first, second))  # first fills a parked slot at runtime
        wait_for(lambda: controller.runtime_updates > updates, what="first added")
        wait_for(lambda: serves(vip, port, {"b0", "b1"}) == {"b0", "b1"}, what="both serve")
        held = None
        for _ in range(20):  # a keep-alive connection that landed on b0
            candidate = http.client.HTTPConnection(vip, port, timeout=5)
            candidate.request("GET", "/")
            if candidate.getresponse().read() == b"b0":
                held = candidate
                break
            candidate.close()
        assert held is not None

        updates = controller.runtime_updates
        served.source.put(web_slice(second, terminating=(first,)))
        wait_for(lambda: controller.runtime_updates > updates, what="b0 draining")
        assert responders(vip, port) == {"b1"}  # no new connection goes to b0
        for _ in range(3):  # the open one still does
            held.request("GET", "/")
            assert held.getresponse().read() == b"b0"
        updates = controller.runtime_updates
        served.source.put(web_slice(second))  # gone for good: maintenance, then parked
        wait_for(lambda: controller.runtime_updates > updates, what="b0 removed")
        held.request("GET", "/")
        assert held.getresponse().read() == b"b0"  # maintenance cuts nothing either
        held.close()
        assert controller.reloads == 1
        assert controller.metrics.runtime_updates.labels("fallback")._value.get() == 0


def test_drift_is_found_and_corrected_through_the_api(tmp_path, haproxy_bin, fleet):
    vip = loopback_ip()
    port = free_port(vip)
    settings = replace(SETTINGS, timing=replace(SETTINGS.timing, drift_check_interval_ms=200))
    with serving(tmp_path, haproxy_bin, settings) as served:
        started(served, vip, port, fleet[0], fleet[1])
        reloads = served.reloads()
        model = served.controller.applied_model
        assert model is not None
        backend = model.backends[0]
        slot = next(s.name for s in backend.servers if s.address == fleet[1].address)
        # Someone drains b1 by hand (HAProxy's drain: the state the API misreads as "maint").
        assert served.emu.haproxy.command(f"set server {backend.name}/{slot} state drain") == ""
        metrics = served.controller.metrics
        wait_for(
            lambda: metrics.drift_corrections.labels("runtime")._value.get() >= 1,
            what="the correction",
        )
        assert serves(vip, port, {"b0", "b1"}) == {"b0", "b1"}
        assert served.reloads() == reloads
        assert metrics.drift_corrections.labels("reload")._value.get() == 0


def test_observe_reads_what_runs_through_the_apis_misreading(
    tmp_path, haproxy_bin, emulator, fleet
):
    """A slot the config parked (`disabled`), filled at runtime, then drained by hand: the API
    says "maint" (admin 12 read as hex); observe says what runs."""
    from kube2haproxy import plan as planner
    from kube2haproxy.layouts import layout
    from kube2haproxy.model import ServerState

    vip = loopback_ip()
    port = free_port(vip)
    paths = RenderPaths(runtime_socket=str(emulator.stats_socket), maps_dir=str(emulator.maps_dir))
    renderer = Renderer(RenderSettings(), paths)
    applier = applier_for(emulator, tmp_path, haproxy_bin)
    scope = planner.Scope(layout("per-service"), abilities=applier.abilities())

    def model(*backends: Backend) -> Model:
        objects = (service("web", cluster_ips=[vip], ports=[("http", port)]), web_slice(*backends))
        return run(*objects, allow_loopback_endpoints=True).model

    first = planner.plan(None, model(fleet[0]), scope)
    applier.apply(first, Config(renderer.render(first.model)))
    second = planner.plan(first.deployed, model(fleet[0], fleet[1]), scope)
    assert second.action is Action.RUNTIME
    applier.apply(second, Config(renderer.render(second.model)))
    [backend] = second.model.backends
    slot = next(s.name for s in backend.servers if s.address == fleet[1].address)
    key = (backend.name, slot)

    def seen() -> ServerState:
        running = applier.observe()
        assert running is not None and running.pids is None  # another host's processes
        return running.servers[key].state

    assert seen() is ServerState.READY
    target = f"set server {backend.name}/{slot}"
    for command, api_says, state in (
        (f"{target} state drain", "maint", ServerState.DRAIN),
        (f"{target} state maint", "maint", ServerState.PARKED),
        (f"{target} state ready", "ready", ServerState.READY),
        (f"{target} weight 0", "ready", ServerState.DRAIN),
    ):
        assert emulator.haproxy.command(command) == ""
        found = applier.client.servers(backend.name) or []
        assert next(f for f in found if f["name"] == slot)["admin_state"] == api_says
        assert seen() is state, command
    # Back to the model through the API: weight restored, served again, no reload.
    reloads = emulator.haproxy.processes().reloads
    running = applier.observe()
    assert running is not None
    fix = planner.correct(second.deployed, running.servers, scope)
    assert fix.action is Action.RUNTIME
    applier.apply(fix, Config(renderer.render(fix.model)))
    assert seen() is ServerState.READY
    assert serves(vip, port, {"b0", "b1"}) == {"b0", "b1"}
    assert emulator.haproxy.processes().reloads == reloads
    applier.close()


# --- refusals ---------------------------------------------------------------------------------


def test_a_config_haproxy_c_refuses_is_never_pushed_and_the_last_good_one_serves(
    tmp_path, haproxy_bin, fleet
):
    """A user template that renders an invalid config: the local `haproxy -c` stops it."""
    templates = refusing_templates(tmp_path)
    settings = replace(SETTINGS, render=RenderSettings(templates=str(templates)))
    vip = loopback_ip()
    port = free_port(vip)
    with serving(tmp_path, haproxy_bin, settings) as served:
        started(served, vip, port, fleet[0])
        version = served.emu.version
        with Traffic(vip, port) as traffic:
            annotations = {"kube2haproxy.io/balance": "leastconn"}
            served.source.put(
                service("web", cluster_ips=[vip], ports=[("http", port)], annotations=annotations)
            )
            served.source.put(web_slice(fleet[1]))
            wait_for(
                lambda: served.controller.metrics.validation_failed._value.get() == 1,
                what="the refused config",
            )
            assert responders(vip, port) == {"b0"}
            assert "no_such_keyword" in (tmp_path / "local" / "haproxy.cfg.rejected").read_text()
            served.source.put(service("web", cluster_ips=[vip], ports=[("http", port)]))
            wait_for(lambda: responders(vip, port) == {"b1"}, what="the next good change")
        assert traffic.failures == []
        # The refused one never reached the API (whose own `haproxy -c` would have said 400).
        posts = [(r.query, r.status) for r in served.emu.requests if r.method == "POST"]
        assert posts and all(status == 201 for _, status in posts), posts
        assert served.emu.version > version
        assert "no_such_keyword" not in served.emu.config_text()


def test_a_config_the_api_refuses_keeps_the_last_good_one_serving(
    tmp_path, haproxy_bin, emulator, fleet
):
    vip = loopback_ip()
    port = free_port(vip)
    socket_line = f"    stats socket {emulator.stats_socket} mode 600 level admin\n"
    good = haproxy_config(tmp_path, vip, port, [fleet[0]]).replace(
        f"    stats socket {tmp_path}/admin.sock mode 600 level admin\n", socket_line
    )
    applier = applier_for(emulator, tmp_path, haproxy_bin)
    applier.apply(RELOAD, Config(good))
    assert get(vip, port) == "b0"
    version = emulator.version
    other = good.replace(fleet[0].address, fleet[1].address)

    # The API's own `haproxy -c` refuses it (a binary other than ours: injected, as it says it).
    said = "[ALERT] (1) : config : parsing [haproxy.cfg:12] : unknown keyword 'x'"
    emulator.fail_next(400, said, path_prefix=RAW, method="POST")
    with Traffic(vip, port) as traffic, pytest.raises(ConfigRefused) as refused:
        applier.apply(RELOAD, Config(other))
    assert traffic.failures == []
    assert refused.value.output == said
    assert "400" in str(refused.value) and "haproxy.cfg.rejected" in str(refused.value)
    assert (tmp_path / "local" / "haproxy.cfg.rejected").read_text() == other
    assert emulator.version == version and get(vip, port) == "b0"
    with pytest.raises(ConfigRefused, match="refused this exact config already"):
        applier.apply(RELOAD, Config(other))  # not sent again

    # HAProxy itself refuses it at the reload: an address this host does not have.
    unbindable = good + "frontend fe_elsewhere\n    bind 192.0.2.1:1\n    default_backend web\n"
    with pytest.raises(ConfigRefused) as refused:
        applier.apply(RELOAD, Config(unbindable))
    assert "192.0.2.1" in refused.value.output  # HAProxy's own words
    assert emulator.version == version  # the API put the last good file back
    assert without_version(emulator.config_text()) == good
    wait_for(lambda: responders(vip, port, requests=5) == {"b0"}, what="the old config serving")
    applier.apply(RELOAD, Config(other))
    assert responders(vip, port) == {"b1"}
    applier.close()


def test_a_reload_the_api_reports_but_haproxy_does_not_run_is_not_taken_for_done(
    tmp_path, haproxy_bin, emulator, fleet
):
    """The new worker is confirmed as with the master CLI: by what it runs."""
    vip = loopback_ip()
    port = free_port(vip)
    paths = RenderPaths(runtime_socket=str(emulator.stats_socket), maps_dir=str(emulator.maps_dir))
    renderer = Renderer(RenderSettings(), paths)
    applier = applier_for(emulator, tmp_path, haproxy_bin, reload_timeout_s=1.0)

    def plan(backend: Backend) -> tuple[Plan, Config]:
        model = run(
            service("web", cluster_ips=[vip], ports=[("http", port)]),
            web_slice(backend),
            allow_loopback_endpoints=True,
        ).model
        return Plan(Action.RELOAD, loaded(model)), Config(renderer.render(model))

    applier.apply(*plan(fleet[0]))
    assert get(vip, port) == "b0"
    # An API that answers 201 to the push but neither writes nor reloads anything.
    emulator.fail_next(201, "done", path_prefix=RAW, method="POST")
    with pytest.raises(HAProxyUnavailable, match="does not run backend default_web_http as pushed"):
        applier.apply(*plan(fleet[1]))
    assert get(vip, port) == "b0"
    applier.apply(*plan(fleet[1]))  # pushed again: what runs was unsure
    assert responders(vip, port) == {"b1"}
    applier.close()


# --- races, credentials, an API that does not answer -----------------------------------------


def test_a_409_race_is_retried_and_a_lasting_one_reported(
    tmp_path, haproxy_bin, emulator, fleet, caplog
):
    vip = loopback_ip()
    port = free_port(vip)
    applier = applier_for(emulator, tmp_path, haproxy_bin)

    def config(backend: Backend) -> Config:
        text = haproxy_config(tmp_path, vip, port, [backend])
        return Config(text.replace(f"{tmp_path}/admin.sock", str(emulator.stats_socket)))

    applier.apply(RELOAD, config(fleet[0]))
    with Traffic(vip, port) as traffic:
        other_writer = emulator.bump_version()  # another writer won the race
        applier.apply(RELOAD, config(fleet[1]))
        wait_for(lambda: responders(vip, port, requests=5) == {"b1"}, what="b1")
        statuses = [r.status for r in emulator.requests if r.path == RAW]
        assert statuses[-2:] == [409, 201]
        assert emulator.version == other_writer + 1
        assert "another writer" in caplog.text

        # A writer that keeps winning: reported, nothing lost, and the next apply goes through.
        emulator.fail_next(409, "version in configuration file is 9", path_prefix=RAW, times=4)
        with pytest.raises(HAProxyUnavailable, match="409 4 times in a row"):
            applier.apply(RELOAD, config(fleet[2]))
        assert responders(vip, port, requests=5) == {"b1"}
        applier.apply(RELOAD, config(fleet[2]))
        wait_for(lambda: responders(vip, port, requests=5) == {"b2"}, what="b2")
    assert traffic.failures == []
    applier.close()


def test_wrong_credentials_are_a_clear_error_and_change_nothing(
    tmp_path, haproxy_bin, emulator, fleet, caplog
):
    caplog.set_level(logging.DEBUG)
    vip = loopback_ip()
    port = free_port(vip)
    text = haproxy_config(tmp_path, vip, port, [fleet[0]]).replace(
        f"{tmp_path}/admin.sock", str(emulator.stats_socket)
    )
    good = applier_for(emulator, tmp_path, haproxy_bin)
    good.apply(RELOAD, Config(text))
    version = emulator.version
    wrong = "not-" + PASSWORD
    applier = applier_for(
        emulator, tmp_path, haproxy_bin, client=client_for(emulator, password=wrong)
    )
    with pytest.raises(AccessRefused) as refused:
        applier.apply(RELOAD, Config(text.replace("b0", "b1")))
    message = str(refused.value)
    assert "401 unauthorized" in message and repr(USER) in message
    assert "--dataplane-password-file" in message
    assert not applier.healthy() and "401" in applier.problem
    assert good.healthy() and good.problem == ""
    assert emulator.version == version and get(vip, port) == "b0"
    for secret in (PASSWORD, wrong):
        assert secret not in message + applier.problem + caplog.text + repr(applier.client)
    applier.close()
    good.close()


def test_an_api_that_does_not_answer_is_unavailable_and_loses_nothing(tmp_path, haproxy_bin, fleet):
    vip = loopback_ip()
    port = free_port(vip)
    with serving(tmp_path, haproxy_bin) as served:
        started(served, vip, port, fleet[0])
        emu = served.emu
        with Traffic(vip, port) as traffic:
            emu.http.stop()  # the API goes away; its HAProxy does not
            wait_for(lambda: not served.applier.healthy(), what="unhealthy")
            assert "cannot reach" in served.applier.problem
            failures = served.controller.failures
            served.source.put(web_slice(fleet[1]))  # a runtime update that cannot be sent
            wait_for(lambda: served.controller.failures > failures, what="the failed apply")
            unavailable = served.controller.metrics.reloads.labels("unavailable")._value.get()
            assert unavailable >= 1
            assert responders(vip, port) == {"b0"}  # HAProxy serves the last config on
        assert traffic.failures == []


def test_the_password_never_shows_in_logs_or_errors(tmp_path, haproxy_bin, emulator, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3's and requests' own logging included
    applier = applier_for(emulator, tmp_path, haproxy_bin)
    said = []
    emulator.fail_next(500, f"the API echoed {PASSWORD} back", path_prefix=RAW)
    text = f"global\n    stats socket {emulator.stats_socket} mode 600 level admin\n"
    for _ in range(2):
        try:
            applier.apply(RELOAD, Config(text))
        except HAProxyUnavailable as exc:  # the 500 with the echo
            said.append(str(exc))
    assert said and "500" in said[0] and "***" in said[0]
    assert applier.healthy()
    applier.close()
    assert PASSWORD not in " ".join(said) + caplog.text + repr(applier.client) + repr(applier)


# --- what a runtime plan may hold -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FutureOps(RuntimeOps):
    """The runtime changes of a later deployed.py, with an operation this applier does not
    know."""

    weights: tuple[SlotChange, ...] = ()


def test_a_runtime_plan_beyond_server_slots_is_refused_for_a_full_push(
    tmp_path, haproxy_bin, fleet
):
    """The planner gives this applier slot changes only (its abilities): anything more in a
    runtime plan is refused before a request goes out, and the controller pushes instead."""
    from kube2haproxy.slots import parked_line

    vip = loopback_ip()
    port = free_port(vip)
    with serving(tmp_path, haproxy_bin) as served:
        started(served, vip, port, fleet[0])
        deployed = served.controller.deployed
        assert deployed is not None
        [backend] = deployed.model.backends
        [slot] = [s for s in backend.servers if s.address == fleet[0].address]
        moved = slot._replace(ip=fleet[1].ip, address=fleet[1].address)
        servers = tuple(moved if s is slot else s for s in backend.servers)
        model = replace(deployed.model, backends=(replace(backend, servers=servers),))
        changed = replace(deployed, model=model)
        grow = (SlotChange(backend.name, slot, moved),)
        extra = parked_line(len(backend.servers))
        config = Config(served.emu.config_text())
        for ops, beyond in (
            (RuntimeOps(adds=(ServerAdd(backend.name, extra, backend.name),), grow=grow), "adds"),
            (RuntimeOps(grow=grow, routes=(RouteChange(port, "m", vip, None, "b"),)), "routes"),
            (RuntimeOps(grow=grow, deletes=(ServerDelete(backend.name, extra.name),)), "deletes"),
            (FutureOps(grow=grow, weights=grow), "weights"),
        ):
            with pytest.raises(RuntimeUpdateError, match=f"server slots at runtime, not {beyond}$"):
                served.applier.apply(Plan(Action.RUNTIME, changed, ops=ops), config)
        others = Plan(
            Action.RUNTIME,
            changed,
            ops=RuntimeOps(grow=grow),
            changes=Changes(frontends_changed=("fe",)),
        )
        with pytest.raises(RuntimeUpdateError, match="not changes other than endpoints"):
            served.applier.apply(others, config)
        assert served.pushes() == 1
        assert not [r for r in served.emu.requests if r.method == "PUT"]
        assert responders(vip, port) == {"b0"}
        # The controller's answer to it: a full push.
        adds = RuntimeOps(adds=(ServerAdd(backend.name, extra, backend.name),), grow=grow)
        served.controller._execute(Plan(Action.RUNTIME, changed, ops=adds))
        assert served.controller.metrics.runtime_updates.labels("fallback")._value.get() == 1
        assert served.pushes() == 2
        assert responders(vip, port) == {"b1"}


def test_what_the_api_cannot_change_at_runtime_is_planned_as_a_push(tmp_path, haproxy_bin, fleet):
    """No server line is added through the API: a scale-up past the lines HAProxy runs is
    planned as a reload (`slots`), not tried at runtime and fallen back from; once the lines
    run, the same endpoints come and go without one."""
    from kube2haproxy.deployed import Abilities

    vip = loopback_ip()
    port = free_port(vip)
    with serving(tmp_path, haproxy_bin) as served:
        assert served.applier.abilities() == Abilities(
            add_servers=False, delete_servers=False, routes=False
        )
        controller = served.controller
        metrics = controller.metrics
        four, five = {b.name for b in fleet[:4]}, {b.name for b in fleet[:5]}
        started(served, vip, port, *fleet[:4])  # 8 lines: at least 4 free, in blocks of 8
        with Traffic(vip, port) as traffic:
            wait_for(lambda: traffic.ok > 20, what="traffic")
            served.source.put(web_slice(*fleet[:5]))  # 16 lines
            wait_for(lambda: metrics.reload_reasons.labels("slots")._value.get() == 1, what="push")
            assert serves(vip, port, five) == five

            def step(slice_obj: JSON, expected: set[str]) -> None:
                updates = controller.runtime_updates
                served.source.put(slice_obj)
                wait_for(lambda: controller.runtime_updates > updates, what="a runtime update")
                assert serves(vip, port, expected) == expected

            step(web_slice(*fleet[:4]), four)
            step(web_slice(*fleet[:5]), five)
            done = traffic.ok
            wait_for(lambda: traffic.ok > done + 20, what="traffic after the last change")
        assert traffic.failures == [], traffic.failures[:5]
        assert metrics.runtime_updates.labels("fallback")._value.get() == 0
        assert controller.reloads == 2
        assert served.pushes() == 2


# --- map files: the per-port layout -----------------------------------------------------------


def test_per_port_maps_go_through_the_api_storage(tmp_path, haproxy_bin, fleet):
    settings = replace(SETTINGS, render=RenderSettings(frontend_layout="per-port"))
    vip, other = loopback_ip(), loopback_ip()
    port = free_port("127.0.0.1")
    a, b = fleet[0], fleet[1]
    with serving(tmp_path, haproxy_bin, settings) as served:
        started(served, vip, port, a)
        maps = sorted(p.name for p in served.emu.maps_dir.iterdir())
        assert len(maps) == 1 and maps[0].startswith(f"port-{port}-")
        uploads = [
            r.status
            for r in served.emu.requests
            if r.method == "POST" and r.path.endswith("/storage/maps")
        ]
        assert uploads == [201]
        with Traffic(vip, port) as traffic:
            served.source.put(service("api", cluster_ips=[other], ports=[("http", port)]))
            served.source.put(
                endpoint_slice("api", name="api-a", endpoints=[b.ip], ports=[("http", b.port)])
            )
            wait_for(lambda: routes(other, port) == {"b1"}, what="api routed")
            assert responders(vip, port) == {"b0"}
        assert traffic.failures == []
        # No map entry through the API: a new service is a push (a reload), planned as one.
        # (The controller counts the reload once apply returned: traffic may be served first.)
        metrics = served.controller.metrics
        services = metrics.reload_reasons.labels("services")
        wait_for(lambda: services._value.get() == 1, what="the reload counted")
        assert metrics.runtime_updates.labels("fallback")._value.get() == 0
        # The new map is stored, the old one deleted once no running config names it.
        now = sorted(p.name for p in served.emu.maps_dir.iterdir())
        assert len(now) == 1 and now != maps
        assert str(served.emu.maps_dir / now[0]) in served.emu.config_text()


def test_a_maps_dir_other_than_the_apis_is_reported(tmp_path, haproxy_bin, emulator):
    applier = applier_for(emulator, tmp_path, haproxy_bin, maps_dir="/somewhere/else")
    text = (
        f"global\n    stats socket {emulator.stats_socket} mode 600 level admin\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\n"
        f"frontend fe\n    bind {loopback_ip()}:1\n"
        "    use_backend %[dst,map_ip(/somewhere/else/port-1-x.map)]\n"
        "backend b\n"
    )
    with pytest.raises(Exception, match="set --maps-dir to the API's maps_dir"):
        applier.apply(RELOAD, Config(text, {"port-1-x.map": "1.2.3.4 b\n"}))
    applier.close()


# --- reloads the API queues -------------------------------------------------------------------


def test_queued_reloads_are_followed_by_their_id(tmp_path, haproxy_bin, fleet):
    vip = loopback_ip()
    port = free_port(vip)
    with DataplaneEmulator(haproxy_bin, tmp_path / "api", user=USER, password=PASSWORD) as emu:
        applier = applier_for(emu, tmp_path, haproxy_bin, force_reload=False)
        socket_line = str(emu.stats_socket)

        def config(*backends: Backend, extra: str = "") -> Config:
            text = haproxy_config(tmp_path, vip, port, list(backends), extra)
            return Config(text.replace(f"{tmp_path}/admin.sock", socket_line))

        applier.apply(RELOAD, config(fleet[0]))
        assert get(vip, port) == "b0"  # served once apply returned
        applier.apply(RELOAD, config(fleet[1]))
        assert get(vip, port) == "b1"
        polled = [r for r in emu.requests if r.path.startswith("/v3/services/haproxy/reloads/")]
        assert polled and all(r.status == 200 for r in polled)
        assert not [r for r in emu.requests if "force_reload" in r.query]
        bad = config(fleet[1], extra="frontend fe_elsewhere\n    bind 192.0.2.1:1\n")
        with pytest.raises(ConfigRefused) as refused:
            applier.apply(RELOAD, bad)
        assert "192.0.2.1" in refused.value.output
        wait_for(lambda: responders(vip, port, requests=5) == {"b1"}, what="b1 serving on")
        applier.close()
        assert not emu.errors


# --- TLS --------------------------------------------------------------------------------------


def certificates(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA of the test's own and a certificate it signed for 127.0.0.1: the server's TLS
    context, and the CA file a client verifies it with."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube2haproxy test CA")])
    ca = issue("kube2haproxy test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue("127.0.0.1", key, ca_name, ca_key, ca=False)
    ca_file, chain = tmp / "ca.pem", tmp / "server.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return context, ca_file


def test_tls_is_verified_against_the_ca_file(tmp_path, haproxy_bin, monkeypatch):
    context, ca_file = certificates(tmp_path)
    # requests lets this variable override a session's CA file: ours must win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", DEFAULT_CA_BUNDLE_PATH)
    with DataplaneEmulator(
        haproxy_bin, tmp_path / "api", user=USER, password=PASSWORD, tls=context
    ) as emu:
        assert emu.url.startswith("https://")
        verified = applier_for(
            emu, tmp_path, haproxy_bin, client=client_for(emu, verify=str(ca_file))
        )
        assert verified.healthy(), verified.problem
        text = f"global\n    stats socket {emu.stats_socket} mode 600 level admin\n"
        verified.apply(RELOAD, Config(text))
        assert without_version(emu.config_text()) == text

        # The system's CAs do not know ours: no request goes out, and it says why.
        system = applier_for(emu, tmp_path, haproxy_bin, client=client_for(emu, verify=True))
        assert not system.healthy()
        assert "TLS failed" in system.problem and "--dataplane-ca-file" in system.problem
        assert "CERTIFICATE_VERIFY_FAILED" in system.problem
        with pytest.raises(HAProxyUnavailable, match="TLS failed"):
            system.apply(RELOAD, Config(text + "# other\n"))

        unverified = applier_for(emu, tmp_path, haproxy_bin, client=client_for(emu, verify=False))
        assert unverified.healthy()  # --no-dataplane-tls-verify: and no warning per request
        for applier in (verified, system, unverified):
            applier.close()
        assert not emu.errors


# --- the command ------------------------------------------------------------------------------


def test_run_with_the_dataplane_applier_end_to_end(tmp_path, haproxy_bin):
    """`kube2haproxy run --applier dataplane`, a process as a user starts it, following manifest
    files and driving the emulator's HAProxy: served, endpoint churn without a reload, probes,
    and on SIGTERM HAProxy keeps serving."""
    import signal

    import yaml

    from testkit.backends import probe
    from tests.test_run import controller

    port = free_port("127.0.0.1")
    a, b = Backend("a", port=port), Backend("b", port=port)
    vip, listen = loopback_ip(), free_port("127.0.0.1")
    served = free_port(vip)
    cluster = tmp_path / "cluster.yaml"

    def manifests(*backends: Backend) -> None:
        objects = [
            service("web", "demo", cluster_ips=[vip], ports=[("http", served)]),
            endpoint_slice(
                "web", "demo", endpoints=[x.ip for x in backends], ports=[("http", port)]
            ),
        ]
        cluster.with_suffix(".tmp").write_text(yaml.safe_dump_all(objects))
        cluster.with_suffix(".tmp").rename(cluster)

    manifests(a)
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    with DataplaneEmulator(haproxy_bin, tmp_path / "api", user=USER, password=PASSWORD) as emu:
        reloads = emu.haproxy.processes().reloads
        args = [
            "-f", str(cluster), "--applier", "dataplane", "--dataplane-url", emu.url,
            "--dataplane-username", USER, "--dataplane-password-file", str(password),
            "--runtime-socket", str(emu.stats_socket), "--maps-dir", str(emu.maps_dir),
            "--haproxy-bin", haproxy_bin, "--run-dir", str(tmp_path / "run"),
            "--listen", f"127.0.0.1:{listen}", "--allow-loopback-endpoints",
            "--debounce", "20ms",
        ]  # fmt: skip
        with controller(*args) as process:
            wait_for(lambda: probe(listen, "/readyz") == (200, "ok\n"), timeout=20, what="ready")
            assert probe(listen, "/healthz") == (200, "ok\n")
            assert responders(vip, served) == {"a"}
            assert emu.haproxy.processes().reloads == reloads + 1
            manifests(a, b)
            wait_for(lambda: serves(vip, served, {"a", "b"}) == {"a", "b"}, what="b added")
            wait_for(
                lambda: (
                    'runtime_updates_total{result="success"} 1.0' in probe(listen, "/metrics")[1]
                ),
                what="the runtime update counted",
            )
            assert emu.haproxy.processes().reloads == reloads + 1  # no reload for it
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert responders(vip, served, requests=10) <= {"a", "b"}  # HAProxy serves on
        assert not emu.errors
    for backend in (a, b):
        backend.close()
    assert "through the Data Plane API at http://127.0.0.1:" in output
    assert "reloaded haproxy: initial config" in output
    assert "updated haproxy without a reload: endpoints changed: 1" in output
    assert PASSWORD not in output
    copy = (tmp_path / "run" / "haproxy.cfg").read_text()
    assert f"stats socket {emu.stats_socket}" in copy


# --- settings and the password file -----------------------------------------------------------

DATAPLANE = ["--applier", "dataplane"]
URL = ["--dataplane-url", "http://127.0.0.1:5555"]
USER_FLAG = ["--dataplane-username", USER]
PASSWORD_FLAG = ["--dataplane-password-file", "/run/secrets/pw"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (DATAPLANE, "--applier dataplane needs --dataplane-url"),
        (DATAPLANE + URL, "--applier dataplane needs --dataplane-username"),
        (DATAPLANE + URL + USER_FLAG, "--applier dataplane needs --dataplane-password-file"),
        (
            [*DATAPLANE, "--dataplane-url", "ftp://h:21", *USER_FLAG, *PASSWORD_FLAG],
            "expected http://host:port or https://host:port",
        ),
        (
            [*DATAPLANE, "--dataplane-url", f"http://a:{PASSWORD}@h/", *USER_FLAG, *PASSWORD_FLAG],
            "credentials do not go in the URL",
        ),
    ],
)
def test_dataplane_flags_that_cannot_work_are_usage_errors(capsys, args, said):
    from kube2haproxy import cli

    assert cli.main(["run", "-f", "/dev/null", *args]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert PASSWORD not in err


def test_flags_the_applier_ignores_are_said():
    from kube2haproxy import settings

    _, notes = settings.build({"dataplane_url": "http://h:5555", "dataplane_tls_verify": False})
    assert notes == (
        "--dataplane-url, --no-dataplane-tls-verify ignored with --applier master-cli",
    )
    _, notes = settings.build(
        {
            "kind": "dataplane",
            "dataplane_url": "http://h:5555",
            "dataplane_username": "u",
            "dataplane_password_file": "/p",
            "dataplane_ca_file": "/ca.pem",
            "master_socket": "/run/haproxy/master.sock",
        }
    )
    assert notes == (
        "--master-socket is ignored with --applier dataplane",
        "--dataplane-ca-file is ignored with an http:// --dataplane-url",
    )


def test_dataplane_paths_name_the_apis_host():
    from kube2haproxy import settings

    chosen, _ = settings.build(
        {
            "kind": "dataplane",
            "dataplane_url": "http://h:5555",
            "dataplane_username": "u",
            "dataplane_password_file": "/p",
        }
    )
    paths = settings.resolve_paths(chosen, uid=1000, environ={}, tmp="/tmp")
    assert not paths.supervised
    assert paths.run_dir == "/tmp/kube2haproxy-1000"
    assert (paths.config, paths.lock) == (
        "/tmp/kube2haproxy-1000/haproxy.cfg",  # our copy of what the API was given
        "/tmp/kube2haproxy-1000/kube2haproxy.lock",
    )
    # What the config names: paths on the API's host, dataplaneapi's defaults.
    assert (paths.runtime_socket, paths.maps_dir) == (
        "/run/haproxy/admin.sock",
        "/etc/haproxy/maps",
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [(PASSWORD, PASSWORD), (PASSWORD + "\n", PASSWORD), (PASSWORD + "\r\n", PASSWORD)],
)
def test_the_password_file_loses_one_trailing_newline(tmp_path, content, expected):
    from kube2haproxy.appliers.dataplane_client import read_password

    path = tmp_path / "pw"
    path.write_bytes(content.encode())
    assert read_password(str(path)) == expected


@pytest.mark.parametrize("content", ["", "\n", PASSWORD + "\n\n", f"{PASSWORD}\nmore\n"])
def test_a_password_file_of_more_or_less_than_one_line_is_refused_unsaid(tmp_path, content):
    from kube2haproxy.appliers.dataplane_client import read_password
    from kube2haproxy.errors import EnvironmentProblem

    path = tmp_path / "pw"
    path.write_text(content)
    with pytest.raises(EnvironmentProblem, match="expected the password on one line") as refused:
        read_password(str(path))
    assert PASSWORD not in str(refused.value)
    with pytest.raises(EnvironmentProblem, match="No such file"):
        read_password(str(tmp_path / "missing"))


def test_run_with_an_unreadable_password_file_exits_7(tmp_path, haproxy_bin):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable, "-m", "kube2haproxy.cli", "run", "-f", "/dev/null",
            *DATAPLANE, *URL, *USER_FLAG,
            "--dataplane-password-file", str(tmp_path / "missing"),
            "--haproxy-bin", haproxy_bin, "--run-dir", str(tmp_path / "run"), "--listen", "",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    assert f"--dataplane-password-file {tmp_path / 'missing'}: No such file" in result.stderr


# --- the local check of a config for the API's host ------------------------------------------


def test_a_config_for_another_host_is_checked_with_its_maps_beside_it(haproxy_bin):
    from kube2haproxy.configfile import check_text

    there = "/etc/haproxy/maps"
    text = (
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\n"
        f"frontend fe\n    bind {loopback_ip()}:1\n"
        f"    use_backend %[dst,map_ip({there}/port-1-a.map)]\n"
        # Another file under that directory is not ours: left alone (and so missing here).
        "    # see /etc/haproxy/maps/README\n"
        "backend web\n"
    )
    assert check_text(
        text,
        binary=haproxy_bin,
        timeout_s=30,
        files={"port-1-a.map": "10.0.0.1 web\n"},
        maps_dir=there,
    ) in ("", "Configuration file is valid")
    with pytest.raises(CheckError) as refused:
        check_text(
            text,
            binary=haproxy_bin,
            timeout_s=30,
            name="/run/kube2haproxy/haproxy.cfg",
            files={"port-1-a.map": "not-an-address web\n"},
            maps_dir=there,
        )
    output = refused.value.output
    assert f"{there}/port-1-a.map" in output  # named as on the API's host
    assert "/run/kube2haproxy/haproxy.cfg" in output and "kube2haproxy-" not in output
    with pytest.raises(CheckError, match="rejected"):  # without the files: it is missing here
        check_text(text, binary=haproxy_bin, timeout_s=30)
