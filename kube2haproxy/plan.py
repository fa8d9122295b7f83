"""plan: what must happen to go from the model HAProxy runs to the model it should run.

The one place that decides between nothing, a runtime update and a reload. Pure: compares
models (or a model and what HAProxy reports it runs) and returns a `Plan`: the action, the
model it applies, the reasons in one vocabulary (`Reason`: metric labels; `details`: the
operator's log line, "services added: shop/web; endpoints changed: 2"), and for a runtime update
the structured slot changes (backend, slot, from which server to which). Only an applier turns
those into wire text (`set server ...`, a REST call).

A change that only moves endpoints within the running slots is a runtime update; anything else
(a new service or port, a changed annotation, a slot count that must grow, global settings) is a
reload. Endpoints that still fit in the slots HAProxy runs keep that slot count (`fit`), so a
scale-down, or a scale-up that eats into the free slots, needs no reload.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from kube2haproxy import slots
from kube2haproxy.model import Backend, Frontend, Model, Server, ServerState

MAX_NAMES = 3  # services named in one detail; the rest are counted


class Action(StrEnum):
    NONE = "none"
    RUNTIME = "runtime"
    RELOAD = "reload"


class Reason(StrEnum):
    """Why a plan does what it does: the labels of the reload and runtime metrics."""

    INITIAL = "initial"  # nothing applied yet
    GLOBALS = "globals"  # settings rendered outside the model
    SERVICES = "services"  # services added or removed
    FRONTENDS = "frontends"  # binds, timeouts or access rules of a frontend
    BACKENDS = "backends"  # a backend's settings (annotations)
    SLOTS = "slots"  # a backend's endpoints no longer fit in its slots
    ENDPOINTS = "endpoints"  # endpoints moved within the slots
    RUNTIME_FALLBACK = "runtime_fallback"  # a runtime update did not go as planned
    DRIFT = "drift"  # HAProxy runs something else than the model
    RETRY = "retry"  # the last apply failed


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
class SlotChange:
    """One server line of a backend, from what HAProxy runs to what it should run."""

    backend: str
    before: Server
    after: Server

    @property
    def server(self) -> str:
        return self.after.name


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    model: Model  # what HAProxy runs once the plan is applied
    reasons: tuple[Reason, ...] = ()
    details: tuple[str, ...] = ()  # for the log line
    slots: tuple[SlotChange, ...] = ()  # RUNTIME: in the order they must be applied
    changes: Changes = Changes()

    @property
    def force(self) -> bool:
        """Reload even if the config text is the one HAProxy was last given."""
        return Reason.DRIFT in self.reasons


def plan(old: Model | None, new: Model, *, globals_changed: bool = False) -> Plan:
    """From `old` (None before the first apply) to `new`; `globals_changed` says the settings
    rendered outside the model changed. Endpoints that fit in the running slots keep them."""
    if old is None:
        return Plan(Action.RELOAD, new, (Reason.INITIAL,), ("initial config",))
    new = fit(old, new)
    changes = diff(old, new, globals_changed=globals_changed)
    if changes.empty:
        return Plan(Action.NONE, new, changes=changes)
    if changes.servers_only:
        before = {b.name: b for b in old.backends}
        after = {b.name: b for b in new.backends}
        moves = tuple(
            change
            for name in changes.servers_changed
            for change in slot_changes(before[name], after[name])
        )
        return Plan(Action.RUNTIME, new, (Reason.ENDPOINTS,), details(changes), moves, changes)
    return Plan(Action.RELOAD, new, reload_reasons(changes), details(changes), changes=changes)


def retry(model: Model) -> Plan:
    """Apply `model` again after a failure: a reload, as what HAProxy runs is uncertain."""
    return Plan(Action.RELOAD, model, (Reason.RETRY,), ("retry",))


def fallback(failed: Plan) -> Plan:
    """A runtime update that did not go as planned: reload its model instead."""
    return Plan(
        Action.RELOAD,
        failed.model,
        (Reason.RUNTIME_FALLBACK,),
        ("runtime update failed", *failed.details),
        changes=failed.changes,
    )


def fit(old: Model, new: Model) -> Model:
    """`new`, with the backends whose only change is their endpoints (and whose endpoints fit
    in the slots they run with) kept at their running slot count. Anything else is left as
    translated."""
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


def patch(old: Model, backends: Mapping[str, Backend]) -> Plan | None:
    """The endpoint fast path: `old` with the given backends' servers replaced, as a runtime
    update, in O(changed backends). None when a runtime update cannot do it (a backend unknown
    or with other settings, endpoints that do not fit in its slots)."""
    running = {b.name: b for b in old.backends} if len(backends) > 8 else None
    replaced: dict[str, Backend] = {}
    moves: list[SlotChange] = []
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
        if fitted.servers == before.servers:
            continue
        moves.extend(slot_changes(before, fitted))
        replaced[name] = fitted
    if not replaced:
        return Plan(Action.NONE, old)
    model = replace(old, backends=tuple(replaced.get(b.name, b) for b in old.backends))
    changes = Changes(servers_changed=tuple(replaced))
    return Plan(Action.RUNTIME, model, (Reason.ENDPOINTS,), details(changes), tuple(moves), changes)


def correct(model: Model, observed: Mapping[tuple[str, str], Server]) -> Plan:
    """Bring what HAProxy reports it runs (`observed`: backend, slot -> server line) back to
    the model: a runtime update of the lines that differ, or a reload when a line is missing
    (only a reload adds one). NONE when they agree."""
    moves: list[SlotChange] = []
    missing: list[str] = []
    for backend in model.backends:
        for server in backend.servers:
            seen = observed.get((backend.name, server.name))
            if seen is None:
                missing.append(f"{backend.name}/{server.name}")
            elif (seen.ip, seen.port, seen.state) != (server.ip, server.port, server.state):
                moves.append(SlotChange(backend.name, seen, server))
    if not (moves or missing):
        return Plan(Action.NONE, model)
    lines = missing + [f"{m.backend}/{m.server}" for m in moves]
    shown = ", ".join(lines[:5]) + (", ..." if len(lines) > 5 else "")
    detail = (f"haproxy differs from the model in {len(lines)} server lines ({shown})",)
    if missing:
        return Plan(Action.RELOAD, model, (Reason.DRIFT,), detail)
    return Plan(Action.RUNTIME, model, (Reason.DRIFT,), detail, _capacity_first(moves))


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


def reload_reasons(changes: Changes) -> tuple[Reason, ...]:
    """The reasons a change needs a reload, as metric labels."""
    return tuple(
        reason
        for reason, present in (
            (Reason.GLOBALS, changes.globals_changed),
            (Reason.SERVICES, changes.services_added or changes.services_removed),
            (Reason.FRONTENDS, changes.frontends_changed),
            (Reason.BACKENDS, changes.backends_changed),
            (Reason.SLOTS, changes.slots_changed),
        )
        if present
    ) or (Reason.ENDPOINTS,)


def details(changes: Changes) -> tuple[str, ...]:
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


def slot_changes(before: Backend, after: Backend) -> list[SlotChange]:
    """The slots of `before` that differ in `after` (same count), capacity first."""
    return list(
        _capacity_first(
            SlotChange(after.name, old, new)
            for old, new in zip(before.servers, after.servers, strict=True)
            if old != new
        )
    )


def _capacity_first(changes: Iterator[SlotChange] | list[SlotChange]) -> tuple[SlotChange, ...]:
    """Capacity is added before it is taken away: slots that start serving come first, slots
    that move to another endpoint next, slots that drain or empty last. HAProxy runs the changes
    one by one while its threads accept connections; in slot order, replacing every endpoint at
    once would leave the backend a moment without a server, and a connection arriving then is
    closed. Stable: slot order within a rank."""
    return tuple(sorted(changes, key=lambda c: _rank(c.before, c.after)))


def _rank(old: Server, new: Server) -> int:
    if new.parked or (new.state is ServerState.DRAIN and old.state is ServerState.READY):
        return 2  # takes capacity away
    if not old.parked and (old.ip, old.port) != (new.ip, new.port):
        return 1  # one endpoint for another
    return 0  # a new endpoint, or one that serves again


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
