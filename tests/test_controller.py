"""controller: sync gating, debounce with a maximum delay, the no-change path, failures and
retries, the translate cache, runtime updates and their fallback, unbindable addresses. The
controller is driven turn by turn with a clock of the test's own: no threads, no sleeping; the
applier records or fails on demand (the real appliers have their own tests)."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from prometheus_client import generate_latest

from kube2haproxy import status
from kube2haproxy.appliers import ApplyReport, Config, Running, go_on
from kube2haproxy.appliers.recording import RecordingApplier
from kube2haproxy.controller import SHARED_NAMED, Controller, Socket
from kube2haproxy.errors import CheckError, ConfigRefused, HAProxyUnavailable, RuntimeUpdateError
from kube2haproxy.events import Event
from kube2haproxy.metrics import Metrics
from kube2haproxy.model import ServerState
from kube2haproxy.plan import Action, Plan, Reason
from kube2haproxy.render import Renderer
from kube2haproxy.runner import stop_on_signals
from kube2haproxy.settings import RenderPaths, RenderSettings, Settings, TimingSettings
from testkit.builders import JSON, endpoint_slice, service
from tests.pipeline import ScriptedSource, backend_servers, run

FAST = Settings(timing=TimingSettings(debounce_ms=50, max_delay_ms=300, retry_interval_ms=200))
RUNTIME = replace(
    FAST, timing=replace(FAST.timing, debounce_ms=300, max_delay_ms=2000, runtime_debounce_ms=5)
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyApplier(RecordingApplier):
    """Fails the next applies with the given errors, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Exception] = []
        self.attempts = 0

    def apply(self, plan: Plan, config: Config) -> ApplyReport:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return super().apply(plan, config)


class RefusingRuntime(RecordingApplier):
    """Refuses every runtime update, as a runtime API that answers something unexpected."""

    def apply(self, plan: Plan, config: Config) -> ApplyReport:
        if plan.action is Action.RUNTIME:
            raise RuntimeUpdateError("'set server ...': 'Permission denied'")
        return super().apply(plan, config)


class BlockingHost:
    """A host where some sockets cannot be listened on (another program holds them)."""

    def __init__(self, blocked: set[tuple[str, int]]) -> None:
        self.blocked = blocked
        self.tested: list[set[tuple[str, int]]] = []

    def unbindable(self, wanted: Iterable[Socket]) -> dict[Socket, str]:
        asked = set(wanted)
        self.tested.append(asked)
        return {b: "Address already in use" for b in asked if b in self.blocked}

    def shared(self, listening: Mapping[Socket, Iterable[Socket]]) -> dict[Socket, str]:
        return {}


WALL = 1_796_000_000.0  # the wall clock is the test's clock plus this (2026-11-30)


class Driven:
    """A controller driven by hand: a scripted source, an applier, the test's clock."""

    def __init__(
        self,
        settings: Settings = FAST,
        *,
        applier: RecordingApplier | None = None,
        host: BlockingHost | None = None,
        sources: tuple[ScriptedSource, ...] | None = None,
        background: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.clock = Clock()
        self.applier = applier or RecordingApplier()
        self.sources = sources or (ScriptedSource(),)
        self.source = self.sources[0]
        self.controller = Controller(
            settings=settings,
            sources=self.sources,
            applier=self.applier,
            renderer=Renderer(settings.render, RenderPaths(runtime_socket="/run/k2h/admin.sock")),
            metrics=Metrics(clock=lambda: WALL + self.clock.now),
            host=host,
            clock=self.clock,
            background=background or (lambda work: work()),  # drift checks read inline
        )
        self.controller.start_sources()

    def settle(self, seconds: float = 10.0) -> None:
        """Let `seconds` of the controller's time pass, doing what falls due on the way."""
        end = self.clock.now + seconds
        for _ in range(10_000):
            self.controller.turn()
            wait = self.controller.schedule.wakeup(self.clock.now, synced=self.controller.synced)
            if wait is None or self.clock.now + wait > end:
                break
            self.clock.now += max(wait, 0.001)
        self.clock.now = end
        self.controller.turn()

    @property
    def configs(self) -> list[str]:
        return [c.text for c in self.applier.configs]

    def counter(self, metric: Any, *labels: str) -> float:
        """A metric's value (prometheus_client keeps it in a private `_value`)."""
        found = metric.labels(*labels) if labels else metric
        return float(found._value.get())

    def start_with_one_service(self) -> None:
        """default/web on port 80 with one ready endpoint, synced and applied."""
        self.source.put(service())
        self.source.put(endpoint_slice(endpoints=["10.1.0.1"]))
        self.source.synced()
        self.settle()
        assert self.controller.ready.is_set()


def test_nothing_is_rendered_before_every_source_synced():
    services, slices = ScriptedSource("kube/services"), ScriptedSource("kube/endpointslices")
    driven = Driven(sources=(services, slices))
    services.put(service())
    services.synced()
    slices.put(endpoint_slice(endpoints=["10.1.0.1"]))
    driven.settle(5)  # many debounce periods
    assert driven.configs == []
    assert not driven.controller.ready.is_set()
    slices.synced()
    driven.settle()
    assert driven.controller.ready.is_set()
    assert len(driven.configs) == 1
    assert backend_servers(driven.configs[0], "default_web_http") == ["10.1.0.1:8080"]


def test_a_storm_of_changes_is_one_apply():
    driven = Driven()
    driven.source.synced()
    driven.settle()
    for i in range(200):
        driven.source.put(endpoint_slice(endpoints=[f"10.1.0.{i % 250 + 1}"]))
        driven.source.put(service(f"svc-{i}", cluster_ips=[f"10.96.1.{i % 250}"]))
    driven.settle()
    assert len(driven.configs) == 2
    assert driven.configs[-1].count("\nfrontend ") == 200


def test_the_first_config_translates_the_cluster_once():
    """Nothing runs yet: the first config is a start, so the runtime debounce's early look
    does not translate a cluster that the reload deadline translates again."""
    driven = Driven()
    for i in range(3):
        driven.source.put(service(f"svc-{i}", cluster_ips=[f"10.96.1.{i + 1}"]))
    driven.source.synced()
    driven.settle()
    assert len(driven.configs) == 1
    metrics = driven.controller.metrics
    assert sample(metrics, "kube2haproxy_translate_duration_seconds_count") == 1


def test_a_continuous_stream_of_changes_is_applied_within_the_maximum_delay():
    """A change every 20 ms: the quiet period (50 ms) never comes; the maximum delay (300 ms)
    applies them all the same, about every 300 ms."""
    driven = Driven()
    driven.source.put(service())
    driven.source.synced()
    driven.settle()
    first_change = driven.clock.now
    applied_at = []
    for i in range(60):  # 1.2 s of changes
        driven.source.put(service(cluster_ips=[f"10.96.0.{i % 250 + 1}"]))
        before = len(driven.configs)
        driven.settle(0.02)
        if len(driven.configs) > before:
            applied_at.append(driven.clock.now)
    assert len(applied_at) >= 3
    assert applied_at[0] - first_change <= 0.3 + 0.02


def test_no_change_applies_nothing():
    driven = Driven()
    driven.source.put(service())
    driven.source.synced()
    driven.settle()
    driven.source.put(service())  # the same object again
    driven.source.put(service("other"))  # a service...
    driven.source.delete(service("other"))  # ...that disappears before the debounce ends
    driven.settle()
    assert len(driven.configs) == 1


def test_a_failed_apply_is_retried_with_a_growing_backoff(caplog):
    applier = FlakyApplier()
    driven = Driven(applier=applier)
    driven.source.put(service())
    driven.source.synced()
    driven.settle()
    applier.failures = [
        CheckError(
            "haproxy -c rejected the config (exit 1)",
            output="[ALERT] parsing [x:3]: unknown keyword",
        )
    ] * 3
    metrics = driven.controller.metrics
    with caplog.at_level(logging.ERROR, logger="kube2haproxy.controller"):
        driven.source.put(service("api", cluster_ips=["10.96.0.11"]))
        driven.settle(0.06)  # the debounce (50 ms): the first attempt fails
        assert applier.attempts == 2
        driven.settle(0.15)
        assert applier.attempts == 2  # the first retry waits 200 ms
        driven.settle(0.1)
        assert applier.attempts == 3
        driven.settle(0.3)
        assert applier.attempts == 3  # the second waits twice as long
        driven.settle(0.15)
        assert applier.attempts == 4
        driven.settle(10)
    assert "unknown keyword" in caplog.text
    assert driven.counter(metrics.reloads, "check_failed") == 3
    assert driven.counter(metrics.reloads, "success") == 2
    assert driven.counter(metrics.validation_failed) == 0
    assert "frontend fe_default_api_http" in driven.configs[-1]
    assert "or in 0.2s:" in caplog.text and "or in 0.4s:" in caplog.text


def test_failures_are_counted_by_what_happened(caplog):
    applier = FlakyApplier()
    driven = Driven(applier=applier)
    applier.failures = [
        ConfigRefused("HAProxy refused the new config", output="[ALERT] cannot bind"),
        HAProxyUnavailable("master.sock: 'show': timed out"),
        RuntimeError("a bug"),
    ]
    driven.source.put(service())
    with caplog.at_level(logging.ERROR):
        driven.source.synced()
        driven.settle(10)
    metrics = driven.controller.metrics
    assert [
        driven.counter(metrics.reloads, r) for r in ("reload_failed", "unavailable", "error")
    ] == [
        1,
        1,
        1,
    ]
    assert driven.controller.ready.is_set()
    assert "a bug" in caplog.text and "cannot bind" in caplog.text
    # Said as it is: before the first success nothing of ours serves.
    assert "nothing has been applied yet" in caplog.text
    assert "keeps serving the last config" not in caplog.text


def test_an_object_that_cannot_be_translated_does_not_stop_the_others(caplog):
    driven = Driven()
    with caplog.at_level(logging.WARNING):
        driven.source.put(service())
        bad = service("bad", cluster_ips=["10.96.0.12"])
        bad["spec"]["ports"] = "eighty"
        driven.source.put(bad)
        driven.source.synced()
        driven.settle()
    assert "frontend fe_default_web_http" in driven.configs[0]
    assert "Service default/bad: spec.ports: expected a list" in caplog.text
    assert "warning: Service" not in caplog.text  # the level is the log line's, not doubled
    assert driven.counter(driven.controller.metrics.warnings) == 1


def test_findings_are_logged_once_not_at_every_apply(caplog):
    driven = Driven()
    with caplog.at_level(logging.WARNING):
        driven.source.put(service(annotations={"kube2haproxy.io/balance": "fastest"}))
        driven.source.synced()
        driven.settle()
        for i in range(3):
            driven.source.put(endpoint_slice(endpoints=[f"10.1.0.{i + 1}"]))
            driven.settle()
            assert f"10.1.0.{i + 1}:8080" in driven.configs[-1]
    assert caplog.text.count("invalid value 'fastest'") == 1


def test_unchanged_services_are_not_translated_again():
    driven = Driven()
    for i in range(20):
        driven.source.put(service(f"s{i}", cluster_ips=[f"10.96.2.{i}"]))
    driven.source.synced()
    driven.settle()
    assert driven.controller.applied_model is not None
    first = {b.name: b for b in driven.controller.applied_model.backends}
    driven.source.put(endpoint_slice("s3", endpoints=["10.1.0.9"]))
    driven.settle()
    assert len(driven.configs) == 2
    assert driven.controller.applied_model is not None
    second = {b.name: b for b in driven.controller.applied_model.backends}
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


def test_endpoint_changes_go_through_the_runtime_api_without_a_reload():
    driven = Driven(RUNTIME)
    driven.start_with_one_service()
    for i in range(2, 6):
        driven.source.put(endpoint_slice(endpoints=[f"10.1.0.{i}"]))
        driven.settle(0.01)  # the runtime debounce, not the reload's
        assert backend_servers(driven.configs[-1], "default_web_http") == [f"10.1.0.{i}:8080"]
    applier = driven.applier
    assert applier.reloads == 1  # the first config only
    updates = applier.runtime_updates
    assert len(updates) == 4
    assert all(any(c.after.ip.startswith("10.1.0.") for c in u.ops.slots) for u in updates)
    assert driven.counter(driven.controller.metrics.runtime_updates, "success") == 4


def test_a_change_that_needs_a_reload_takes_its_endpoint_changes_along():
    """An endpoint change and a service change arrive together: one reload, not a runtime
    update followed by a reload (the reload waits for its longer debounce, and the endpoint
    change with it)."""
    driven = Driven(RUNTIME)
    driven.start_with_one_service()
    driven.source.put(endpoint_slice(endpoints=["10.1.0.2"]))
    driven.source.put(service(annotations={"kube2haproxy.io/balance": "leastconn"}))
    driven.settle(0.01)
    assert driven.applier.reloads == 1  # waiting for the reload's debounce
    driven.settle()
    assert driven.applier.reloads == 2
    assert driven.applier.runtime_updates == []
    assert "balance leastconn" in driven.configs[-1]
    assert backend_servers(driven.configs[-1], "default_web_http") == ["10.1.0.2:8080"]


def test_endpoints_that_outgrow_the_slots_are_added_without_a_reload():
    driven = Driven(RUNTIME)
    driven.start_with_one_service()
    # 4 endpoints and 4 free slots: 8 lines; a fifth endpoint wants 9, in blocks of 8: 16.
    driven.source.put(endpoint_slice(endpoints=[f"10.1.0.{i}" for i in range(1, 5)]))
    driven.settle(0.01)
    assert driven.configs[-1].count("    server s") == 8
    driven.source.put(endpoint_slice(endpoints=[f"10.1.0.{i}" for i in range(1, 6)]))
    driven.settle(0.01)
    assert driven.applier.reloads == 1  # the first config only
    grown = driven.applier.runtime_updates[-1]
    assert [a.server.name for a in grown.ops.adds] == [f"s{i}" for i in range(9, 17)]
    # The file is the one a reload from this cluster would load; the added lines carry the
    # options the rendered ones have.
    assert driven.configs[-1].count("    server s") == 16
    assert driven.applier.configs[-1].server_options == {"default_web_http": ""}
    assert driven.counter(driven.controller.metrics.reload_reasons, "slots") == 0


def test_a_runtime_update_that_goes_wrong_is_reloaded_instead():
    driven = Driven(RUNTIME, applier=RefusingRuntime())
    driven.start_with_one_service()
    driven.source.put(endpoint_slice(endpoints=["10.1.0.2"]))
    driven.settle(0.01)
    metrics = driven.controller.metrics
    assert driven.applier.reloads == 2
    assert driven.counter(metrics.runtime_updates, "fallback") == 1
    assert driven.counter(metrics.reload_reasons, "runtime_fallback") == 1
    assert backend_servers(driven.configs[-1], "default_web_http") == ["10.1.0.2:8080"]


def test_a_loop_that_stops_turning_is_reported_stalled():
    driven = Driven()
    assert not driven.controller.stalled(60)
    driven.clock.now += 61  # the loop never turned: no heartbeat for 61 s
    assert driven.controller.stalled(60)
    driven.controller.turn()
    assert not driven.controller.stalled(60)


def test_a_port_that_frees_up_brings_back_every_service_left_out_on_it():
    """Per-port: a wildcard socket that cannot be bound leaves out the services on that port,
    those that come later too; when it can be bound again, all of them are served."""
    host = BlockingHost({("0.0.0.0", 22)})
    settings = replace(FAST, render=replace(FAST.render, frontend_layout="per-port"))
    driven = Driven(settings, host=host)
    driven.source.put(service("a", cluster_ips=["10.96.0.1"], ports=[("ssh", 22)]))
    driven.source.put(service("web", cluster_ips=["10.96.0.9"], ports=[("http", 80)]))
    driven.source.synced()
    driven.settle(1)
    assert "port_22" not in driven.configs[-1]
    driven.source.put(service("b", cluster_ips=["10.96.0.2"], ports=[("ssh", 22)]))
    driven.settle(1)
    assert len(host.tested) >= 2
    assert "port_22" not in driven.configs[-1]

    host.blocked.clear()
    driven.settle(31)  # the retest is due: the freed port brings back both services
    assert "frontend port_22" in driven.configs[-1]
    maps = driven.applier.configs[-1].files
    routed = "".join(text for name, text in maps.items() if name.startswith("port-22-"))
    assert routed == "10.96.0.1 default_a_ssh\n10.96.0.2 default_b_ssh\n"


def test_a_changed_pool_annotation_is_applied():
    """The fast path for endpoint-only changes must not swallow a new pool address."""
    settings = replace(
        RUNTIME,
        translate=replace(RUNTIME.translate, vip_mode="pool", vip_cidr="10.200.0.0/16"),
    )
    driven = Driven(settings)
    driven.start_with_one_service()
    assert "bind 10.200.7.7:80" not in driven.configs[-1]
    driven.source.put(service(annotations={"kube2haproxy.io/vip": "10.200.7.7"}))
    driven.settle()
    assert "bind 10.200.7.7:80 transparent" in driven.configs[-1]
    assert driven.applier.reloads == 2


def test_status_says_what_waits_for_the_first_config_and_then_what_runs():
    """What the controller publishes for `status`: before the first config, every service
    waits for a reload (the first config, after the reload debounce); then it is served."""
    driven = Driven(RUNTIME)
    driven.source.put(service())
    driven.source.put(endpoint_slice(endpoints=["10.1.0.1"]))
    driven.source.synced()
    driven.settle(0.1)  # past the runtime debounce, within the reload debounce
    assert driven.configs == []
    published = driven.controller.status
    assert published.waiting is not None and published.waiting.reasons == ("initial",)
    (row,) = status.report(published, now=published.at).rows
    assert (row.state, row.reason) == ("waiting", "waiting for a reload: the first config")

    driven.settle()
    published = driven.controller.status
    assert published.waiting is None and published.applied is not None
    assert published.applied.outcome == "recorded"  # the recording applier's word
    (row,) = status.report(published, now=published.at).rows
    assert (row.state, row.backend, row.endpoints) == ("served", "default_web_http", 1)


def test_a_new_address_alone_is_applied_after_the_reload_debounce():
    """A change to a service's frontends with identical backends needs a reload; while the
    reload waits, the endpoint fast path must not take it for already applied."""
    driven = Driven(RUNTIME)
    driven.start_with_one_service()
    driven.source.put(service(externalIPs=["192.0.2.7"]))
    driven.settle()
    assert "bind 192.0.2.7:80 transparent" in driven.configs[-1]
    assert driven.applier.reloads == 2


PER_PORT = replace(RUNTIME, render=RenderSettings(frontend_layout="per-port", spare_backends=4))


def test_services_added_and_removed_at_runtime_are_what_a_whole_translation_gives():
    """The service fast path (per-port: a spare and a map entry, without translating the
    cluster) lands on the very model a whole translation of the same objects gives, through
    additions, deletions, and an address two services want (which takes the whole path)."""
    driven = Driven(PER_PORT)
    objects = {
        ("Service", "web"): service(),
        ("slice", "web"): endpoint_slice(endpoints=["10.1.0.1"]),
    }
    for obj in objects.values():
        driven.source.put(obj)
    driven.source.synced()
    driven.settle()

    def put(key: tuple[str, str], obj: JSON) -> None:
        objects[key] = obj
        driven.source.put(obj)

    def delete(key: tuple[str, str]) -> None:
        driven.source.delete(objects.pop(key))

    steps: list[Callable[[], None]] = [
        lambda: put(("Service", "a"), service("a", cluster_ips=["10.96.0.20"])),
        lambda: put(("slice", "a"), endpoint_slice("a", endpoints=["10.2.0.1"])),
        lambda: put(("Service", "b"), service("b", cluster_ips=["10.96.0.21"])),
        lambda: delete(("Service", "a")),
        # c wants web's address: it is refused (a finding), the address is contested.
        lambda: put(("Service", "c"), service("c", cluster_ips=["10.96.0.10"])),
        lambda: put(("slice", "c"), endpoint_slice("c", endpoints=["10.3.0.1"])),
        # web goes: c may have the address now (the whole path says so).
        lambda: delete(("Service", "web")),
        lambda: put(("Service", "a"), service("a", cluster_ips=["10.96.0.20"])),
    ]
    for step in steps:
        step()
        driven.settle(0.01)
        assert driven.controller.applied_model == run(*objects.values()).model
    assert driven.applier.reloads == 1  # the first config only: every step was at runtime
    deployed = driven.controller.deployed
    assert deployed is not None
    routes = deployed.routes[80]
    assert routes["10.96.0.10"] == deployed.home("default_c_http")


class DriftingApplier(RecordingApplier):
    """Reports every line of what it was last given, but the first endpoint in maintenance
    (someone put it there by hand)."""

    def observe(self, *, pause: Callable[[], None] = go_on) -> Running | None:
        deployed = self.plans[-1].deployed
        lines = {(name, s.name): s for name, b in deployed.backends.items() for s in b.servers}
        key = next(k for k, s in sorted(lines.items()) if not s.parked)
        lines[key] = lines[key]._replace(state=ServerState.PARKED)
        return Running(lines)


def test_a_drift_check_reads_beside_the_loop_and_what_is_applied_meanwhile_wins():
    """Reading what HAProxy runs takes seconds at 10,000 services: it happens beside the loop,
    which goes on applying changes; a reading older than the last apply is dropped, and the
    next check compares again."""
    deferred: list[Callable[[], None]] = []
    driven = Driven(RUNTIME, applier=DriftingApplier(), background=deferred.append)
    driven.start_with_one_service()
    assert len(deferred) == 1  # the check right after the first reload, not run yet
    driven.source.put(endpoint_slice(endpoints=["10.1.0.2"]))
    driven.settle(0.01)
    assert len(driven.applier.runtime_updates) == 1  # the loop was not held
    deferred.pop()()  # the reading comes back, older than what runs now
    driven.settle(0.01)
    corrections = driven.controller.metrics.drift_corrections.labels("runtime")
    assert corrections._value.get() == 0
    assert len(driven.applier.runtime_updates) == 1
    driven.controller.check_drift()  # the next check, on what runs now
    deferred.pop()()
    driven.settle(0.01)
    assert corrections._value.get() == 1
    fixed = driven.applier.runtime_updates[-1]
    assert fixed.reasons == (Reason.DRIFT,) and len(fixed.ops.slots) == 1


class CrowdedHost(BlockingHost):
    """Another process listens on a dozen of HAProxy's addresses (another HAProxy serving the
    same cluster, say)."""

    def __init__(self) -> None:
        super().__init__(set())
        self.asked = 0

    def shared(self, listening: Mapping[Socket, Iterable[Socket]]) -> dict[Socket, str]:
        self.asked += 1
        return {
            (f"10.96.0.{i}", 80): "another process listens there too (pid 7)" for i in range(12)
        }


def test_shared_listeners_are_looked_for_beside_the_loop_and_a_crowd_is_counted(caplog):
    """Who else listens on HAProxy's addresses is read from /proc (10,000 sockets: a second):
    by the drift check, beside the loop, not by the loop after a reload; and thousands of
    such addresses are not thousands of log lines written by the loop."""
    deferred: list[Callable[[], None]] = []
    host = CrowdedHost()
    driven = Driven(RUNTIME, host=host, background=deferred.append)
    with caplog.at_level(logging.WARNING, logger="kube2haproxy.controller"):
        driven.start_with_one_service()
        assert host.asked == 0 and len(deferred) == 1  # left to the check after the reload
        deferred.pop()()
        driven.settle(0.01)
        driven.controller.check_drift()  # the next check: the same addresses, said once
        deferred.pop()()
        driven.settle(0.01)
    assert host.asked == 2
    said = [r.getMessage() for r in caplog.records if "another process listens" in r.getMessage()]
    assert len(said) == SHARED_NAMED + 1, said
    assert said[0].startswith("10.96.0.0:80: another process listens there too (pid 7)")
    assert said[-1].startswith(f"{12 - SHARED_NAMED} more addresses")
    assert sample(driven.controller.metrics, "kube2haproxy_shared_listeners") == 12


def triggered(endpoints: list[str], at: float) -> JSON:
    """default/web's slice, as the endpoints controller writes it after a change at `at`."""
    obj = endpoint_slice(endpoints=endpoints)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(WALL + at)) + ".250000000Z"
    obj["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": stamp}
    return obj


def test_network_programming_latency_runs_from_the_trigger_time_to_serving():
    """kube-proxy's network_programming_duration_seconds: from the slice's last-change trigger
    time (the API server's clock) to the change served; and the sync, full or partial."""
    driven = Driven(RUNTIME)
    driven.start_with_one_service()
    metrics = driven.controller.metrics
    happened = driven.clock.now - 1.0  # the pod became ready a second before the event came
    driven.source.put(triggered(["10.1.0.2"], happened))
    driven.settle(0.01)
    served = driven.clock.now
    assert len(driven.applier.runtime_updates) == 1
    observed = metrics.network_programming_seconds
    assert sample(metrics, "kube2haproxy_network_programming_duration_seconds_count") == 1
    took = sample(metrics, "kube2haproxy_network_programming_duration_seconds_sum")
    stamp = math.floor(WALL + happened) + 0.25  # the annotation's second, and its fraction
    assert WALL + served - stamp - 0.02 <= took <= WALL + served - stamp  # the debounce
    assert observed is metrics.network_programming_seconds
    assert sample(metrics, "kube2haproxy_sync_partial_proxy_rules_duration_seconds_count") == 1
    assert sample(metrics, "kube2haproxy_sync_full_proxy_rules_duration_seconds_count") == 1
    # A slice without the annotation (manifests, older clusters) is not observed.
    driven.source.put(endpoint_slice(endpoints=["10.1.0.3"]))
    driven.settle(0.01)
    assert sample(metrics, "kube2haproxy_network_programming_duration_seconds_count") == 1


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


class _StartingSource(ScriptedSource):
    """A source that starts a thread as the kube source's watchers do, and is signalled between
    making its thread and starting it: where a SIGTERM once landed (tests/test_run.py)."""

    def __init__(self) -> None:
        super().__init__("starting")
        self.thread: threading.Thread | None = None

    def start(self, emit: Callable[[Event], None]) -> None:
        super().start(emit)
        self.thread = threading.Thread(target=lambda: None)
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, in this thread
        self.thread.start()

    def stop(self) -> None:
        super().stop()
        assert self.thread is not None
        self.thread.join(5)


def test_a_signal_while_a_source_starts_ends_the_loop_and_the_sources_stop_after():
    """The handler only asks the loop to end; the sources are stopped once they started. It used
    to stop them itself, joining a thread not yet started: the controller exited 70, a bug."""
    source = _StartingSource()
    controller = Controller(
        settings=FAST,
        sources=(source,),
        applier=RecordingApplier(),
        renderer=Renderer(FAST.render),
        metrics=Metrics(),
    )
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop_on_signals(controller)
        controller.start_sources()  # no RuntimeError from the handler
        assert not source.stopped
        controller.run()  # returns at once: the stop was asked for
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    controller.stop()
    assert source.stopped


def test_a_check_that_spans_a_reload_is_dropped_and_the_next_one_runs_at_once():
    """A reload while a drift check reads: the reading (and whom it found on the old sockets)
    is dropped, and the check the reload asks for, which found that one in flight, runs as
    soon as it ends, on the new sockets; not a whole interval later."""
    deferred: list[Callable[[], None]] = []
    host = CrowdedHost()
    driven = Driven(RUNTIME, host=host, background=deferred.append)
    driven.start_with_one_service()
    assert len(deferred) == 1  # the check after the first reload, still reading
    reloads = driven.controller.reloads
    driven.source.put(service("other", cluster_ips=["10.96.0.11"]))
    driven.source.put(endpoint_slice("other", endpoints=["10.1.0.9"]))
    driven.settle()
    assert driven.controller.reloads == reloads + 1  # a new frontend: a reload
    assert len(deferred) == 1  # its check found the first one in flight
    deferred.pop()()  # the first reading ends, older than what runs now
    driven.settle(0.01)
    assert driven.controller.metrics.shared_listeners._value.get() == 0  # not reported
    assert len(deferred) == 1  # the next check, at once
    deferred.pop()()
    driven.settle(0.01)
    assert driven.controller.metrics.shared_listeners._value.get() == 12
