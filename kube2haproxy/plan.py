"""plan: what must happen to go from the model HAProxy runs to the model it should run.

Pure: compares two models and says nothing, runtime updates, or reload, with the reasons an
operator reads in the log ("services added: shop/web; endpoints changed: 2"). A change that only
moves endpoints within the existing slots is applied through the runtime API (the commands are
part of the plan); anything else (a new service or port, a changed annotation, a slot count that
changed, global settings) needs a reload.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from kube2haproxy import slots
from kube2haproxy.model import Backend, Frontend, Model, Server, ServerState, hostport

MAX_NAMES = 3  # services named in one reason; the rest are counted


class Action(StrEnum):
    NONE = "none"
    RUNTIME = "runtime"
    RELOAD = "reload"


@dataclass(frozen=True, slots=True)
class Changes:
    """Differences between two models. Proxies of added or removed services are not listed
    again under frontends or backends."""

    services_added: tuple[str, ...] = ()  # "namespace/name"
    services_removed: tuple[str, ...] = ()
    frontends_changed: tuple[str, ...] = ()  # added, removed, or binds/timeouts/access differ
    backends_changed: tuple[str, ...] = ()  # added, removed, or settings other than servers
    slots_changed: tuple[str, ...] = ()  # same settings, another number of server slots
    servers_changed: tuple[str, ...] = ()  # same settings and slots, different servers
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
    commands: tuple[str, ...] = ()  # runtime API commands (RUNTIME only)


def plan(old: Model | None, new: Model, *, globals_changed: bool = False) -> Plan:
    """NONE when nothing differs, else RELOAD with its reasons. `old` is None before the first
    apply; `globals_changed` says the settings rendered outside the model changed."""
    if old is None:
        return Plan(Action.RELOAD, Changes(globals_changed=True), ("initial config",))
    changes = diff(old, new, globals_changed=globals_changed)
    if changes.empty:
        return Plan(Action.NONE, changes, ())
    if changes.servers_only:
        before = {b.name: b for b in old.backends}
        after = {b.name: b for b in new.backends}
        commands = tuple(
            command
            for name in changes.servers_changed
            for command in runtime_commands(before[name], after[name])
        )
        return Plan(Action.RUNTIME, changes, reasons(changes), commands)
    return Plan(Action.RELOAD, changes, reasons(changes))


def fit(old: Model | None, new: Model) -> Model:
    """`new`, with the backends whose only change is their endpoints (and whose endpoints fit
    in the slots they run with) kept at their running slot count: a scale-down, or a scale-up
    that eats into the free slots, then needs no reload. Anything else is left as translated."""
    if old is None:
        return new
    changes = diff(old, new)
    if not changes.slots_changed or not (
        changes.servers_only
        or changes
        == Changes(slots_changed=changes.slots_changed, servers_changed=changes.servers_changed)
    ):
        return new
    running = {b.name: b for b in old.backends}
    resized = {}
    for name in changes.slots_changed:
        fitted = _in_slots_of(running[name], next(b for b in new.backends if b.name == name))
        if fitted is None:
            return new  # exhausted: a reload grows the slots
        resized[name] = fitted
    return replace(new, backends=tuple(resized.get(b.name, b) for b in new.backends))


def patch(old: Model, backends: Mapping[str, Backend]) -> tuple[Model, Plan] | None:
    """The endpoint fast path: `old` with the given backends' servers replaced, and the runtime
    update that does it, in O(changed backends). None when a runtime update cannot do it (a
    backend unknown or with other settings, endpoints that do not fit in its slots)."""
    running = {b.name: b for b in old.backends} if len(backends) > 8 else None
    replaced: dict[str, Backend] = {}
    commands: list[str] = []
    for name in sorted(backends):
        new = backends[name]
        before = (
            running.get(name)
            if running is not None
            else next((b for b in old.backends if b.name == name), None)
        )
        if before is None or before.settings != new.settings:
            return None
        fitted = _in_slots_of(before, new)
        if fitted is None:
            return None
        new = fitted
        if new.servers == before.servers:
            continue
        commands.extend(runtime_commands(before, new))
        replaced[name] = new
    if not replaced:
        return old, Plan(Action.NONE, Changes(), ())
    model = replace(old, backends=tuple(replaced.get(b.name, b) for b in old.backends))
    changes = Changes(servers_changed=tuple(replaced))
    return model, Plan(Action.RUNTIME, changes, reasons(changes), tuple(commands))


def _in_slots_of(running: Backend, backend: Backend) -> Backend | None:
    """`backend` laid out in the slot count `running` has, or None when its endpoints do not
    fit there (a reload must grow the slots)."""
    count = len(running.servers)
    if len(backend.servers) == count:
        return backend
    if sum(1 for s in backend.servers if not s.parked) > count:
        return None
    return resize(backend, count)


def resize(backend: Backend, count: int) -> Backend:
    """The backend with its endpoints laid out in `count` slots."""
    endpoints = [(s.ip, s.port, s.state) for s in backend.servers if not s.parked]
    return replace(backend, servers=slots.layout(endpoints, count))


def diff(old: Model, new: Model, *, globals_changed: bool = False) -> Changes:
    old_services = {f"{e.namespace}/{e.name}" for e in old.services}
    new_services = {f"{e.namespace}/{e.name}" for e in new.services}
    churn = old_services ^ new_services  # their proxies are covered by "services added/removed"

    backends_changed, slots_changed, servers_changed = [], [], []
    for name, before, after in _differing(
        {b.name: b for b in old.backends}, {b.name: b for b in new.backends}, churn
    ):
        if before is None or after is None or before.settings != after.settings:
            backends_changed.append(name)
        elif len(before.servers) != len(after.servers):
            slots_changed.append(name)
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
        slots_changed=tuple(slots_changed),
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
        ("server slots resized", changes.slots_changed),
        ("endpoints changed", changes.servers_changed),
    ):
        if names:
            out.append(f"{label}: {len(names)}")
    return tuple(out)


def runtime_commands(before: Backend, after: Backend) -> list[str]:
    """Runtime API commands that turn the slots of `before` into those of `after` (same count).

    Capacity is added before it is taken away: slots that start serving come first, slots that
    move to another endpoint next, slots that drain or empty last. HAProxy runs the commands one
    by one while its threads accept connections; in slot order, replacing every endpoint at once
    would leave the backend a moment without a server, and a connection arriving then is closed.
    """
    ranked = []
    for old, new in zip(before.servers, after.servers, strict=True):
        if old != new:
            ranked.append((_rank(old, new), slot_commands(after.name, old, new)))
    ranked.sort(key=lambda item: item[0])  # stable: slot order within a rank
    return [command for _, commands in ranked for command in commands]


def _rank(old: Server, new: Server) -> int:
    if new.parked or (new.state is ServerState.DRAIN and old.state is ServerState.READY):
        return 2  # takes capacity away
    if not old.parked and (old.ip, old.port) != (new.ip, new.port):
        return 1  # one endpoint for another
    return 0  # a new endpoint, or one that serves again


def slot_commands(backend: str, old: Server, new: Server) -> list[str]:
    """One slot from `old` to `new`. A slot that empties goes to maintenance, then back to the
    parked address; a slot that takes an endpoint goes to maintenance (if it served another
    one), gets the address, then its state. Established connections are never cut:
    maintenance and drain only stop new ones."""
    target = f"set server {backend}/{new.name}"
    commands = []
    moved = (old.ip, old.port) != (new.ip, new.port)
    if new.parked or moved:
        if not old.parked:
            commands.append(f"{target} state maint")
        if moved:
            commands.append(f"{target} addr {new.ip} port {new.port}")
    if not new.parked and (moved or old.state is not new.state):
        commands.append(f"{target} state {new.state.value}")
    return commands


@dataclass(frozen=True, slots=True)
class Observed:
    """What HAProxy reports of one server line (from `show servers state`)."""

    ip: str
    port: int
    maintenance: bool
    draining: bool


@dataclass(frozen=True, slots=True)
class Drift:
    commands: tuple[str, ...]  # bring the mismatched slots back to the model
    mismatched: tuple[str, ...]  # "backend/server"
    missing: tuple[str, ...]  # in the model, not in HAProxy: only a reload fixes that

    @property
    def empty(self) -> bool:
        return not (self.mismatched or self.missing)


def drift(model: Model, observed: Mapping[tuple[str, str], Observed]) -> Drift:
    """Compare what HAProxy runs with the model, server line by server line."""
    commands: list[str] = []
    mismatched: list[str] = []
    missing: list[str] = []
    for backend in model.backends:
        for server in backend.servers:
            seen = observed.get((backend.name, server.name))
            if seen is None:
                missing.append(f"{backend.name}/{server.name}")
                continue
            if _matches(server, seen):
                continue
            mismatched.append(f"{backend.name}/{server.name}")
            state = (
                ServerState.PARKED
                if seen.maintenance
                else ServerState.DRAIN
                if seen.draining
                else ServerState.READY
            )
            actual = Server(server.name, seen.ip, seen.port, hostport(seen.ip, seen.port), state)
            commands.extend(slot_commands(backend.name, actual, server))
    return Drift(tuple(commands), tuple(mismatched), tuple(missing))


def _matches(expected: Server, seen: Observed) -> bool:
    if (seen.ip, seen.port) != (expected.ip, expected.port):
        return False
    if expected.parked:
        return seen.maintenance
    if seen.maintenance:
        return False
    return seen.draining is (expected.state is ServerState.DRAIN)


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
