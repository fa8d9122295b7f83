"""per-port: one frontend per distinct port, listening on every address (one socket per family),
routing each connection by its destination address through a map of VIP -> backend.

Sockets grow with the distinct ports, not the services (2,020 at 50,000 services:
bench/layout.py), and a new service on a port already listened on needs no new socket: it is
routed at runtime with a map entry (`routing`), served by a spare backend until the next reload
gives it its own (deployed.py). The maps are content-addressed files in the maps directory, so a
running config's maps never change under it; their entries follow the model's frontend order.
Frontends are shared by every service on a port, so each service's access rules go in its
backend, and a per-service client timeout has nowhere to go.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from kube2haproxy import tuning
from kube2haproxy.findings import Finding, subject, warning
from kube2haproxy.model import Frontend, Model

MAP_FILES = "port-*.map"  # the names port_frontends gives its files, as a glob


@dataclass(frozen=True, slots=True)
class PortFrontend:
    """The frontend of one port: its address families and its map file (`map`, a name in the
    maps directory)."""

    port: int
    families: tuple[int, ...]  # 4 and/or 6
    map: str  # "port-80-<hash>.map"
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", port_frontend_name(self.port))


def port_frontend_name(port: int) -> str:
    """The frontend of every service port with this number."""
    return f"port_{port}"


@dataclass(frozen=True, slots=True)
class PortRoutes:
    """How a layout that routes by destination reaches the services of one port: the map file
    its frontend reads, the address families it listens on, and the map's VIP -> backend."""

    map: str
    families: tuple[int, ...]
    entries: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PortMap:
    """One port's map: its file name (content-addressed), its text, and its entries."""

    name: str  # "port-80-<hash>.map"
    text: str  # one `VIP backend` line per entry, in the model's frontend order
    lines: int  # as many as the model has binds on the port
    entries: dict[str, str]
    families: tuple[int, ...]  # 4 and/or 6: the address families of its VIPs


def port_frontends(model: Model) -> tuple[tuple[PortFrontend, ...], dict[int, PortMap]]:
    """The per-port frontends of a model and their maps. A map lists its entries in the
    model's (canonical) frontend order and is named by a hash of its text, so the same
    cluster gives the same file everywhere."""
    lines: dict[int, list[str]] = {}
    entries: dict[int, dict[str, str]] = {}
    for frontend in model.frontends:
        backend = frontend.backend
        for bind in frontend.binds:
            port = bind.port
            if port not in lines:
                lines[port], entries[port] = [], {}
            lines[port].append(f"{bind.ip} {backend}\n")
            entries[port][bind.ip] = backend
    frontends, maps = [], {}
    for port in sorted(lines):
        text = "".join(lines[port])
        digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        name = f"port-{port}-{digest}.map"
        families = tuple(sorted({6 if ":" in ip else 4 for ip in entries[port]}))
        maps[port] = PortMap(name, text, len(lines[port]), entries[port], families)
        frontends.append(PortFrontend(port, families, name))
    return tuple(frontends), maps


class PerPort:
    name = "per-port"
    template = "ports.j2"
    variable = "ports"
    unrouted_backend: str | None = "unrouted"
    rules_in_backend = True
    runtime_routes = True
    files_glob = MAP_FILES

    def __init__(self) -> None:
        # The last model's frontends and what they gave: render asks for items and files of
        # the same model, and a runtime update keeps the frontends as the very same objects.
        self._last: tuple[object, tuple[PortFrontend, ...], dict[int, PortMap]] | None = None

    def frontend_name(self, frontend: Frontend) -> str:
        return port_frontend_name(frontend.port)

    def _of(self, model: Model) -> tuple[tuple[PortFrontend, ...], dict[int, PortMap]]:
        if self._last is None or self._last[0] is not model.frontends:
            self._last = (model.frontends, *port_frontends(model))
        return self._last[1], self._last[2]

    def items(self, model: Model) -> tuple[PortFrontend, ...]:
        return self._of(model)[0]

    def maps(self, model: Model) -> dict[str, tuple[str, int]]:
        return {m.name: (m.text, m.lines) for m in self._of(model)[1].values()}

    def routing(self, model: Model) -> dict[int, PortRoutes]:
        return {
            port: PortRoutes(m.name, m.families, m.entries)
            for port, m in self._of(model)[1].items()
        }

    def listeners(self, model: Model) -> dict[tuple[str, int], list[tuple[str, int]]]:
        out: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for frontend in model.frontends:
            for bind in frontend.binds:
                wildcard = "::" if ":" in bind.ip else "0.0.0.0"  # noqa: S104
                out.setdefault((wildcard, bind.port), []).append((bind.ip, bind.port))
        return out

    def findings(self, model: Model) -> tuple[Finding, ...]:
        """A per-service client timeout: the port's frontend is shared, and `timeout client`
        is a frontend setting."""
        services = {
            (f.namespace, f.service) for f in model.frontends if f.client_timeout_ms is not None
        }
        return tuple(
            warning(
                subject("Service", namespace, name),
                f"metadata.annotations[{tuning.PREFIX}timeout-client]",
                "has no effect with --frontend-layout per-port (the port's frontend is shared); "
                "--timeout-client applies",
            )
            for namespace, name in sorted(services)
        )
