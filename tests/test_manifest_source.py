"""The manifests as a live source: the initial state then SYNCED, edits followed with watchdog,
deletions, and a file that stops parsing keeping its last good content."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from kube2haproxy.events import Event
from kube2haproxy.resources import JSON, Key, Kind, prune
from kube2haproxy.sources.manifests import ManifestSource, _Poke, load
from testkit.builders import endpoint_slice, service, write_manifests
from tests.live import wait_for
from tests.test_manifests import alias_bomb


def drain(
    events: queue.SimpleQueue[Event], *, wait: float = 5.0, until: int = 1
) -> list[tuple[str, str, str]]:
    """At least `until` events (within `wait`), then whatever follows within 0.5 s."""
    got: list[Event] = []
    deadline = time.monotonic() + wait
    while len(got) < until and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            got.append(events.get(timeout=0.05))
    settle = time.monotonic() + 0.5
    while time.monotonic() < settle:
        with contextlib.suppress(queue.Empty):
            got.append(events.get(timeout=0.05))
    return [
        (e.type.value, e.kind.value if e.kind else "", str(e.key) if e.key else "") for e in got
    ]


def test_initial_state_edits_deletions_and_broken_files(tmp_path):
    web, api = tmp_path / "web.yaml", tmp_path / "sub" / "api.yaml"
    api.parent.mkdir()
    write_manifests(web, service("web"), endpoint_slice("web", endpoints=["10.1.0.1"]))
    write_manifests(api, service("api", cluster_ips=["10.96.0.11"]))
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    source = ManifestSource([str(tmp_path)], debounce_s=0.05)
    source.start(events.put)
    try:
        assert drain(events, until=4) == [
            ("ADDED", "Service", "default/api"),
            ("ADDED", "Service", "default/web"),
            ("ADDED", "EndpointSlice", "default/web-abc12"),
            ("SYNCED", "", ""),
        ]
        write_manifests(web, service("web"), endpoint_slice("web", endpoints=["10.1.0.2"]))
        assert drain(events) == [("MODIFIED", "EndpointSlice", "default/web-abc12")]

        api.write_text("kind: Service\nmetadata: {name: api\n")  # half-saved, broken
        assert drain(events, wait=1.0, until=0) == []  # its last good content is kept

        api.unlink()
        assert drain(events) == [("DELETED", "Service", "default/api")]

        (tmp_path / "notes.txt").write_text("not a manifest")
        assert drain(events, wait=1.0, until=0) == []
    finally:
        source.stop()


def test_a_broken_file_at_start_is_skipped_until_it_parses(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("{{{ not yaml")
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    source = ManifestSource([str(path)], debounce_s=0.05)
    source.start(events.put)
    try:
        assert drain(events, until=1) == [("SYNCED", "", "")]
        write_manifests(path, service("web"))
        assert drain(events) == [("ADDED", "Service", "default/web")]
    finally:
        source.stop()
    assert source._emitted == {(Kind.SERVICE, Key("default", "web")): service("web")}


def test_reading_the_files_is_not_a_change(tmp_path):
    """watchdog reports files opened and closed unwritten; the source's own reads are such
    events, so counting them re-read every file forever."""
    path = tmp_path / "cluster.yaml"
    write_manifests(path, service("web"), endpoint_slice("web", endpoints=["10.1.0.1"]))
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    source = ManifestSource([str(tmp_path)], debounce_s=0.05, max_delay_s=0.5)
    source.start(events.put)
    try:
        assert len(drain(events, until=3)) == 3
        assert (source.parses, source.syncs) == (1, 1)
        for _ in range(20):  # another program reading the file
            path.read_bytes()
            time.sleep(0.02)
        assert drain(events, wait=0.5, until=0) == []
        assert (source.parses, source.syncs) == (1, 1)

        write_manifests(path, service("web"), endpoint_slice("web", endpoints=["10.1.0.2"]))
        assert drain(events) == [("MODIFIED", "EndpointSlice", "default/web-abc12")]
        assert drain(events, wait=0.5, until=0) == []  # its own read of the edit is no edit
        assert (source.parses, source.syncs) == (2, 2)

        path.touch()  # a new mtime, the same bytes: looked at, not parsed
        os.utime(path)
        assert drain(events, wait=0.5, until=0) == []
        assert source.parses == 2
    finally:
        source.stop()


def test_a_broken_file_is_reported_once_per_content(tmp_path, caplog):
    path = tmp_path / "cluster.yaml"
    write_manifests(path, service("web"))
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    source = ManifestSource([str(tmp_path)], debounce_s=0.05, max_delay_s=0.5)
    caplog.set_level(logging.WARNING, logger="kube2haproxy.sources.manifests")
    source.start(events.put)

    def reports() -> int:
        return sum("invalid YAML" in r.getMessage() for r in caplog.records)

    try:
        assert len(drain(events, until=2)) == 2
        path.write_text("kind: Service\nmetadata: {name: web\n")
        wait_for(lambda: reports() == 1, what="the broken file reported")
        for _ in range(10):  # reads, touches: the same broken content
            path.read_bytes()
            os.utime(path)
            time.sleep(0.03)
        assert drain(events, wait=0.5, until=0) == []
        assert reports() == 1
        path.write_text("kind: Service\nmetadata: {name: [web\n")  # broken otherwise
        wait_for(lambda: reports() == 2, what="the new content reported")
        assert "keeping its last good content" in caplog.records[-1].getMessage()
    finally:
        source.stop()


def test_a_file_rewritten_without_pause_is_followed_within_the_maximum_delay(tmp_path):
    """The debounce waits for a quiet moment, but never longer than max_delay_s: a file
    rewritten every 100 ms must not hold its changes back until the writes stop."""
    path = tmp_path / "cluster.yaml"
    write_manifests(path, service("web"), endpoint_slice("web", endpoints=["10.1.0.1"]))
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    source = ManifestSource([str(tmp_path)], debounce_s=0.2, max_delay_s=0.5)
    source.start(events.put)
    stop = threading.Event()

    def rewrite() -> None:
        n = 2
        while not stop.wait(0.1):  # shorter than the debounce: never quiet
            write_manifests(path, service("web"), endpoint_slice("web", endpoints=[f"10.1.0.{n}"]))
            n = n % 250 + 2

    writer = threading.Thread(target=rewrite, daemon=True)
    try:
        assert len(drain(events, until=3)) == 3
        writer.start()
        first = events.get(timeout=10)
        still_writing = writer.is_alive()
        assert (first.type.value, str(first.key)) == ("MODIFIED", "default/web-abc12")
        assert still_writing  # arrived while the writes went on
    finally:
        stop.set()
        writer.join(timeout=5)
        source.stop()


def test_an_alias_bomb_among_the_files_is_refused_and_the_rest_served(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="kube2haproxy.sources.manifests")
    write_manifests(tmp_path / "web.yaml", service("web"))
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    source = ManifestSource([str(tmp_path)], debounce_s=0.05)
    source.start(events.put)
    try:
        assert drain(events, until=2) == [("ADDED", "Service", "default/web"), ("SYNCED", "", "")]
        assert any("bomb.yaml:1:1: YAML aliases refused" in r.getMessage() for r in caplog.records)
    finally:
        source.stop()


@pytest.mark.parametrize(
    ("event", "change"),
    [
        (FileOpenedEvent("/m/a.yaml"), False),  # our own reads, among others'
        (FileClosedNoWriteEvent("/m/a.yaml"), False),
        (FileModifiedEvent("/m/a.yaml"), True),
        (FileClosedEvent("/m/a.yaml"), True),  # closed after a write
        (FileCreatedEvent("/m/b.yml"), True),
        (FileDeletedEvent("/m/a.json"), True),
        (FileMovedEvent("/m/.a.yaml.tmp", "/m/a.yaml"), True),  # an editor's atomic save
        (FileModifiedEvent("/m/notes.txt"), False),  # not a manifest
        (DirModifiedEvent("/m"), False),  # follows every entry's own event
        (DirCreatedEvent("/m/sub"), True),  # may carry manifests
        (DirMovedEvent("/m/old", "/m/new"), True),
    ],
)
def test_only_writes_creations_deletions_and_moves_are_changes(event, change):
    changed = threading.Event()
    _Poke(changed).on_any_event(event)
    assert changed.is_set() is change


def synced_objects(source: ManifestSource) -> dict[tuple[Kind, Key], JSON]:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    source.start(events.put)
    source.stop()
    got = {}
    while not events.empty():
        event = events.get()
        if event.kind is not None and event.key is not None and event.obj is not None:
            got[(event.kind, event.key)] = event.obj
    return got


def api_objects() -> list[JSON]:
    """A Service and its EndpointSlice as the API returns them (selector, targetRefs, nodeNames,
    zones), and a Service with a port shaped like a Service (a dict a decoder's hook, seeing
    no nesting, would take for an object)."""
    web = service("web")
    web["spec"]["selector"] = {"app": "web"}
    slice_ = endpoint_slice("web", endpoints=["10.1.0.1", "10.1.0.2"])
    for i, item in enumerate(slice_["endpoints"]):
        item["targetRef"] = {"kind": "Pod", "name": f"web-{i}", "namespace": "default"}
        item["nodeName"], item["zone"] = "node-1", "a"
    odd = service("odd", cluster_ips=["10.96.0.11"])
    odd["spec"]["ports"][0].update(kind="Service", apiVersion="v1", metadata={"name": "x"})
    return [web, slice_, odd]


def test_the_live_source_keeps_objects_cut_down_to_what_is_read(tmp_path):
    """As the kube source does (resources.cut), while the JSON is decoded; a dict shaped like
    an object inside another is read as written, as `load` reads it."""
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": api_objects()}))
    source = ManifestSource([str(path)])
    got = synced_objects(source)
    loaded = load([str(path)]).objects
    assert got == {ident: prune(ident[0], obj) for ident, obj in loaded.items()}
    assert got != loaded  # something was cut: not vacuous
    odd = got[(Kind.SERVICE, Key("default", "odd"))]
    assert odd["spec"]["ports"][0]["port"] == 80 and "metadata" in odd["spec"]["ports"][0]
    assert source.redecodes == 1  # the odd port: the file read again, as written


def test_slices_owned_by_a_service_are_cut_in_one_decoding(tmp_path):
    """Every EndpointSlice the API makes names its owner (apiVersion and kind, no metadata):
    not an object to cut, so the file is decoded once, cut as it goes."""
    web, slice_, _ = api_objects()
    owner = {"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "u-1"}
    mirror = {"apiVersion": "v1", "kind": "Endpoints", "name": "web", "uid": "u-2"}
    slice_["metadata"]["ownerReferences"] = [{**owner, "controller": True}, mirror]
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [web, slice_]}))
    source = ManifestSource([str(path)])
    got = synced_objects(source)
    assert source.redecodes == 0
    loaded = load([str(path)]).objects
    assert got == {ident: prune(ident[0], obj) for ident, obj in loaded.items()}


def test_the_live_source_cuts_an_endpoint_shared_by_yaml_aliases_once(tmp_path):
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-a, namespace: default, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints:
  - &pod {addresses: [10.1.0.1], nodeName: node-1, targetRef: {kind: Pod, name: web-0}}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-b, namespace: default, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints: [*pod]
"""
    path = tmp_path / "slices.yaml"
    path.write_text(text)
    got = synced_objects(ManifestSource([str(path)]))
    assert [o["endpoints"][0].get("targetRef") for o in got.values()] == ["Pod/web-0"] * 2
    loaded = load([str(path)]).objects
    assert got == {ident: prune(ident[0], obj) for ident, obj in loaded.items()}
