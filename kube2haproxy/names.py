"""HAProxy names, derived in one place.

A backend is named `<namespace>_<service>_<port>`, where the port part is the
service port's name or, for an unnamed port, its number. Namespaces, Service names and port names
are DNS labels, validated before they get here, none of which may contain '_': the three parts can
be read back unambiguously, so two different service ports never share a name (a port named "80"
and an unnamed port 80 cannot be in one Service: a Service with several ports names them all).
Every character is one HAProxy accepts in a proxy name ([a-z0-9_-]).

A service port's frontend is its backend's name behind `fe_`: HAProxy 3.3 refuses a frontend
and a backend of one name (3.1 and 3.2 warn about each), and a backend name has exactly two
underscores where a frontend name has three, so no frontend is ever named like a backend.
Backends keep the plain name: they are what stats, dashboards and `show servers state` show.
"""

from __future__ import annotations


def proxy_name(*, namespace: str, service: str, port_key: str) -> str:
    """The backend of a service port."""
    return f"{namespace}_{service}_{port_key}"


def frontend_name(backend: str) -> str:
    """The frontend (per-service layout) in front of a backend."""
    return f"fe_{backend}"


def port_key(*, name: str, port: int) -> str:
    """The port part of a proxy name: the port's name, or its number when it has none."""
    return name or str(port)


def server_name(index: int) -> str:
    """The name of the index-th server line (1-based) of a backend."""
    return f"s{index}"
