"""The kube source with the official client over real HTTP against a local server that speaks
the API's list and watch protocol (testkit/fakeapi/): pagination, watch from the list's version,
bookmarks, 410 Gone and relists with deletions, dropped and dead connections, API errors."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from kube2haproxy.events import Event
from kube2haproxy.metrics import Metrics
from kube2haproxy.settings import KubeSettings
from kube2haproxy.sources.kube import KubeSource, api_client
from testkit.builders import endpoint_slice, endpoints_v1, service
from testkit.fakeapi import Failure, FakeKubeAPI, RequestRecord, ResourceType, Selector
from testkit.fakeapi.handler import Handler
from testkit.fakeapi.watch import Watch
from tests.live import wait_for

FAST = KubeSettings(page_size=2, watch_timeout_ms=2_000, backoff_max_ms=200)


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server


@contextmanager
def watching(
    api: FakeKubeAPI, tmp_path: Path, settings: KubeSettings = FAST, *, read_grace_s: float = 1.0
) -> Iterator[tuple[KubeSource, queue.SimpleQueue[Event], Metrics]]:
    config = replace(settings, kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"))
    metrics = Metrics()
    source = KubeSource(
        config, client=api_client(config), metrics=metrics, read_grace_s=read_grace_s
    )
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    source.start(events.put)
    try:
        yield source, events, metrics
    finally:
        source.stop()


def take(
    events: queue.SimpleQueue[Event], count: int, *, timeout: float = 10.0
) -> list[tuple[str, str, str]]:
    got: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {got}"
        try:
            event = events.get(timeout=remaining)
        except queue.Empty:
            continue
        got.append((event.type.value, event.source, str(event.key) if event.key else ""))
    return got


def quiet(events: queue.SimpleQueue[Event], seconds: float = 0.5) -> list[Event]:
    time.sleep(seconds)
    extra = []
    while True:
        try:
            extra.append(events.get_nowait())
        except queue.Empty:
            return extra


def synced(events: queue.SimpleQueue[Event], count_objects: int) -> list[tuple[str, str, str]]:
    got = take(events, count_objects + 2)
    assert sorted(e for e in got if e[0] == "SYNCED") == [
        ("SYNCED", "kube/endpointslices", ""),
        ("SYNCED", "kube/services", ""),
    ]
    return [e for e in got if e[0] != "SYNCED"]


def test_paginated_list_then_watch(api, tmp_path):
    for i in range(5):
        obj = service(f"s{i}", "shop")
        obj["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:x": {}}}]
        api.put(obj)
    api.put(endpoint_slice("s0", "shop", endpoints=["10.1.0.1"]))
    listed_at = api.resource_version
    with watching(api, tmp_path) as (source, events, _):
        initial = synced(events, 6)
        assert sorted(e[2] for e in initial) == sorted(
            [f"shop/s{i}" for i in range(5)] + ["shop/s0-abc12"]
        )
        lists = [r for r in api.requests if r.path == "/api/v1/services" and "watch" not in r.query]
        assert [r.query.get("limit") for r in lists] == ["2", "2", "2"]
        assert lists[1].query.get("continue") and lists[2].query.get("continue")

        api.wait_for_watch("services")
        watch = next(r for r in api.requests if r.path == "/api/v1/services" and "watch" in r.query)
        assert watch.query["allowWatchBookmarks"] == "true"
        assert watch.query["resourceVersion"] == listed_at
        assert 2 <= int(watch.query["timeoutSeconds"]) < 4

        api.put(service("s9", "shop"))
        modified = service("s1", "shop", annotations={"x": "y"})
        api.put(modified)
        api.delete("Service", "shop", "s2")
        assert take(events, 3) == [
            ("ADDED", "kube/services", "shop/s9"),
            ("MODIFIED", "kube/services", "shop/s1"),
            ("DELETED", "kube/services", "shop/s2"),
        ]
    for watcher in source.watchers:
        assert watcher.lists == 1
    assert source.names == ("kube/services", "kube/endpointslices")


def test_objects_carry_kind_and_lose_managed_fields(api, tmp_path):
    obj = service("web")
    obj["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    api.put(obj)
    with watching(api, tmp_path) as (_, events, _):
        deadline = time.monotonic() + 5
        while True:
            event = events.get(timeout=max(0.01, deadline - time.monotonic()))
            if event.obj is not None:
                break
        assert event.obj["kind"] == "Service" and event.obj["apiVersion"] == "v1"
        assert "managedFields" not in event.obj["metadata"]


def test_bookmarks_and_dropped_connections_resume_from_the_last_version(api, tmp_path):
    api.put(service("web"))
    with watching(api, tmp_path) as (source, events, metrics):
        synced(events, 1)
        api.wait_for_watch("services")
        api.put(endpoint_slice(endpoints=["10.1.0.1"]))  # advances the global version
        assert take(events, 1) == [("ADDED", "kube/endpointslices", "default/web-abc12")]
        api.bookmark("services")
        version = api.resource_version
        services = source.watchers[0]
        wait_for(lambda: services.resource_version == version)
        api.drop_watches("services")
        wait_for(lambda: len(_watches(api, "services")) >= 2)
        assert _watches(api, "services")[-1].query["resourceVersion"] == version
        api.put(service("api", cluster_ips=["10.96.0.11"]))
        assert take(events, 1) == [("ADDED", "kube/services", "default/api")]
        assert quiet(events) == []  # nothing replayed twice
        assert services.lists == 1  # resumed, not relisted
        assert metrics.watch_restarts.labels("services", "error")._value.get() >= 1


def test_gone_relists_and_emits_what_changed_while_away(api, tmp_path):
    for name in ("keep", "change", "remove"):
        api.put(service(name, cluster_ips=None))
    with watching(api, tmp_path) as (source, events, metrics):
        synced(events, 3)
        api.wait_for_watch("services")
        api.hang_watches("services")  # we stop hearing anything...
        api.put(service("change", cluster_ips=None, annotations={"v": "2"}))
        api.delete("Service", "default", "remove")
        api.put(service("new", cluster_ips=None))
        api.compact()  # ...and the versions we hold expire
        api.unhang()
        api.drop_watches("services")
        got = sorted(take(events, 3))
        assert got == [
            ("ADDED", "kube/services", "default/new"),
            ("DELETED", "kube/services", "default/remove"),
            ("MODIFIED", "kube/services", "default/change"),
        ]
        assert quiet(events) == []  # "keep" did not change: not re-emitted
        assert source.watchers[0].lists == 2
        assert metrics.watch_restarts.labels("services", "expired")._value.get() == 1


def test_a_dead_connection_is_noticed_by_the_client_timeout(api, tmp_path):
    api.put(service("web"))
    with watching(api, tmp_path, read_grace_s=0.5) as (_source, events, _):
        synced(events, 1)
        api.wait_for_watch("services")
        first = len(_watches(api, "services"))
        api.hang_watches("services")
        # The server would end the watch after timeoutSeconds; a dead peer never does. The
        # client's read timeout (timeoutSeconds + grace) gives up and watches again.
        wait_for(lambda: len(_watches(api, "services")) > first, timeout=10)
        api.unhang()
        api.put(service("api", cluster_ips=["10.96.0.11"]))
        assert take(events, 1) == [("ADDED", "kube/services", "default/api")]


def test_api_errors_are_retried_with_backoff(api, tmp_path):
    api.put(service("web"))
    api.fail_next("services", status=500, times=3)
    with watching(api, tmp_path) as (_, events, metrics):
        synced(events, 1)
        assert metrics.watch_restarts.labels("services", "error")._value.get() == 3


class ExpiringAPI(FakeKubeAPI):
    """Expires every continue token right after the first page of the first services list."""

    expired = False

    def _record(self, record: RequestRecord) -> None:
        super()._record(record)
        if not self.expired and record.path == "/api/v1/services" and "continue" in record.query:
            self.expired = True
            self.expire_continue_tokens()


def test_expired_continue_token_restarts_the_list(tmp_path):
    with ExpiringAPI() as api:
        for i in range(6):
            api.put(service(f"s{i}", cluster_ips=None))
        with watching(api, tmp_path) as (_source, events, _):
            names = sorted(e[2] for e in synced(events, 6))
            assert names == [f"default/s{i}" for i in range(6)]
            assert quiet(events) == []
        lists = [r for r in api.requests if r.path == "/api/v1/services" and not r.watch]
        assert api.expired and [("continue" in r.query) for r in lists] == [
            False,
            True,
            False,
            True,
            True,
        ]


def test_label_selector_and_namespace(api, tmp_path):
    api.put(service("web", "shop", labels={"tier": "front"}))
    api.put(service("db", "shop", labels={"tier": "data"}, cluster_ips=None))
    api.put(service("web", "other", labels={"tier": "front"}))
    api.put(endpoint_slice("db", "shop", endpoints=["10.1.0.1"]))
    settings = KubeSettings(
        namespace="shop",
        label_selector="tier=front",
        page_size=10,
        watch_timeout_ms=2_000,
        backoff_max_ms=200,
    )
    with watching(api, tmp_path, settings) as (_, events, _):
        got = synced(events, 2)
        assert sorted(e[2] for e in got) == ["shop/db-abc12", "shop/web"]
    paths = {r.path for r in api.requests}
    assert paths == {
        "/api/v1/namespaces/shop/services",
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
    }
    selectors = {r.path: r.query.get("labelSelector") for r in api.requests}
    assert selectors == {
        "/api/v1/namespaces/shop/services": "tier=front",
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices": None,
    }


def test_endpoints_are_watched_only_when_asked(api, tmp_path):
    api.put(endpoints_v1("legacy", ready=["10.2.0.1"]))
    with watching(api, tmp_path, replace(FAST, watch_endpoints=True)) as (source, events, _):
        got = take(events, 4)
        assert ("ADDED", "kube/endpoints", "default/legacy") in got
        assert source.names == ("kube/services", "kube/endpointslices", "kube/endpoints")


def _watches(api: FakeKubeAPI, resource: str) -> list[RequestRecord]:
    return [r for r in api.requests if r.resource == resource and r.watch]


class QuirkyAPI(FakeKubeAPI):
    """Watches that end at once with nothing (a broken proxy), or refused with HTTP 410."""

    empty_watches = False
    gone_watches = 0

    def _open_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: Selector,
        version: str | None,
        bookmarks: bool,
        deadline: float | None,
        handler: Handler,
    ) -> Watch:
        if self.gone_watches and rt.resource == "services":
            self.gone_watches -= 1
            raise Failure(410, "too old resource version", "Expired")
        watch = super()._open_watch(rt, namespace, selector, version, bookmarks, deadline, handler)
        if self.empty_watches:
            watch.finish = True
        return watch


def test_watches_that_end_at_once_back_off_instead_of_spinning(tmp_path):
    with QuirkyAPI() as api:
        api.empty_watches = True
        api.put(service("web"))
        with watching(api, tmp_path, replace(FAST, backoff_max_ms=1000)) as (_, events, metrics):
            synced(events, 1)
            time.sleep(2.0)
            watches = len(_watches(api, "services"))
        # Without a backoff: thousands in 2 s (one per round trip). With it (full jitter, up to
        # 1 s): a few, at most a few dozen.
        assert 2 <= watches <= 30, watches
        assert metrics.watch_restarts.labels("services", "error")._value.get() >= 2


def test_http_410_on_the_watch_request_relists(tmp_path):
    with QuirkyAPI() as api:
        api.put(service("web"))
        api.gone_watches = 1
        with watching(api, tmp_path) as (source, events, metrics):
            synced(events, 1)
            wait_for(lambda: source.watchers[0].lists == 2)
            api.put(service("api", cluster_ips=["10.96.0.11"]))
            assert take(events, 1) == [("ADDED", "kube/services", "default/api")]
        assert metrics.watch_restarts.labels("services", "expired")._value.get() == 1
