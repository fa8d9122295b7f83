"""per-port: one frontend per distinct port, listening on every address (one socket per family),
routing each connection by its destination address through a map of VIP -> backend.

Sockets grow with the distinct ports, not the services (2,020 at 50,000 services:
bench/layout.py). The maps are content-addressed files in the maps directory, so a running
config's maps never change under it. Frontends are shared by every service on a port, so each
service's access rules go in its backend, and a per-service client timeout has nowhere to go.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from kube2haproxy import tuning
from kube2haproxy.findings import Finding, subject, warning
from kube2haproxy.model import Model

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
        object.__setattr__(self, "name", f"port_{self.port}")


Entries = tuple[tuple[str, str], ...]  # a map's lines: (key, value)


def port_frontends(model: Model) -> tuple[tuple[PortFrontend, ...], dict[str, Entries]]:
    """The per-port frontends of a model, and their maps (file name -> VIP, backend entries).
    A map's name carries a hash of its content: `map_text` of its entries."""
    routes: dict[int, list[tuple[str, str]]] = {}
    for frontend in model.frontends:
        for bind in frontend.binds:
            routes.setdefault(bind.port, []).append((bind.ip, frontend.backend))
    frontends, maps = [], {}
    for port in sorted(routes):
        entries = tuple(sorted(routes[port]))
        digest = hashlib.blake2b(map_text(entries).encode(), digest_size=6).hexdigest()
        path = f"port-{port}-{digest}.map"
        maps[path] = entries
        families = tuple(sorted({6 if ":" in ip else 4 for ip, _ in entries}))
        frontends.append(PortFrontend(port, families, path))
    return tuple(frontends), maps


def map_text(entries: Entries) -> str:
    """A map file's content: one `key value` line per entry."""
    return "".join(f"{key} {value}\n" for key, value in entries)


class PerPort:
    name = "per-port"
    template = "ports.j2"
    variable = "ports"
    unrouted_backend: str | None = "unrouted"
    rules_in_backend = True
    files_glob = MAP_FILES

    def __init__(self) -> None:
        # The last model's frontends and what they gave: render asks for items and files of
        # the same model, and a runtime update keeps the frontends as the very same objects.
        self._last: tuple[object, tuple[PortFrontend, ...], dict[str, Entries]] | None = None

    def _of(self, model: Model) -> tuple[tuple[PortFrontend, ...], dict[str, Entries]]:
        if self._last is None or self._last[0] is not model.frontends:
            self._last = (model.frontends, *port_frontends(model))
        return self._last[1], self._last[2]

    def items(self, model: Model) -> tuple[PortFrontend, ...]:
        return self._of(model)[0]

    def maps(self, model: Model) -> dict[str, Entries]:
        return dict(self._of(model)[1])

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
