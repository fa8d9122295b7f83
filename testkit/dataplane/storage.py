"""storage: the emulator's map storage endpoints: map files on the API's host.

Owns `/v3/services/haproxy/storage/maps[/{name}]` as dataplaneapi v3.4.2 answers them
(handlers/storage/maps, client-native's storage): GET lists the files of maps_dir (`map` objects:
`storage_name`, `file`, "managed map file"); POST stores a new file from the multipart/form-data
part `file_upload` (its file name reduced to a base name, `.map` appended when missing; 409 when
it exists; 201 with the `map` object and its size); GET one answers its bytes as
application/octet-stream; DELETE removes one (204), unless a line of the config on disk that is
not a comment names its path (409, "rejecting attempt to delete file ... referenced in haproxy
conf at line N: ..."; dataplaneapi checks its parsed running config), 404 when it is missing.
Files only: nothing reaches HAProxy until a config names them and reloads. PUT (replace the file,
then reload) is not emulated.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Callable
from pathlib import Path

from testkit.dataplane.wire import ApiError, Request, Response


class StorageMaps:
    """The map files under `maps_dir`; `config` reads the config file on disk."""

    def __init__(self, maps_dir: Path, *, config: Callable[[], str]) -> None:
        self.maps_dir = maps_dir
        self._config = config

    def _path(self, name: str) -> Path:
        path = self.maps_dir / Path(name).name
        if not path.is_file():
            raise ApiError(404, f"file {Path(name).name} doesn't exist in dir: {self.maps_dir}")
        return path

    def list_maps(self, request: Request) -> Response:
        found = [
            {"description": "managed map file", "file": str(p), "storage_name": p.name}
            for p in sorted(self.maps_dir.iterdir())
            if p.is_file()
        ]
        return Response.json(200, found)

    def create_map(self, request: Request) -> Response:
        name, content = _upload(request)
        name = Path(name).name
        if not name.endswith(".map"):
            name += ".map"
        path = self.maps_dir / name
        if path.exists():
            raise ApiError(409, f"file {path} already exists")
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(content)
        tmp.replace(path)  # renameio, as client-native writes it
        return Response.json(
            201,
            {
                "description": "managed but not loaded map file (no runtime ID)",
                "file": str(path),
                "size": len(content),
                "storage_name": name,
            },
        )

    def get_map(self, request: Request) -> Response:
        content = self._path(request.params["name"]).read_bytes()
        return Response(200, content, "application/octet-stream")

    def delete_map(self, request: Request) -> Response:
        path = self._path(request.params["name"])
        for number, text in enumerate(self._config().splitlines()):
            line = text.strip()
            if str(path) in line and not line.startswith("#"):
                raise ApiError(
                    409,
                    f"rejecting attempt to delete file {path} referenced in haproxy conf at "
                    f"line {number - 1}: {line}",  # dataplaneapi's count, off by one
                )
        path.unlink()
        return Response(204)


def _upload(request: Request) -> tuple[str, bytes]:
    """The `file_upload` part of a multipart/form-data body: its file name and content."""
    declared = request.headers.get("Content-Type", "")
    if declared.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, f'header Content-Type has unexpected value "{declared}"')
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + declared.encode() + b"\r\n\r\n" + request.body
    )
    if not message.is_multipart():
        raise ApiError(400, "no multipart boundary param in Content-Type")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file_upload":
            filename = part.get_filename()
            payload = part.get_payload(decode=True)
            if not filename or not isinstance(payload, bytes):
                break
            return filename, payload
    raise ApiError(400, "http: no such file")
