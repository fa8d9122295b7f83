"""events: what a source tells the controller (an object added, modified or deleted; a source
synced), and the `Source` protocol the controller drives the sources by (sources/). Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from kube2haproxy.resources import JSON, Key, Kind


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    SYNCED = "SYNCED"  # the source has delivered its whole initial state


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    source: str
    kind: Kind | None = None
    key: Key | None = None
    obj: JSON | None = None


def differences(
    source: str,
    before: Mapping[tuple[Kind, Key], JSON],
    after: Mapping[tuple[Kind, Key], JSON],
    *,
    same: Callable[[JSON, JSON], bool],
) -> Iterator[Event]:
    """The events that turn what a source emitted (`before`) into its new state (`after`),
    deletions included: how a source that reads everything again (a relist, files edited)
    reports only what changed. `same` says whether two versions of an object are equal."""
    for (kind, key), obj in after.items():
        old = before.get((kind, key))
        if old is None:
            yield Event(EventType.ADDED, source, kind, key, obj)
        elif not same(old, obj):
            yield Event(EventType.MODIFIED, source, kind, key, obj)
    for (kind, key), old in before.items():
        if (kind, key) not in after:
            yield Event(EventType.DELETED, source, kind, key, old)


Emit = Callable[[Event], None]


class Source(Protocol):
    """Something that turns the outside world into events: kube watches, manifest files."""

    names: tuple[str, ...]  # each sends one SYNCED event under its name

    def start(self, emit: Emit) -> None: ...

    def stop(self) -> None: ...
