"""per-service: one frontend per service port, listening on each of the service's VIPs.

One socket per VIP and port: simple to read (`frontend fe_shop_web_http`, `bind 10.96.0.5:80`),
but the sockets grow with the services (60,000 at 50,000 services did not start under a
20,000-descriptor limit: bench/layout.py). A new service always needs a reload (a new socket).
"""

from __future__ import annotations

from kube2haproxy.findings import Finding
from kube2haproxy.model import Frontend, Model


class PerService:
    name = "per-service"
    template = "frontends.j2"
    variable = "frontends"
    unrouted_backend: str | None = None
    rules_in_backend = False
    runtime_routes = False
    files_glob = ""

    def items(self, model: Model) -> tuple[Frontend, ...]:
        return model.frontends

    def frontend_name(self, frontend: Frontend) -> str:
        return frontend.name

    def maps(self, model: Model) -> dict[str, tuple[str, int]]:
        return {}

    def listeners(self, model: Model) -> dict[tuple[str, int], list[tuple[str, int]]]:
        out: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for frontend in model.frontends:
            for bind in frontend.binds:
                out.setdefault((bind.ip, bind.port), []).append((bind.ip, bind.port))
        return out

    def findings(self, model: Model) -> tuple[Finding, ...]:
        return ()

    def routing(self, model: Model) -> None:
        return None  # every new service is a new socket
