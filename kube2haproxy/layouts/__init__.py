"""layouts: how services become frontends, one interchangeable implementation per file.

A layout owns everything that depends on how frontends listen: the items its template renders,
the files the config refers to, the sockets HAProxy listens on (with the VIP:ports each one
serves), and what it cannot honour of a model (findings). Nothing else branches on the layout:
the renderer renders `layout.template` over `layout.items(model)`, the controller test-binds
`layout.listeners(model)`. Pure: no I/O. Adding a layout is a module here, its template, and a
line in LAYOUTS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kube2haproxy.findings import Finding
from kube2haproxy.layouts.per_port import PerPort, PortRoutes
from kube2haproxy.layouts.per_service import PerService
from kube2haproxy.model import Frontend, Model

Socket = tuple[str, int]  # (address, port) of one listening socket; "0.0.0.0"/"::" wildcards


class Layout(Protocol):
    name: str  # the --frontend-layout value
    template: str  # the bundled template rendering `items`, run by run
    variable: str  # what the template calls them
    unrouted_backend: str | None  # a backend closing connections to no service's address
    rules_in_backend: bool  # access rules go in backends (frontends are shared between services)
    files_glob: str  # the names `maps` gives its map files, as a glob ("" when it has none)
    runtime_routes: bool  # a new service on a port already listened on needs no reload

    def items(self, model: Model) -> tuple[Any, ...]:
        """What `template` renders, in config order."""
        ...

    def frontend_name(self, frontend: Frontend) -> str:
        """The name of the HAProxy frontend that serves a service port of the model."""
        ...

    def maps(self, model: Model) -> dict[str, tuple[str, int]]:
        """The map files the config refers to: name in the maps directory (content-addressed)
        -> text (`key value` lines) and how many lines the model gave it. The renderer checks
        them and the applier writes them."""
        ...

    def listeners(self, model: Model) -> dict[Socket, list[Socket]]:
        """The sockets HAProxy listens on, each with the VIP:ports it serves."""
        ...

    def findings(self, model: Model) -> tuple[Finding, ...]:
        """What the layout cannot honour of the model."""
        ...

    def routing(self, model: Model) -> dict[int, PortRoutes] | None:
        """Per port, how services are routed, when a new service on a port already listened on
        can be routed at runtime (a map entry); None when every new service needs a reload."""
        ...


LAYOUTS: Mapping[str, Layout] = {layout.name: layout for layout in (PerService(), PerPort())}


def layout(name: str) -> Layout:
    """The layout of a --frontend-layout value (validated by the settings' choices)."""
    return LAYOUTS[name]
