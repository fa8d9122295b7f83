"""controller: sync gating, debounce with a maximum delay, the no-change path, failures and
retries, the translate cache. Real threads and a real queue; the applier records or fails on
demand (the real HAProxy applier has its own tests)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from prometheus_client import generate_latest

from kube2haproxy.applier import ApplyReport, RecordingApplier
from kube2haproxy.controller import Controller
from kube2haproxy.errors import CheckError
from kube2haproxy.metrics import Metrics
from kube2haproxy.render import Renderer
from kube2haproxy.settings import RunSettings, Settings
from tests.builders import ScriptedSource, backend_servers, endpoint_slice, service
from tests.live import wait_for

FAST = Settings(run=RunSettings(debounce_ms=50, max_delay_ms=300, retry_interval_ms=200))


class FlakyApplier(RecordingApplier):
    """Fails the next `failures` applies with the given error."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Exception] = []
        self.attempts = 0

    def apply(
        self, text: str, *, force: bool = False, files: dict[str, str] | None = None
    ) -> ApplyReport:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return super().apply(text, force=force, files=files)


@contextmanager
def running(
    *sources: ScriptedSource, applier=None, settings: Settings = FAST
) -> Iterator[Controller]:
    controller = Controller(
        settings=settings,
        sources=sources,
        applier=applier or RecordingApplier(),
        renderer=Renderer(replace(settings.render, runtime_socket="/run/k2h/admin.sock")),
        metrics=Metrics(),
    )
    controller.start_sources()
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        yield controller
    finally:
        controller.stop()
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert all(s.stopped for s in sources)


def configs(controller: Controller) -> list[str]:
    return controller._applier.configs  # type: ignore[attr-defined]


def test_nothing_is_rendered_before_every_source_synced():
    services, slices = ScriptedSource("kube/services"), ScriptedSource("kube/endpointslices")
    with running(services, slices) as controller:
        services.put(service())
        services.synced()
        slices.put(endpoint_slice(endpoints=["10.1.0.1"]))
        time.sleep(0.5)  # several debounce periods
        assert configs(controller) == []
        assert not controller.ready.is_set()
        slices.synced()
        wait_for(controller.ready.is_set)
        assert len(configs(controller)) == 1
        assert backend_servers(configs(controller)[0], "default_web_http") == ["10.1.0.1:8080"]


def test_a_storm_of_changes_is_one_apply():
    source = ScriptedSource()
    # Only the quiet period applies here: a maximum delay could cut a slow storm in two.
    patient = replace(FAST, run=replace(FAST.run, max_delay_ms=10_000))
    with running(source, settings=patient) as controller:
        source.synced()
        wait_for(controller.ready.is_set)
        for i in range(200):
            source.put(endpoint_slice(endpoints=[f"10.1.0.{i % 250 + 1}"]))
            source.put(service(f"svc-{i}", cluster_ips=[f"10.96.1.{i % 250}"]))
        wait_for(lambda: len(configs(controller)) >= 2)
        time.sleep(0.3)
        assert len(configs(controller)) == 2
        assert configs(controller)[-1].count("\nfrontend ") == 200


def test_a_continuous_stream_of_changes_is_applied_within_the_maximum_delay():
    source = ScriptedSource()
    with running(source) as controller:
        source.put(service())
        source.synced()
        wait_for(controller.ready.is_set)
        stop = time.monotonic() + 20
        i = 0
        # A change every 20 ms: the quiet period (50 ms) never comes. Without the maximum delay
        # (300 ms) nothing would be applied until the storm ends, and it ends only when three
        # applies happened.
        while len(configs(controller)) < 3 and time.monotonic() < stop:
            source.put(endpoint_slice(endpoints=[f"10.1.0.{i % 250 + 1}"]))
            i += 1
            time.sleep(0.02)
        assert len(configs(controller)) >= 3


def test_no_change_applies_nothing():
    source = ScriptedSource()
    with running(source) as controller:
        source.put(service())
        source.synced()
        wait_for(controller.ready.is_set)
        source.put(service())  # the same object again
        source.put(service("other"))  # a service...
        source.delete(service("other"))  # ...that disappears before the debounce ends
        time.sleep(0.4)
        assert len(configs(controller)) == 1


def test_a_failed_apply_is_retried_and_the_controller_keeps_running(caplog):
    applier = FlakyApplier()
    source = ScriptedSource()
    with running(source, applier=applier) as controller:
        source.put(service())
        source.synced()
        wait_for(controller.ready.is_set)
        applier.failures = [
            CheckError(
                "haproxy -c rejected the config (exit 1)",
                output="[ALERT] parsing [x:3]: unknown keyword",
            )
        ] * 2
        with caplog.at_level(logging.ERROR, logger="kube2haproxy.controller"):
            source.put(service("api", cluster_ips=["10.96.0.11"]))
            metrics = controller.metrics
            # Retried after the backoff until it passed.
            wait_for(lambda: metrics.reloads.labels("success")._value.get() == 2, timeout=10)
        assert "unknown keyword" in caplog.text
        assert metrics.reloads.labels("check_failed")._value.get() == 2
        assert metrics.reloads.labels("success")._value.get() == 2
        assert metrics.validation_failed._value.get() == 0
        assert "frontend default_api_http" in configs(controller)[-1]


def test_an_unexpected_error_is_survived(caplog):
    applier = FlakyApplier()
    applier.failures = [RuntimeError("a bug")]
    source = ScriptedSource()
    with running(source, applier=applier) as controller:
        source.put(service())
        with caplog.at_level(logging.ERROR):
            source.synced()
            wait_for(controller.ready.is_set, timeout=10)
        assert "a bug" in caplog.text
        assert controller.metrics.reloads.labels("error")._value.get() == 1


def test_an_object_that_cannot_be_translated_does_not_stop_the_others(caplog):
    source = ScriptedSource()
    with running(source) as controller, caplog.at_level(logging.WARNING):
        source.put(service())
        bad = service("bad", cluster_ips=["10.96.0.12"])
        bad["spec"]["ports"] = "eighty"
        source.put(bad)
        source.synced()
        wait_for(controller.ready.is_set)
        assert "frontend default_web_http" in configs(controller)[0]
        assert "Service default/bad: spec.ports: expected a list" in caplog.text
        assert controller.metrics.warnings._value.get() == 1


def test_findings_are_logged_once_not_at_every_apply(caplog):
    source = ScriptedSource()
    with running(source) as controller, caplog.at_level(logging.WARNING):
        source.put(service(annotations={"kube2haproxy.io/balance": "fastest"}))
        source.synced()
        wait_for(controller.ready.is_set)
        for i in range(3):
            source.put(endpoint_slice(endpoints=[f"10.1.0.{i + 1}"]))
            wait_for(lambda i=i: f"10.1.0.{i + 1}:8080" in configs(controller)[-1])
    assert caplog.text.count("invalid value 'fastest'") == 1


def test_unchanged_services_are_not_translated_again():
    source = ScriptedSource()
    with running(source) as controller:
        for i in range(20):
            source.put(service(f"s{i}", cluster_ips=[f"10.96.2.{i}"]))
        source.synced()
        wait_for(controller.ready.is_set)
        first = {b.name: b for b in controller.applied_model.backends}
        source.put(endpoint_slice("s3", endpoints=["10.1.0.9"]))
        wait_for(lambda: len(configs(controller)) == 2)
        second = {b.name: b for b in controller.applied_model.backends}
    same = [name for name in first if first[name] is second[name]]
    assert len(same) == 19 and "default_s3_http" not in same


def test_metrics_exist_from_the_start():
    text = generate_latest(Metrics().registry).decode()
    for metric in [
        "kube2haproxy_pending_changes 0.0",
        "kube2haproxy_seconds_since_last_apply_success -1.0",
        'kube2haproxy_services_skipped{reason="headless"} 0.0',
    ]:
        assert metric in text


RUNTIME = replace(
    FAST, run=replace(FAST.run, debounce_ms=300, max_delay_ms=2000, runtime_debounce_ms=5)
)


def start_with_one_service(source: ScriptedSource, controller: Controller) -> None:
    """default/web on port 80 with one ready endpoint, synced and applied."""
    source.put(service())
    source.put(endpoint_slice(endpoints=["10.1.0.1"]))
    source.synced()
    wait_for(controller.ready.is_set)


def test_endpoint_changes_go_through_the_runtime_api_without_a_reload():
    applier = RecordingApplier()
    source = ScriptedSource()
    with running(source, applier=applier, settings=RUNTIME) as controller:
        start_with_one_service(source, controller)
        for i in range(2, 6):
            source.put(endpoint_slice(endpoints=[f"10.1.0.{i}"]))
            wait_for(
                lambda i=i: (
                    backend_servers(configs(controller)[-1], "default_web_http")
                    == [f"10.1.0.{i}:8080"]
                )
            )
        assert applier.reloads == 1  # the first config only
        assert len(applier.commands) == 4
        assert all(any("state ready" in c for c in batch) for batch in applier.commands)
        assert controller.metrics.runtime_updates.labels("success")._value.get() == 4


def test_a_change_that_needs_a_reload_takes_its_endpoint_changes_along():
    """An endpoint change and a service change arrive together: one reload, not a runtime
    update followed by a reload (the reload waits for its longer debounce, and the endpoint
    change with it)."""
    applier = RecordingApplier()
    source = ScriptedSource()
    with running(source, applier=applier, settings=RUNTIME) as controller:
        start_with_one_service(source, controller)
        source.put(endpoint_slice(endpoints=["10.1.0.2"]))
        source.put(service(annotations={"kube2haproxy.io/balance": "leastconn"}))
        wait_for(lambda: applier.reloads == 2)
        time.sleep(0.4)
        assert applier.commands == []
        assert "balance leastconn" in configs(controller)[-1]
        assert backend_servers(configs(controller)[-1], "default_web_http") == ["10.1.0.2:8080"]


def test_endpoints_that_outgrow_the_slots_reload_once():
    applier = RecordingApplier()
    source = ScriptedSource()
    with running(source, applier=applier, settings=RUNTIME) as controller:
        start_with_one_service(source, controller)
        source.put(endpoint_slice(endpoints=[f"10.1.0.{i}" for i in range(1, 9)]))  # 8 fit
        wait_for(lambda: len(applier.commands) == 1)
        source.put(endpoint_slice(endpoints=[f"10.1.0.{i}" for i in range(1, 10)]))  # 9 don't
        wait_for(lambda: applier.reloads == 2)
        assert controller.metrics.reload_reasons.labels("slots")._value.get() == 1
        assert configs(controller)[-1].count("    server s") == 16


def test_a_loop_that_stops_turning_is_reported_stalled():
    now = [1000.0]
    source = ScriptedSource()
    controller = Controller(
        settings=FAST,
        sources=[source],
        applier=RecordingApplier(),
        renderer=Renderer(replace(FAST.render, runtime_socket="/r.sock")),
        metrics=Metrics(),
        clock=lambda: now[0],
    )
    assert not controller.stalled(60)
    now[0] += 61  # the loop never ran: no heartbeat for 61 s
    assert controller.stalled(60)


class BlockingApplier(RecordingApplier):
    """A host where some sockets cannot be listened on (another program holds them)."""

    def __init__(self, blocked: set[tuple[str, int]]) -> None:
        super().__init__()
        self.blocked = blocked
        self.tested: list[set[tuple[str, int]]] = []

    def unbindable(self, binds, *, transparent):
        self.tested.append(set(binds))
        return {b: "Address already in use" for b in binds if b in self.blocked}


def test_a_port_that_frees_up_brings_back_every_service_left_out_on_it():
    """Per-port: a wildcard socket that cannot be bound leaves out the services on that port,
    those that come later too; when it can be bound again, all of them are served."""
    offset = [0.0]
    applier = BlockingApplier({("0.0.0.0", 22)})
    source = ScriptedSource()
    settings = replace(FAST, render=replace(FAST.render, frontend_layout="per-port"))
    controller = Controller(
        settings=settings,
        sources=[source],
        applier=applier,
        renderer=Renderer(replace(settings.render, runtime_socket="/run/k2h/admin.sock")),
        metrics=Metrics(),
        clock=lambda: time.monotonic() + offset[0],
    )
    controller.start_sources()
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        source.put(service("a", cluster_ips=["10.96.0.1"], ports=[("ssh", 22)]))
        source.put(service("web", cluster_ips=["10.96.0.9"], ports=[("http", 80)]))
        source.synced()
        wait_for(controller.ready.is_set)
        assert "port_22" not in configs(controller)[-1]
        source.put(service("b", cluster_ips=["10.96.0.2"], ports=[("ssh", 22)]))
        wait_for(lambda: len(applier.tested) >= 2)
        time.sleep(0.3)
        assert "port_22" not in configs(controller)[-1]

        applier.blocked.clear()
        offset[0] += 31  # the retest is due
        source.put(service("web", cluster_ips=["10.96.0.9"], ports=[("http", 81)]))  # a wake-up
        wait_for(lambda: "frontend port_22" in configs(controller)[-1])
        maps = applier.files
        routed = "".join(text for name, text in maps.items() if name.startswith("port-22-"))
        assert routed == "10.96.0.1 default_a_ssh\n10.96.0.2 default_b_ssh\n"
    finally:
        controller.stop()
        thread.join(timeout=5)


def test_a_changed_pool_annotation_is_applied():
    """The fast path for endpoint-only changes must not swallow a new pool address."""
    settings = replace(
        RUNTIME,
        translate=replace(RUNTIME.translate, vip_mode="pool", vip_cidr="10.200.0.0/16"),
    )
    applier = RecordingApplier()
    source = ScriptedSource()
    with running(source, applier=applier, settings=settings) as controller:
        start_with_one_service(source, controller)
        assert "bind 10.200.7.7:80" not in configs(controller)[-1]
        source.put(service(annotations={"kube2haproxy.io/vip": "10.200.7.7"}))
        wait_for(lambda: "bind 10.200.7.7:80 transparent" in configs(controller)[-1])
        assert applier.reloads == 2


def test_a_new_address_alone_is_applied_after_the_reload_debounce():
    """A change to a service's frontends with identical backends needs a reload; while the
    reload waits, the endpoint fast path must not take it for already applied."""
    applier = RecordingApplier()
    source = ScriptedSource()
    with running(source, applier=applier, settings=RUNTIME) as controller:
        start_with_one_service(source, controller)
        source.put(service(externalIPs=["192.0.2.7"]))
        wait_for(lambda: "bind 192.0.2.7:80 transparent" in configs(controller)[-1])
        assert applier.reloads == 2
