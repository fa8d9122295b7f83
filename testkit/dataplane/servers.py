"""servers: the emulator's runtime server endpoints, on HAProxy's stats socket.

Owns `/v3/services/haproxy/runtime/backends/{parent_name}/servers[/{name}]`: the commands
dataplaneapi v3.4.2 (client-native v6) sends for each (`show servers state <backend>`,
`set server <b>/<s> health|state|weight|addr ... port ...`, `add server`, `disable server`,
`del server`), how HAProxy's replies become statuses, and the JSON: the spec's `runtime_server`
and `runtime_add_server`. They change only the running HAProxy: not the config file, not its
version, and a reload loses them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kube2haproxy.capabilities import Capabilities, Version
from testkit.dataplane.wire import ApiError, Request, Response

Command = Callable[[str], str]

ADMIN_STATES = ("ready", "maint", "drain")
OPERATIONAL_STATES = ("up", "down", "stopping")
_OPERATIONAL = {"0": "down", "1": "up", "2": "up", "3": "stopping"}
# runtime_add_server fields the emulator turns into `add server` keywords: "enabled" flags,
# then valued ones (JSON name -> keyword). Any other field is refused, loudly.
_FLAGS = {
    "check": "check",
    "backup": "backup",
    "agent-check": "agent-check",
    "check-ssl": "check-ssl",
    "send-proxy": "send-proxy",
    "ssl": "ssl",
}
_VALUED = {
    "weight": "weight",
    "maxconn": "maxconn",
    "maxqueue": "maxqueue",
    "minconn": "minconn",
    "inter": "inter",
    "fastinter": "fastinter",
    "downinter": "downinter",
    "rise": "rise",
    "fall": "fall",
    "id": "id",
    "health_check_port": "port",
    "health_check_address": "addr",
    "agent-port": "agent-port",
    "agent-addr": "agent-addr",
    "verify": "verify",
    "sni": "sni",
}


def admin_state(value: str) -> str:
    """srv_admin_state as client-native reads it: the decimal field parsed as *hex*, maint for
    bits 0, 1, 5, drain for 3, 4. Kept as is: a client sees what dataplaneapi reports (a config
    `disabled` server set ready reads "ready"; one then drained, admin 12, reads "maint")."""
    mask = int(value, 16)
    if mask & 0b100011:
        return "maint"
    if mask & 0b11000:
        return "drain"
    return "ready"


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def runtime_server(fields: dict[str, str]) -> dict[str, Any]:
    """One `show servers state` line (by header name) as the spec's runtime_server."""
    numbers = {
        "backend_id": "be_id",
        "port": "srv_port",
        "weight": "srv_uweight",
        "uweight": "srv_uweight",
        "iweight": "srv_iweight",
        "last_time_change": "srv_time_since_last_change",
        "check_status": "srv_check_status",
        "check_result": "srv_check_result",
        "check_health": "srv_check_health",
        "check_state": "srv_check_state",
        "agent_state": "srv_agent_state",
        "backend_forced_id": "bk_f_forced_id",
        "forced_id": "srv_f_forced_id",
        "check_port": "srv_check_port",
        "agent_port": "srv_agent_port",
    }
    texts = {
        "backend_name": "be_name",
        "name": "srv_name",
        "address": "srv_addr",
        "id": "srv_id",
        "fqdn": "srv_fqdn",
        "srvrecord": "srvrecord",
        "check_addr": "srv_check_addr",
        "agent_addr": "srv_agent_addr",
    }
    out: dict[str, Any] = {k: _int(fields.get(v, "")) for k, v in numbers.items()}
    out.update({k: fields.get(v, "") for k, v in texts.items()})
    out["admin_state"] = admin_state(fields.get("srv_admin_state", "0"))
    out["operational_state"] = _OPERATIONAL.get(fields.get("srv_op_state", ""), "")
    out["use_ssl"] = fields.get("srv_use_ssl") == "1"
    # omitempty: nil pointers and empty strings go; a 0 behind a pointer stays, "-" stays.
    return {k: v for k, v in out.items() if v is not None and v != ""}


class RuntimeServers:
    """The runtime server endpoints of one HAProxy."""

    def __init__(self, command: Command, *, capabilities: Capabilities) -> None:
        """`command`: one stats socket command to its reply (ApiError when none comes);
        `capabilities`: the running HAProxy's (`add server` keywords depend on its version)."""
        self._command = command
        self.capabilities = capabilities

    def servers(self, backend: str) -> list[dict[str, Any]]:
        reply = self._command(f"show servers state {backend}")
        lines = reply.splitlines()
        if not lines or lines[0].strip() != "1":
            raise ApiError(404, f"backend {backend}: {reply.strip()}")
        header: list[str] = []
        found = []
        for line in lines[1:]:
            if line.startswith("#"):
                header = line.lstrip("# ").split()
            elif line.strip():
                found.append(runtime_server(dict(zip(header, line.split(), strict=False))))
        return found

    def server(self, backend: str, name: str) -> dict[str, Any]:
        for server in self.servers(backend):
            if server.get("name") == name:
                return server
        raise ApiError(404, f"server state for {backend}/{name}: not found")

    def list_servers(self, request: Request) -> Response:
        return Response.json(200, self.servers(request.params["parent_name"]))

    def get_server(self, request: Request) -> Response:
        return Response.json(
            200, self.server(request.params["parent_name"], request.params["name"])
        )

    def replace_server(self, request: Request) -> Response:
        backend, name = request.params["parent_name"], request.params["name"]
        data = request.json()
        _check_server_body(data)
        now = self.server(backend, name)
        target = f"set server {backend}/{name}"
        # (command, its undo) in dataplaneapi's order, each only when it changes something.
        steps: list[tuple[str, str]] = []
        for key, verb in (
            ("operational_state", "health"),
            ("admin_state", "state"),
            ("weight", "weight"),
        ):
            wanted = data.get(key)
            if wanted is not None and wanted != "" and wanted != now.get(key):
                steps.append((f"{verb} {wanted}", f"{verb} {now.get(key, 0)}"))
        address = data.get("address") or now.get("address")
        port = data["port"] if data.get("port") is not None else now.get("port", 0)
        if (address, port) != (now.get("address"), now.get("port")):
            steps.append((f"addr {address} port {port}" if port else f"addr {address}", ""))
        done: list[str] = []
        for step, undo in steps:
            reply = self._command(f"{target} {step}")
            if not _succeeded(step, reply):
                for previous in reversed(done):  # best effort, as dataplaneapi rolls back
                    self._command(f"{target} {previous}")
                raise ApiError(404 if "No such" in reply else 500, f"{reply} [{target} {step}]")
            done.append(undo)
        return Response.json(200, self.server(backend, name))

    def add_server(self, request: Request) -> Response:
        backend = request.params["parent_name"]
        data = request.json()
        name = data.get("name")
        if not name:
            raise ApiError(400, "the new server must have a name")
        command = f"add server {backend}/{name} {self._add_attributes(data)}"
        reply = self._command(command)
        if "New server registered" in reply:
            return Response.json(201, data)
        status = 404 if "No such backend" in reply else 409 if "Already exists" in reply else 500
        raise ApiError(status, f"{reply} [{command}]")

    def delete_server(self, request: Request) -> Response:
        backend, name = request.params["parent_name"], request.params["name"]
        if self.server(backend, name).get("admin_state") != "maint":
            self._command(f"disable server {backend}/{name}")
        reply = self._command(f"del server {backend}/{name}")
        if "Server deleted" not in reply:
            raise ApiError(404 if "No such" in reply else 500, f"{reply} [del server]")
        return Response(204)

    def _add_attributes(self, data: dict[str, Any]) -> str:
        words = [str(data.get("address", "")) + (f":{data['port']}" if data.get("port") else "")]
        for key, value in data.items():
            if key in ("name", "address", "port"):
                continue
            if key in _FLAGS:
                if value == "enabled":
                    words.append(_FLAGS[key])
            elif key in _VALUED:
                words.extend([_VALUED[key], str(value)])
            elif key == "maintenance":
                if value == "enabled":
                    words.append("disabled")
                elif value == "disabled" and self.capabilities.version < Version(3, 0):
                    words.append("enabled")  # as dataplaneapi does; from 3.0 it adds nothing
            else:
                raise ApiError(400, f"emulator: runtime_add_server field {key!r} is not emulated")
        return " ".join(words)


def _succeeded(step: str, reply: str) -> bool:
    if step.startswith("addr "):
        return "changed from" in reply or "no need to change" in reply or reply == "nothing changed"
    return reply == ""


def _check_server_body(data: dict[str, Any]) -> None:
    """The runtime_server schema's checks on what PUT acts on (422, as kin-openapi)."""
    for key, allowed in (("admin_state", ADMIN_STATES), ("operational_state", OPERATIONAL_STATES)):
        if key in data and data[key] not in allowed:
            raise ApiError(422, f'Error at "/{key}": value is not one of the allowed values')
    port = data.get("port")
    if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
        raise ApiError(422, 'Error at "/port": number must be between 1 and 65535')
    weight = data.get("weight")
    if weight is not None and not isinstance(weight, int):
        raise ApiError(422, 'Error at "/weight": value must be an integer')
    address = data.get("address")
    if address is not None and (not isinstance(address, str) or not address or " " in address):
        raise ApiError(422, 'Error at "/address": string doesn\'t match the pattern')
