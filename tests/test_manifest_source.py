"""The manifests as a live source: the initial state then SYNCED, edits followed with watchdog,
deletions, and a file that stops parsing keeping its last good content."""

from __future__ import annotations

import contextlib
import queue
import time
from pathlib import Path

import yaml

from kube2haproxy.manifests import ManifestSource
from kube2haproxy.resources import Key, Kind
from kube2haproxy.store import Event
from tests.builders import endpoint_slice, service


def dump(path: Path, *objects: dict) -> None:
    tmp = path.with_suffix(".partial")
    tmp.write_text(yaml.safe_dump_all(objects))
    tmp.rename(path)  # as editors and kubectl do: atomically


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
    dump(web, service("web"), endpoint_slice("web", endpoints=["10.1.0.1"]))
    dump(api, service("api", cluster_ips=["10.96.0.11"]))
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
        dump(web, service("web"), endpoint_slice("web", endpoints=["10.1.0.2"]))
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
        dump(path, service("web"))
        assert drain(events) == [("ADDED", "Service", "default/web")]
    finally:
        source.stop()
    assert source._emitted == {(Kind.SERVICE, Key("default", "web")): service("web")}
