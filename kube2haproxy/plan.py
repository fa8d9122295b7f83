"""plan: what must happen to go from the model HAProxy runs to the model it should run.

Pure: compares two models and says nothing, or reload, with the reasons an operator reads in the
log ("services added: shop/web; endpoints changed in 2 backends"). Endpoint-only changes are told
apart from everything else, so that they can be applied without a reload.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TypeVar

from kube2haproxy.model import Backend, Frontend, Model

MAX_NAMES = 3  # services named in one reason; the rest are counted

_BACKEND_SETTINGS = tuple(f.name for f in fields(Backend) if f.name != "servers")


class Action(StrEnum):
    NONE = "none"
    RELOAD = "reload"


@dataclass(frozen=True, slots=True)
class Changes:
    """Differences between two models. Proxies of added or removed services are not listed
    again under frontends or backends."""

    services_added: tuple[str, ...] = ()  # "namespace/name"
    services_removed: tuple[str, ...] = ()
    frontends_changed: tuple[str, ...] = ()  # added, removed, or binds/timeouts/access differ
    backends_changed: tuple[str, ...] = ()  # added, removed, or settings other than servers
    servers_changed: tuple[str, ...] = ()  # same settings, different servers
    globals_changed: bool = False

    @property
    def empty(self) -> bool:
        return self == Changes()

    @property
    def servers_only(self) -> bool:
        """Only endpoints moved: the change a runtime update can apply without a reload."""
        return bool(self.servers_changed) and self == Changes(servers_changed=self.servers_changed)


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    changes: Changes
    reasons: tuple[str, ...]


def plan(old: Model | None, new: Model, *, globals_changed: bool = False) -> Plan:
    """NONE when nothing differs, else RELOAD with its reasons. `old` is None before the first
    apply; `globals_changed` says the settings rendered outside the model changed."""
    if old is None:
        return Plan(Action.RELOAD, Changes(globals_changed=True), ("initial config",))
    changes = diff(old, new, globals_changed=globals_changed)
    if changes.empty:
        return Plan(Action.NONE, changes, ())
    return Plan(Action.RELOAD, changes, reasons(changes))


def diff(old: Model, new: Model, *, globals_changed: bool = False) -> Changes:
    old_services = {f"{e.namespace}/{e.name}" for e in old.services}
    new_services = {f"{e.namespace}/{e.name}" for e in new.services}
    churn = old_services ^ new_services  # their proxies are covered by "services added/removed"

    backends_changed, servers_changed = [], []
    for name, before, after in _differing(
        {b.name: b for b in old.backends}, {b.name: b for b in new.backends}, churn
    ):
        if before is None or after is None or _settings(before) != _settings(after):
            backends_changed.append(name)
        else:
            servers_changed.append(name)  # equal settings, different objects: the servers

    return Changes(
        services_added=tuple(sorted(new_services - old_services)),
        services_removed=tuple(sorted(old_services - new_services)),
        frontends_changed=tuple(
            name
            for name, _, _ in _differing(
                {f.name: f for f in old.frontends}, {f.name: f for f in new.frontends}, churn
            )
        ),
        backends_changed=tuple(backends_changed),
        servers_changed=tuple(servers_changed),
        globals_changed=globals_changed,
    )


def reasons(changes: Changes) -> tuple[str, ...]:
    out = []
    if changes.globals_changed:
        out.append("global settings changed")
    for label, names in (
        ("services added", changes.services_added),
        ("services removed", changes.services_removed),
    ):
        if names:
            more = f" (+{len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else ""
            out.append(f"{label}: {', '.join(names[:MAX_NAMES])}{more}")
    for label, names in (
        ("frontends changed", changes.frontends_changed),
        ("backend settings changed", changes.backends_changed),
        ("endpoints changed", changes.servers_changed),
    ):
        if names:
            out.append(f"{label}: {len(names)}")
    return tuple(out)


def _settings(backend: Backend) -> tuple[object, ...]:
    return tuple(getattr(backend, name) for name in _BACKEND_SETTINGS)


P = TypeVar("P", Frontend, Backend)


def _differing(
    old: Mapping[str, P], new: Mapping[str, P], churn: set[str]
) -> Iterator[tuple[str, P | None, P | None]]:
    """(name, before, after) of the proxies that differ, in name order, leaving out those of
    services added or removed as a whole (`churn`). Unchanged proxies are usually the very same
    objects (the translate cache), so identity settles most of them at no cost."""
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before is after:
            continue
        owner = before if before is not None else after
        assert owner is not None
        if f"{owner.namespace}/{owner.service}" not in churn and before != after:
            yield name, before, after
