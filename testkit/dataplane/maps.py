"""maps: the emulator's runtime map entry endpoints, on HAProxy's stats socket.

Owns `/v3/services/haproxy/runtime/maps/{parent_name}/entries[/{id}]` (`{id}` is the key): the
commands dataplaneapi v3.4.2 (client-native v6) sends (`show map`, `add map`, `set map`,
`del map`), how HAProxy's replies become statuses, and the spec's `map_entry` JSON. A map name
is `<maps_dir>/<name>`, `.map` appended when missing (client-native's maps-dir resolution);
the running HAProxy must have loaded that very file. Entries change in HAProxy only, unless
`force_sync=true` writes them back to the file (a reload reads the file again).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from testkit.dataplane.wire import ApiError, Request, Response

Command = Callable[[str], str]


class RuntimeMaps:
    """The runtime map entry endpoints of one HAProxy, for the maps under `maps_dir`."""

    def __init__(self, command: Command, *, maps_dir: Path) -> None:
        """`command`: one stats socket command to its reply (ApiError when none comes)."""
        self._command = command
        self.maps_dir = maps_dir

    def map_path(self, name: str) -> str:
        """`<maps_dir>/<name>`, `.map` appended when missing; `#<id>` as it is."""
        if name.startswith("#"):
            return name
        return str(self.maps_dir / (name if name.endswith(".map") else f"{name}.map"))

    def entries(self, name: str) -> list[dict[str, str]]:
        reply = self._command(f"show map {self.map_path(name)}")
        if reply.startswith("Unknown map identifier"):
            raise ApiError(404, f"{reply} not found")
        found = []
        for line in reply.splitlines():
            parts = line.split()
            # client-native keeps the third word only: a value with spaces is cut there.
            if len(parts) >= 3 and not line.startswith("#"):
                found.append({"id": parts[0], "key": parts[1], "value": parts[2]})
        return found

    def entry(self, name: str, key: str) -> dict[str, str]:
        for entry in self.entries(name):
            if entry["key"] == key:
                return {"key": entry["key"], "value": entry["value"]}
        raise ApiError(404, f"{key} not found")

    def list_entries(self, request: Request) -> Response:
        return Response.json(200, self.entries(request.params["parent_name"]))

    def get_entry(self, request: Request) -> Response:
        return Response.json(200, self.entry(request.params["parent_name"], request.params["id"]))

    def add_entry(self, request: Request) -> Response:
        name = request.params["parent_name"]
        data = request.json()
        key, value = data.get("key"), data.get("value")
        if not isinstance(key, str) or not isinstance(value, str) or not key or not value:
            raise ApiError(422, "key and value must be non-empty strings")
        if any(e["key"] == key for e in self._entries_or_none(name)):
            raise ApiError(409, "already exists")
        reply = self._command(f"add map {self.map_path(name)} {key} {value}")
        if reply:
            raise ApiError(400, f"{reply} [add map]")
        self._sync(request, name)
        return Response.json(201, data)

    def replace_entry(self, request: Request) -> Response:
        name, key = request.params["parent_name"], request.params["id"]
        value = request.json().get("value")
        if not isinstance(value, str):
            raise ApiError(422, 'property "value" is missing')
        reply = self._command(f"set map {self.map_path(name)} {key} {value}")
        if reply:
            raise ApiError(404, f"{reply} not found")
        self._sync(request, name)
        return Response.json(200, self.entry(name, key))

    def delete_entry(self, request: Request) -> Response:
        name, key = request.params["parent_name"], request.params["id"]
        reply = self._command(f"del map {self.map_path(name)} {key}")
        if reply:
            raise ApiError(404, f"{reply} not found")
        # The spec says every entry with the key goes: `del map` removes them all on 2.6 but
        # only one of them on 3.4 (a key added twice at runtime).
        for _ in range(100):
            if not any(e["key"] == key for e in self._entries_or_none(name)):
                break
            self._command(f"del map {self.map_path(name)} {key}")
        self._sync(request, name)
        return Response(204)

    def _entries_or_none(self, name: str) -> list[dict[str, str]]:
        try:
            return self.entries(name)
        except ApiError:
            return []

    def _sync(self, request: Request, name: str) -> None:
        """force_sync=true: the runtime contents written back to the map file."""
        if request.flag("force_sync") and not name.startswith("#"):
            lines = "".join(f"{e['key']} {e['value']}\n" for e in self.entries(name))
            Path(self.map_path(name)).write_text(lines, encoding="utf-8")
