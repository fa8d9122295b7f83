"""dataplane_servers: server slots as the Data Plane API's runtime servers, both ways.

Which PUTs bring a slot from one server line to another (`slot_bodies`), and what a runtime
server the API reports is as a model server line (`as_server`). Both plan around what
dataplaneapi v3.4.2 misreads: client-native parses srv_admin_state, a decimal number, as hex,
so a slot `disabled` in the config (admin 4 once readied) that HAProxy then drains (admin 12,
read as 0x12) reads "maint", and a PUT of "maint" to it is skipped as no change. So a draining
endpoint gets `weight 0` (as the template renders one), never HAProxy's drain state, and "maint"
is read as maintenance only while the server is down (maintenance stops a server; a drained one
runs).

The order is the master-CLI applier's: a slot that takes an endpoint goes to maintenance (if it
served another one) and gets its address (and weight 0 when it drains), then goes ready; one
that empties goes to maintenance and back to the parked address in one PUT (dataplaneapi applies
the admin state before the address). A slot readied with weight 0 (one the config rendered
draining) gets its weight back afterwards (`restored_weight`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from kube2haproxy.deployed import SlotChange
from kube2haproxy.model import Server, ServerState, hostport

Body = dict[str, Any]


def slot_bodies(change: SlotChange) -> list[Body]:
    """The PUT bodies, in order, that bring one slot from `change.before` to `change.after`."""
    old, new = change.before, change.after
    moved = (old.ip, old.port) != (new.ip, new.port)
    first: Body = {} if old.parked else {"admin_state": "maint"}
    if moved:
        first |= {"address": new.ip, "port": new.port}
    if new.parked:
        return [first] if first else []
    if old.parked or moved:
        if new.state is ServerState.DRAIN:
            first["weight"] = 0  # while still in maintenance: it never takes a new connection
        return [body for body in (first, {"admin_state": "ready"}) if body]
    # The same endpoint, serving before and after: only its state changes.
    if new.state is ServerState.DRAIN:
        return [{"weight": 0}]
    return [{"admin_state": "ready"}]


def restored_weight(found: Mapping[str, Any]) -> int | None:
    """The weight a slot meant to be ready must get back, when HAProxy reports it at 0 (its
    config line drained it): its configured weight, or HAProxy's default of 1 when that is the
    0. None when its weight is fine."""
    if found.get("weight") != 0:
        return None
    initial = found.get("iweight")
    return initial if isinstance(initial, int) and initial > 0 else 1


def as_server(name: str, found: Mapping[str, Any]) -> Server:
    """A runtime server as the model would have it: in maintenance (and stopped) is parked,
    drained or at weight 0 drains, the rest is ready."""
    admin = found.get("admin_state")
    running = found.get("operational_state") in ("up", "stopping")
    if admin == "maint" and not running:
        state = ServerState.PARKED
    elif admin in ("maint", "drain") or found.get("weight") == 0:
        state = ServerState.DRAIN  # "maint" while running: HAProxy's drain, misread
    else:
        state = ServerState.READY
    ip = canonical_ip(str(found.get("address", "")))
    port = int(found.get("port") or 0)
    return Server(name, ip, port, hostport(ip, port), state)


def canonical_ip(text: str) -> str:
    """An IP address as the model writes it (HAProxy may spell IPv6 otherwise)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def same_line(a: Server, b: Server) -> bool:
    """The same endpoint and state (the name aside)."""
    return (a.ip, a.port, a.state) == (b.ip, b.port, b.state)
