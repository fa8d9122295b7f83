"""deployed: what HAProxy runs, as a value, and the runtime changes that turn it into another.

A reload loads the config file, which renders the model alone: the same cluster gives the same
file, whatever happened before. Between reloads the runtime API changes what runs, and then
HAProxy's names may differ from the file's: a new service is served by a spare backend
(`spare_NNNN`, pre-rendered with the defaults' settings) until the next reload gives it its own,
a deleted service's backend lingers with its servers parked, a backend may keep server lines
beyond its slot count (parked, where deleting them is not safe). `Deployed` holds both: the
model the file renders and, by the names HAProxy uses, the backends, the routes (per-port maps)
and the free spares. `Transition` works out the runtime changes from one to the next, or says a
reload is needed. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

from kube2haproxy import slots
from kube2haproxy.model import Backend, Balance, Model, Server, ServerState

SPARE_PREFIX = "spare_"  # one underscore: never a service's backend (two) or frontend (three)


@dataclass(frozen=True, slots=True)
class SlotChange:
    """One server line of a backend, from what HAProxy runs to what it should run."""

    backend: str  # as HAProxy names it
    before: Server
    after: Server

    @property
    def server(self) -> str:
        return self.after.name


@dataclass(frozen=True, slots=True)
class ServerAdd:
    """A server line added at runtime, parked; a SlotChange then gives it its endpoint."""

    backend: str  # as HAProxy names it
    server: Server  # a parked line
    options: str  # the model backend whose server options it takes (the rendered line's)


@dataclass(frozen=True, slots=True)
class ServerDelete:
    """A parked line removed, where the version deletes servers safely (best effort: one that
    still has connections stays, parked)."""

    backend: str
    server: str


@dataclass(frozen=True, slots=True)
class RouteChange:
    """One entry of a per-port map: the VIP routed to `after` instead of `before` (None: no
    entry)."""

    port: int
    map: str  # the map file as HAProxy loaded it
    vip: str
    before: str | None
    after: str | None


@dataclass(frozen=True, slots=True)
class RuntimeOps:
    """A runtime update, in the order it must run: lines added, capacity added (slots that
    start serving or change endpoint), routes set, routes removed, capacity removed (slots that
    drain or park), lines deleted. Connections never find a route without a server."""

    adds: tuple[ServerAdd, ...] = ()
    grow: tuple[SlotChange, ...] = ()
    routes: tuple[RouteChange, ...] = ()
    shrink: tuple[SlotChange, ...] = ()
    deletes: tuple[ServerDelete, ...] = ()

    @property
    def slots(self) -> tuple[SlotChange, ...]:
        return self.grow + self.shrink

    def __len__(self) -> int:
        return sum(len(getattr(self, f.name)) for f in fields(self))


@dataclass(frozen=True, slots=True)
class Abilities:
    """What the runtime API of the HAProxy behind an applier can change."""

    add_servers: bool = True  # `add server` (2.6 and later)
    delete_servers: bool = False  # `del server` is safe (3.0 and later; 2.6 parks instead)
    routes: bool = True  # map entries (`add map`, `set map`, `del map`)


@dataclass(frozen=True, slots=True)
class Deployed:
    """What HAProxy runs: `model` is what its config file renders (and a reload would load);
    the rest is how the runtime API laid it out, by HAProxy's names."""

    model: Model
    backends: Mapping[str, Backend]  # every backend HAProxy runs, with the lines it runs
    homes: Mapping[str, str] = field(default_factory=dict)  # model backend -> spare serving it
    spares: tuple[str, ...] = ()  # spares free to serve a new service
    routes: Mapping[int, Mapping[str, str]] = field(default_factory=dict)  # port -> VIP -> backend
    maps: Mapping[int, str] = field(default_factory=dict)  # port -> map file HAProxy loaded
    ports: Mapping[int, tuple[int, ...]] = field(default_factory=dict)  # port -> families bound
    # Lines of static-rr backends loaded draining: a config gives them weight 0, and a static
    # algorithm takes no other weight than 0% or 100% of the loaded one (HAProxy refuses
    # `set server ... weight 1`, 2.6 to 3.4), so only a reload makes them take connections.
    weightless: frozenset[tuple[str, str]] = frozenset()

    def home(self, backend: str) -> str:
        """The backend HAProxy serves a model backend with."""
        return self.homes.get(backend, backend)


def spare_pool(count: int) -> tuple[Backend, ...]:
    """The spare backends a config carries: the defaults' settings and no server line (a new
    service's lines are added at runtime)."""
    return tuple(Backend(f"{SPARE_PREFIX}{i:04d}", "", "", "", ()) for i in range(1, count + 1))


_SPARE_SETTINGS = Backend("", "", "", "", ()).settings[4:]  # all but the identity fields


def takes_spare(backend: Backend) -> bool:
    """Whether a spare can serve this backend: only its servers differ from the defaults
    (no annotation that renders a backend setting, no affinity, no access rules)."""
    return backend.settings[4:] == _SPARE_SETTINGS


def loaded(
    model: Model,
    *,
    pool: Sequence[Backend] = (),
    routes: Mapping[int, Mapping[str, str]] | None = None,
    maps: Mapping[int, str] | None = None,
    ports: Mapping[int, tuple[int, ...]] | None = None,
) -> Deployed:
    """What runs right after a reload of `model` (with its spare pool, and per-port, its
    routes, map files and bound ports)."""
    backends = {b.name: b for b in model.backends}
    backends.update((b.name, b) for b in pool)
    return Deployed(
        model,
        backends,
        spares=tuple(b.name for b in pool),
        routes=routes or {},
        maps=maps or {},
        ports=ports or {},
        weightless=frozenset(
            (b.name, s.name)
            for b in model.backends
            if not _dynamic(b)
            for s in b.servers
            if s.state is ServerState.DRAIN
        ),
    )


class Transition:
    """The runtime changes from `old` towards a new model, backend by backend; `result` gives
    them with what runs afterwards. Each step says whether the runtime API can do it."""

    def __init__(self, old: Deployed, abilities: Abilities) -> None:
        self._old = old
        self._abilities = abilities
        self._backends = dict(old.backends)
        self._homes = dict(old.homes)
        self._spares = list(old.spares)
        self._routes = {port: dict(entries) for port, entries in old.routes.items()}
        self._adds: list[ServerAdd] = []
        self._changes: list[SlotChange] = []
        self._route_changes: list[RouteChange] = []
        self._deletes: list[ServerDelete] = []

    def servers(self, backend: Backend) -> bool:
        """Bring the lines of the backend serving `backend` (same settings) to its servers."""
        home = self._backends.get(self._old.home(backend.name))
        if home is None:
            return False
        return self._converge(home, backend)

    def place(self, backend: Backend) -> bool:
        """Serve a backend the running config does not have: with a lingering backend of its
        name and settings (a service deleted and created again), else with a free spare."""
        lingering = self._backends.get(backend.name)
        if lingering is not None and lingering.settings == backend.settings:
            return self._converge(lingering, backend)
        if not (takes_spare(backend) and self._spares and self._abilities.add_servers):
            return False
        spare = self._backends[self._spares.pop(0)]
        self._homes[backend.name] = spare.name
        return self._converge(spare, backend)

    def remove(self, backend: Backend) -> None:
        """A backend the model no longer has: its lines parked; a spare serving it is free
        again (its parked lines are reused by the next service)."""
        name = self._homes.pop(backend.name, backend.name)
        home = self._backends.get(name)
        if home is None:
            return
        self._converge(home, replace(home, servers=()), keep=True)
        if name.startswith(SPARE_PREFIX):
            self._spares.append(name)

    def route(self, port: int, map_file: str, vip: str, backend: str | None) -> None:
        """Route a VIP on a port to a model backend (None: no longer)."""
        entries = self._routes.setdefault(port, {})
        before = entries.get(vip)
        after = self._homes.get(backend, backend) if backend is not None else None
        if before == after:
            return
        if after is None:
            del entries[vip]
        else:
            entries[vip] = after
        self._route_changes.append(RouteChange(port, map_file, vip, before, after))

    def result(self, model: Model) -> tuple[RuntimeOps, Deployed]:
        grow, shrink = split(self._changes)
        ops = RuntimeOps(
            adds=tuple(self._adds),
            grow=grow,
            routes=tuple(sorted(self._route_changes, key=lambda r: r.after is None)),
            shrink=shrink,
            deletes=tuple(self._deletes),
        )
        deployed = replace(
            self._old,
            model=model,
            backends=self._backends,
            homes=self._homes,
            spares=tuple(self._spares),
            routes=self._routes,
        )
        return ops, deployed

    def _converge(self, home: Backend, backend: Backend, *, keep: bool = False) -> bool:
        """`home`'s lines (as HAProxy runs them) to `backend`'s: lines changed in place, added
        where there are too few, parked (and deleted where safe) beyond its count; `keep`
        parks without deleting."""
        running, wanted = home.servers, backend.servers
        if len(wanted) > len(running) and not (
            self._abilities.add_servers and _dynamic(backend) and _dynamic(home)
        ):
            return False
        weightless = self._old.weightless
        if weightless and any(
            s.state is ServerState.READY and (home.name, s.name) in weightless for s in wanted
        ):
            return False
        lines = list(wanted)
        for index in range(len(running), len(wanted)):
            parked = slots.parked_line(index)
            self._adds.append(ServerAdd(home.name, parked, backend.name))
            if wanted[index] != parked:
                self._changes.append(SlotChange(home.name, parked, wanted[index]))
        for before, after in zip(running, wanted, strict=False):
            if before != after:
                self._changes.append(SlotChange(home.name, before, after))
        delete = self._abilities.delete_servers and not keep
        for index in range(len(wanted), len(running)):
            before, parked = running[index], slots.parked_line(index)
            if before != parked:
                self._changes.append(SlotChange(home.name, before, parked))
            if delete:
                self._deletes.append(ServerDelete(home.name, parked.name))
            else:
                lines.append(parked)
        settings = home if home.name != backend.name else backend
        self._backends[home.name] = replace(settings, servers=tuple(lines))
        return True


def _dynamic(backend: Backend) -> bool:
    """Servers can be added to it: its balance algorithm is a dynamic one (static-rr is not;
    `source` is rendered with consistent hashing)."""
    return backend.balance is not Balance.STATIC_RR


def split(changes: Sequence[SlotChange]) -> tuple[tuple[SlotChange, ...], tuple[SlotChange, ...]]:
    """Slot changes that add capacity, then those that take it away, for RuntimeOps' `grow` and
    `shrink`: slots that start serving come first, slots that move to another endpoint next,
    slots that drain or empty last (after the routes changed). HAProxy runs the changes one by
    one while its threads accept connections; in slot order, replacing every endpoint at once
    would leave the backend a moment without a server, and a connection arriving then is
    closed. Stable: slot order within a rank."""
    ordered = sorted(changes, key=lambda c: _rank(c.before, c.after))
    grow = tuple(c for c in ordered if _rank(c.before, c.after) < 2)
    return grow, tuple(ordered[len(grow) :])


def _rank(old: Server, new: Server) -> int:
    if new.parked or (new.state is ServerState.DRAIN and old.state is ServerState.READY):
        return 2  # takes capacity away
    if not old.parked and (old.ip, old.port) != (new.ip, new.port):
        return 1  # one endpoint for another
    return 0  # a new endpoint, or one that serves again
