"""emulator: DataplaneEmulator, HAProxy's Data Plane API (v3) in front of a real HAProxy.

Follows dataplaneapi **v3.4.2** (`specification/build/dataplane_spec.yaml`, `info.version: "3.4"`)
as /work/notes/dataplane.md summarizes it. Owns the class tests use: its lifecycle, the routes,
and what tests inspect and inject. The endpoints are configuration.py's (config file, reloads),
servers.py's and maps.py's (runtime); HTTP is server.py's and wire.py's, reload ids reloads.py's
and the HAProxy behind it haproxy.py's.

Endpoints (all under `/v3`, all behind HTTP basic auth):

    GET  /info                                        {"api": {...}, "system": {}}
    GET  /health                                      {"haproxy": "up" | "down"}
    GET  /services/haproxy/configuration/version      7   (a bare integer)
    GET  /services/haproxy/configuration/raw          text/plain, the file with `# _version=N`
    POST /services/haproxy/configuration/raw          text/plain; ?version= &skip_version=
                                                      &skip_reload= &only_validate= &force_reload=
    GET  /services/haproxy/reloads[/{id}]
    GET|POST            /services/haproxy/runtime/backends/{parent_name}/servers
    GET|PUT|DELETE      /services/haproxy/runtime/backends/{parent_name}/servers/{name}
    GET|POST            /services/haproxy/runtime/maps/{parent_name}/entries
    GET|PUT|DELETE      /services/haproxy/runtime/maps/{parent_name}/entries/{id}
    GET|POST            /services/haproxy/storage/maps    (POST: multipart, part file_upload)
    GET|DELETE          /services/haproxy/storage/maps/{name}

The config a client POSTs must keep `stats socket <emulator.stats_socket> ... level admin` in
its global section: the runtime endpoints talk to HAProxy there. Maps are files under
`emulator.maps_dir`, named there by the map endpoints (`hosts` or `hosts.map` is
`<maps_dir>/hosts.map`) and uploaded there by the storage endpoints; a config uses them by that
full path. With `tls` (an `ssl.SSLContext` holding the server's certificate) the API is served
over HTTPS, as dataplaneapi's `tls_certificate` does.

Deviations from dataplaneapi, by design:
- The posted config is stored as posted (with its version line); dataplaneapi re-serializes it
  through its config parser, which may reformat it.
- A queued reload runs exactly `reload_delay_s` after it was queued (dataplaneapi: at its next
  ticker tick, 0 to reload_delay later).
- Transactions, `X-Runtime-Actions`, backups (`GET raw?version=`) and `runtime_add_server`
  fields outside a common subset are not emulated: 400 saying so. Neither is replacing a stored
  map (`PUT storage/maps/{name}`): 405.
- Request bodies are validated only for what the emulated endpoints act on (415, 422, 400).
- An unknown backend in the runtime server endpoints is 404 (dataplaneapi's answer to it was not
  pinned down and is likely a 500).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from types import TracebackType
from typing import Self

from kube2haproxy.errors import HAProxyUnavailable
from testkit.dataplane.configuration import ConfigurationEndpoints
from testkit.dataplane.haproxy import DrivenHAProxy
from testkit.dataplane.maps import RuntimeMaps
from testkit.dataplane.reloads import ID_PATTERN
from testkit.dataplane.server import ApiServer, Recorded
from testkit.dataplane.servers import RuntimeServers
from testkit.dataplane.storage import StorageMaps
from testkit.dataplane.wire import JSON_TYPE, TEXT_TYPE, ApiError, Route

RAW = "/services/haproxy/configuration/raw"
SERVERS = "/services/haproxy/runtime/backends/{parent_name}/servers"
ENTRIES = "/services/haproxy/runtime/maps/{parent_name}/entries"
STORAGE = "/services/haproxy/storage/maps"


class DataplaneEmulator:
    """The Data Plane API on 127.0.0.1:<ephemeral port>, driving a real HAProxy started in
    `workdir` (see haproxy.py for its layout). `start()`/`stop()`, or use it as a context
    manager; `url` is `http://127.0.0.1:PORT` (the API is under `url + "/v3"`):

        with DataplaneEmulator(haproxy_bin, tmp_path, user="admin", password="pw") as emu:
            config = f"global\\n    stats socket {emu.stats_socket} level admin\\n..."
            requests.post(f"{emu.url}/v3/services/haproxy/configuration/raw",
                          params={"version": emu.version, "force_reload": "true"},
                          data=config, headers={"Content-Type": "text/plain"}, auth=emu.auth)
    """

    def __init__(
        self,
        binary: str,
        workdir: Path | str,
        *,
        user: str = "admin",
        password: str = "adminpwd",
        reload_delay_s: float = 0.2,
        initial_config: str | None = None,
        maps_dir: Path | str | None = None,
        reload_timeout_s: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`initial_config`: what HAProxy starts with (as version 1); by default a minimal one
        with only the stats socket. `reload_delay_s`: how long a queued reload waits for more
        writes to join it (dataplaneapi's reload_delay, 5 s by default there). `maps_dir`:
        where map names resolve (dataplaneapi's maps_dir), `<workdir>/maps` by default."""
        self.user, self.password = user, password
        self.haproxy = DrivenHAProxy(
            binary,
            Path(workdir),
            initial_config=initial_config,
            maps_dir=None if maps_dir is None else Path(maps_dir),
            reload_timeout_s=reload_timeout_s,
        )
        self.configuration = ConfigurationEndpoints(self.haproxy, reload_delay_s=reload_delay_s)
        self.runtime_servers = RuntimeServers(self._command, capabilities=self.haproxy.capabilities)
        self.runtime_maps = RuntimeMaps(self._command, maps_dir=self.haproxy.maps_dir)
        self.storage_maps = StorageMaps(self.haproxy.maps_dir, config=self.haproxy.read)
        self.http = ApiServer(
            self._routes(), user=user, password=password, version=self.haproxy.version, tls=tls
        )

    # --- what tests use -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    @property
    def stats_socket(self) -> Path:
        return self.haproxy.stats_socket

    @property
    def maps_dir(self) -> Path:
        return self.haproxy.maps_dir

    @property
    def version(self) -> int:
        """The configuration version on disk."""
        return self.haproxy.version()

    @property
    def requests(self) -> list[Recorded]:
        """Every request answered so far, in order: method, path, query, status."""
        return self.http.requests

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions in the emulator's handlers (answered 500): a correct run
        leaves it empty."""
        return self.http.errors

    def config_text(self) -> str:
        """The config file as on disk (with its version line)."""
        return self.haproxy.read()

    def fail_next(
        self,
        status: int,
        message: str,
        *,
        path_prefix: str | None = None,
        method: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` requests matching (the full path starts with `path_prefix`, e.g.
        "/v3/services/haproxy/configuration/raw"; the method is `method`) answer `status` with
        `{"code": status, "message": message}` and do nothing else. Checked after auth."""
        self.http.fail_next(status, message, path_prefix=path_prefix, method=method, times=times)

    def bump_version(self) -> int:
        """Another writer: the version on disk goes up by one, nothing else changes (no
        reload); the new version."""
        return self.configuration.bump_version()

    def start(self) -> Self:
        try:
            self.haproxy.start()
            self.configuration.reload_agent.start()
            self.http.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.http.stop()
        self.configuration.reload_agent.stop()
        self.haproxy.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- behind the endpoints -------------------------------------------------------------

    def _routes(self) -> list[Route]:
        config, servers, maps = self.configuration, self.runtime_servers, self.runtime_maps
        storage = self.storage_maps
        text_or_json = (TEXT_TYPE, JSON_TYPE)
        return [
            Route("GET", "/info", config.info),
            Route("GET", "/health", config.health),
            Route("GET", "/services/haproxy/configuration/version", config.version),
            Route("GET", RAW, config.get_raw, text_or_json),
            Route("POST", RAW, config.post_raw, text_or_json),
            Route("GET", "/services/haproxy/reloads", config.reloads),
            Route(
                "GET", "/services/haproxy/reloads/{id}", config.reload, patterns={"id": ID_PATTERN}
            ),
            Route("GET", SERVERS, servers.list_servers),
            Route("POST", SERVERS, servers.add_server),
            Route("GET", SERVERS + "/{name}", servers.get_server),
            Route("PUT", SERVERS + "/{name}", servers.replace_server),
            Route("DELETE", SERVERS + "/{name}", servers.delete_server),
            Route("GET", ENTRIES, maps.list_entries),
            Route("POST", ENTRIES, maps.add_entry),
            Route("GET", ENTRIES + "/{id}", maps.get_entry),
            Route("PUT", ENTRIES + "/{id}", maps.replace_entry),
            Route("DELETE", ENTRIES + "/{id}", maps.delete_entry),
            Route("GET", STORAGE, storage.list_maps),
            Route("POST", STORAGE, storage.create_map),
            Route("GET", STORAGE + "/{name}", storage.get_map, ("application/octet-stream",)),
            Route("DELETE", STORAGE + "/{name}", storage.delete_map),
        ]

    def _command(self, command: str) -> str:
        """One runtime command for the endpoints: a command the stats socket cannot take is
        400, no answer 500 (dataplaneapi's answer to a runtime API it cannot reach)."""
        try:
            return self.haproxy.command(command)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except HAProxyUnavailable as exc:
            raise ApiError(500, f"runtime API: {exc}") from None
