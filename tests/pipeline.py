"""Shortcuts through the pure pipeline for table-driven tests: builder objects (testkit.builders)
translated and rendered; what tests read back from a translation or a rendered config; and a
source a test drives by hand."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from kube2haproxy.events import Event, EventType
from kube2haproxy.model import Model
from kube2haproxy.render import Renderer
from kube2haproxy.resources import key_of, kind_of
from kube2haproxy.settings import RenderSettings, TranslateSettings
from kube2haproxy.sources.manifests import Manifests
from kube2haproxy.store import Store
from kube2haproxy.translate import Translation, translate
from testkit.builders import JSON, store_of


def run_loaded(*objects: Any, **settings: Any) -> Translation:
    """Through the manifests loader, which drops unsupported kinds and nameless objects."""
    loaded = Manifests()
    loaded.add("test", objects)
    store = Store()
    for (kind, key), obj in loaded.objects.items():
        store.put(kind, key, obj)
    return translate(store.snapshot(), TranslateSettings(**settings))


def run(*objects: JSON, **settings: Any) -> Translation:
    return translate(store_of(objects).snapshot(), TranslateSettings(**settings))


@functools.lru_cache(maxsize=8)
def renderer(settings: RenderSettings) -> Renderer:
    """Compiling the templates takes ~50 ms; property tests render thousands of models."""
    return Renderer(settings)


def render(model: Model, **settings: Any) -> str:
    return renderer(RenderSettings(**settings)).render(model)


def servers(translation: Translation, backend: str, state: str = "ready") -> list[str]:
    """The `ip:port` of the servers of a backend in that state (ready by default), sorted: slots
    place them by hash, tests care about the set."""
    for b in translation.model.backends:
        if b.name == backend:
            return sorted(s.address for s in b.servers if s.state == state)
    raise AssertionError(
        f"no backend {backend}; have {[b.name for b in translation.model.backends]}"
    )


def fields_of(translation: Translation) -> list[tuple[str, str, str]]:
    """(severity, subject, field) of every finding: what tests assert on."""
    return [(f.severity.value, f.subject, f.field) for f in translation.findings]


class ScriptedSource:
    """A source the test drives by hand."""

    def __init__(self, name: str = "test") -> None:
        self.names: tuple[str, ...] = (name,)
        self.emit: Callable[[Event], None] = lambda _e: None
        self.stopped = False

    def start(self, emit: Callable[[Event], None]) -> None:
        self.emit = emit

    def stop(self) -> None:
        self.stopped = True

    def put(self, obj: JSON) -> None:
        kind = kind_of(obj)
        assert kind is not None
        self.emit(Event(EventType.MODIFIED, self.names[0], kind, key_of(obj), obj))

    def delete(self, obj: JSON) -> None:
        kind = kind_of(obj)
        assert kind is not None
        self.emit(Event(EventType.DELETED, self.names[0], kind, key_of(obj), obj))

    def synced(self) -> None:
        self.emit(Event(EventType.SYNCED, self.names[0]))


def backend_servers(text: str, backend: str) -> list[str]:
    """The endpoints of a backend in rendered config text: `ip:port`, plus `weight 0` for a
    draining one (the state words that follow the address; the options every line of the
    backend carries are left out), parked slots left out, sorted."""
    section = text.split(f"\nbackend {backend}\n", 1)[1].split("\n\n", 1)[0]
    lines = [line.split() for line in section.splitlines() if line.startswith("    server ")]
    return sorted(
        " ".join(words[2:5] if words[3:5] == ["weight", "0"] else words[2:3])
        for words in lines
        if words[3:4] != ["disabled"]
    )


def server_line(text: str, address: str) -> str:
    """The whole `server` line of an endpoint in rendered config text."""
    match = re.search(rf"^    server s\d+ {re.escape(address)}\b.*$", text, re.M)
    assert match is not None, address
    return match.group(0)
