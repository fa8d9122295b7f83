"""plan: what must happen to go from what HAProxy runs to what it should run.

The one place that decides between nothing, a runtime update and a reload. Pure: compares what
runs (`Deployed`: the model its file renders, and how the runtime API laid it out) with a new
model (or with what HAProxy reports it runs) and returns a `Plan`: the action, what runs
afterwards, the reasons in one vocabulary (`Reason`: metric labels; `details`: the operator's
log line, "services added: shop/web; endpoints changed: 2"), and for a runtime update the
structured changes (deployed.RuntimeOps: lines added, slots changed, map entries, lines
deleted). Only an applier turns those into wire text (`set server ...`, a REST call).

Only what needs a new listening socket or a setting HAProxy cannot change at runtime reloads:
global settings, a new port (per-port layout) or any new or removed service (per-service
layout: a socket per VIP), a changed annotation, a new service whose settings a spare cannot
take, or no free spare left. Endpoints, slot counts (servers are added at runtime), and with the
per-port layout new and deleted services (a spare backend and a map entry) change at runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from kube2haproxy import slots
from kube2haproxy.deployed import (
    Abilities,
    Deployed,
    RuntimeOps,
    SlotChange,
    Transition,
    loaded,
    split,
    takes_spare,
)
from kube2haproxy.layouts import Layout
from kube2haproxy.model import Backend, Frontend, Model, Server

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
    PORTS = "ports"  # a port (or address family) no frontend listens on yet
    FRONTENDS = "frontends"  # binds, timeouts or access rules of a frontend
    BACKENDS = "backends"  # a backend's settings (annotations)
    SERVICE_SETTINGS = "service_settings"  # a new service with settings a spare cannot take
    SPARES = "spares"  # a new service and no free spare backend
    SLOTS = "slots"  # servers that cannot be added at runtime (static-rr)
    ENDPOINTS = "endpoints"  # endpoints changed
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


@dataclass(frozen=True, slots=True)
class Scope:
    """What planning needs beside the models: the frontend layout, the spare backends a config
    carries, and what the runtime API behind the applier can change."""

    layout: Layout
    pool: tuple[Backend, ...] = ()
    abilities: Abilities = field(default_factory=Abilities)


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    deployed: Deployed  # what HAProxy runs once the plan is applied
    reasons: tuple[Reason, ...] = ()
    details: tuple[str, ...] = ()  # for the log line
    ops: RuntimeOps = field(default_factory=RuntimeOps)  # RUNTIME: the changes, in order
    changes: Changes = Changes()

    @property
    def model(self) -> Model:
        """What the config file renders once the plan is applied."""
        return self.deployed.model

    @property
    def force(self) -> bool:
        """Reload even if the config text is the one HAProxy was last given."""
        return Reason.DRIFT in self.reasons


def plan(old: Deployed | None, new: Model, scope: Scope, *, globals_changed: bool = False) -> Plan:
    """From what runs (`old`; None before the first apply) to `new`; `globals_changed` says the
    settings rendered outside the model changed."""
    if old is None:
        return reload(new, scope, (Reason.INITIAL,), ("initial config",))
    changes = diff(old.model, new, globals_changed=globals_changed)
    if changes.empty:
        return Plan(Action.NONE, replace(old, model=new), changes=changes)
    routing = scope.layout.routing(new) if scope.abilities.routes else None
    reasons: list[Reason] = []
    if changes.globals_changed:
        reasons.append(Reason.GLOBALS)
    if routing is None:
        if changes.services_added or changes.services_removed:
            reasons.append(Reason.SERVICES)
        if changes.frontends_changed:
            reasons.append(Reason.FRONTENDS)
    elif any(
        not set(routes.families) <= set(old.ports.get(port, ())) for port, routes in routing.items()
    ):
        reasons.append(Reason.PORTS)
    step = Transition(old, scope.abilities)
    reasons.extend(_backends(old.model, new, step, runtime_services=routing is not None))
    if reasons:
        return reload(new, scope, tuple(dict.fromkeys(reasons)), details(changes), changes)
    if routing is not None:
        for port, routes in routing.items():
            for vip, backend in routes.entries.items():
                step.route(port, old.maps[port], vip, backend)
        for port, entries in old.routes.items():
            kept = routing[port].entries if port in routing else {}
            for vip in entries.keys() - kept.keys():
                step.route(port, old.maps[port], vip, None)
    ops, deployed = step.result(new)
    served = changes.services_added or changes.services_removed
    reason = Reason.SERVICES if served else Reason.ENDPOINTS
    return Plan(Action.RUNTIME, deployed, (reason,), details(changes), ops, changes)


def _backends(old: Model, new: Model, step: Transition, *, runtime_services: bool) -> list[Reason]:
    """Walk every backend that differs, asking `step` to change it at runtime; the reasons
    those it cannot need a reload."""
    reasons = []
    before_all = {b.name: b for b in old.backends}
    after_all = {b.name: b for b in new.backends}
    for name in sorted(before_all.keys() | after_all.keys()):
        before, after = before_all.get(name), after_all.get(name)
        if before is after:
            continue
        if before is not None and after is not None:
            if before.settings != after.settings:
                reasons.append(Reason.BACKENDS)
            elif before.servers != after.servers and not step.servers(after):
                reasons.append(Reason.SLOTS)
        elif after is not None:
            if runtime_services and not step.place(after):
                reasons.append(Reason.SPARES if takes_spare(after) else Reason.SERVICE_SETTINGS)
        elif before is not None and runtime_services:
            step.remove(before)
    return reasons


def reload(
    model: Model,
    scope: Scope,
    reasons: tuple[Reason, ...],
    details: tuple[str, ...],
    changes: Changes | None = None,
) -> Plan:
    """A reload of `model`: what runs afterwards is what its file renders."""
    deployed = loaded_state(model, scope)
    return Plan(Action.RELOAD, deployed, reasons, details, changes=changes or Changes())


def loaded_state(model: Model, scope: Scope) -> Deployed:
    """What runs once `model` is loaded: its backends, the spare pool, and (per-port) the
    routes, map files and ports of its frontends."""
    routing = scope.layout.routing(model)
    if routing is None:
        return loaded(model)
    return loaded(
        model,
        pool=scope.pool,
        routes={port: r.entries for port, r in routing.items()},
        maps={port: r.map for port, r in routing.items()},
        ports={port: r.families for port, r in routing.items()},
    )


def retry(model: Model, scope: Scope) -> Plan:
    """Apply `model` again after a failure: a reload, as what HAProxy runs is uncertain."""
    return reload(model, scope, (Reason.RETRY,), ("retry",))


def fallback(failed: Plan, scope: Scope) -> Plan:
    """A runtime update that did not go as planned: reload its model instead."""
    return reload(
        failed.model,
        scope,
        (Reason.RUNTIME_FALLBACK,),
        ("runtime update failed", *failed.details),
        failed.changes,
    )


def patch(old: Deployed, backends: Mapping[str, Backend], abilities: Abilities) -> Plan | None:
    """The endpoint fast path: what runs with the given backends' servers replaced, as a
    runtime update, in O(changed backends). None when a runtime update cannot do it (a backend
    unknown or with other settings, servers that cannot be added)."""
    running = {b.name: b for b in old.model.backends} if len(backends) > 8 else None
    step = Transition(old, abilities)
    replaced: dict[str, Backend] = {}
    for name in sorted(backends):
        new = backends[name]
        before = (
            running.get(name)
            if running is not None
            else next((b for b in old.model.backends if b.name == name), None)
        )
        if before is None or before.settings != new.settings:
            return None
        if new.servers == before.servers:
            continue
        if not step.servers(new):
            return None
        replaced[name] = new
    if not replaced:
        return Plan(Action.NONE, old)
    model = replace(old.model, backends=tuple(replaced.get(b.name, b) for b in old.model.backends))
    changes = Changes(servers_changed=tuple(replaced))
    ops, deployed = step.result(model)
    return Plan(Action.RUNTIME, deployed, (Reason.ENDPOINTS,), details(changes), ops, changes)


def splice(
    old: Deployed, model: Model, *, added: Model, removed: Model, scope: Scope
) -> Plan | None:
    """The service fast path, O(changed services): `model` is what runs with the services of
    `added` (their frontends, backends and entries) served and those of `removed` gone, as a
    runtime update: spares and map entries. None when the runtime API cannot do it (a layout
    without runtime routes, a port or address family not listened on, no spare for a service
    that a spare could serve): the full path says why it reloads."""
    if not (scope.layout.runtime_routes and scope.abilities.routes):
        return None
    step = Transition(old, scope.abilities)
    for backend in added.backends:
        if not step.place(backend):
            return None
    for backend in removed.backends:
        step.remove(backend)
    for frontend in removed.frontends:
        for bind in frontend.binds:
            if bind.port in old.maps:
                step.route(bind.port, old.maps[bind.port], bind.ip, None)
    for frontend in added.frontends:
        for bind in frontend.binds:
            family = 6 if ":" in bind.ip else 4
            if family not in old.ports.get(bind.port, ()):
                return None
            step.route(bind.port, old.maps[bind.port], bind.ip, frontend.backend)
    changes = Changes(
        services_added=tuple(f"{e.namespace}/{e.name}" for e in added.services),
        services_removed=tuple(f"{e.namespace}/{e.name}" for e in removed.services),
    )
    ops, deployed = step.result(model)
    return Plan(Action.RUNTIME, deployed, (Reason.SERVICES,), details(changes), ops, changes)


def _go_on() -> None:
    """A `pause` that does not."""


def correct(
    old: Deployed,
    observed: Mapping[tuple[str, str], Server],
    scope: Scope,
    *,
    pause: Callable[[], None] = _go_on,
) -> Plan:
    """Bring what HAProxy reports it runs (`observed`: backend, server -> line, by HAProxy's
    names) back to what should run: a runtime update of the lines that differ, or a reload when
    a line is missing. Lines beyond what should run are fine parked, and parked otherwise.
    NONE when they agree. `pause` is called every few dozen backends and few hundred lines
    (the caller may yield the CPU there)."""
    moves: list[SlotChange] = []
    missing: list[str] = []
    for count, (name, backend) in enumerate(old.backends.items()):
        if not count & 31:
            pause()
        for server in backend.servers:
            seen = observed.get((name, server.name))
            if seen is None:
                missing.append(f"{name}/{server.name}")
            elif (seen.ip, seen.port, seen.state) != (server.ip, server.port, server.state):
                moves.append(SlotChange(name, seen, server))
    for count, ((name, server_name), seen) in enumerate(observed.items()):
        if not count & 255:
            pause()
        running = old.backends.get(name)
        if running is None or seen.parked:
            continue
        index = _slot_index(server_name)
        if index is not None and index >= len(running.servers):  # a line kept beyond
            moves.append(SlotChange(name, seen, slots.parked_line(index)))
    if not (moves or missing):
        return Plan(Action.NONE, old)
    lines = missing + [f"{m.backend}/{m.server}" for m in moves]
    shown = ", ".join(lines[:5]) + (", ..." if len(lines) > 5 else "")
    detail = (f"haproxy differs from the model in {len(lines)} server lines ({shown})",)
    if missing:
        return reload(old.model, scope, (Reason.DRIFT,), detail)
    grow, shrink = split(moves)
    return Plan(Action.RUNTIME, old, (Reason.DRIFT,), detail, RuntimeOps(grow=grow, shrink=shrink))


def _slot_index(name: str) -> int | None:
    """The slot of one of our server names (`s<n>`), 0-based; None for another name."""
    if name.startswith("s") and name[1:].isdigit() and int(name[1:]) > 0:
        return int(name[1:]) - 1
    return None


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
