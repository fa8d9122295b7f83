"""configuration: the emulator's endpoints about the config file and its reloads.

Owns `/v3/info`, `/v3/health`, `/v3/services/haproxy/configuration/version`,
`/v3/services/haproxy/configuration/raw` (GET and POST) and `/v3/services/haproxy/reloads[/{id}]`
as dataplaneapi v3.4.2 answers them (handlers/configuration/raw, client-native's
PostRawConfiguration, reload_agent):

- raw POST, in dataplaneapi's order: a body without a newline is 400; `only_validate` checks the
  body and answers 202 with the config *on disk*; without `version` (and `skip_version`) 400; a
  version other than the one on disk 409; then `haproxy -c` (400 with HAProxy's output); the
  body is written with `# _version=N+1` first (`skip_version`: as posted); then `skip_reload`
  201, `force_reload` a synchronous reload, 201 (400 "Reload failed: ..." when HAProxy refuses
  it), else 202 and the queued reload's id in `Reload-Id`. Every success answers the config now
  on disk, as text/plain.
- A reload HAProxy refuses puts the last known good file back, its version included.
"""

from __future__ import annotations

import threading

from kube2haproxy.errors import CheckError, ConfigRefused
from testkit.dataplane.haproxy import DrivenHAProxy, with_version
from testkit.dataplane.reloads import ReloadAgent, ReloadFailed
from testkit.dataplane.wire import TEXT_TYPE, ApiError, Request, Response

SPEC_VERSION = "v3.4.2"


class ConfigurationEndpoints:
    """The config file endpoints of one HAProxy, and its reload agent."""

    def __init__(self, haproxy: DrivenHAProxy, *, reload_delay_s: float) -> None:
        self.haproxy = haproxy
        # One lock for the file and the reload agent: a write, its version check and the
        # reload that follows never interleave with another write or reload.
        self.lock = threading.RLock()
        self.reload_agent = ReloadAgent(self._reload, delay_s=reload_delay_s, lock=self.lock)

    def bump_version(self) -> int:
        with self.lock:
            version = self.haproxy.version() + 1
            self.haproxy.write(with_version(self.haproxy.read(), version))
            return version

    def info(self, request: Request) -> Response:
        api = {"build_date": "2026-01-01T00:00:00.000Z", "version": f"{SPEC_VERSION} emulator"}
        return Response.json(200, {"api": api, "system": {}})

    def health(self, request: Request) -> Response:
        return Response.json(200, {"haproxy": "up" if self.haproxy.up() else "down"})

    def version(self, request: Request) -> Response:
        _no_transaction(request)
        return Response.json(200, self.haproxy.version())

    def get_raw(self, request: Request) -> Response:
        _no_transaction(request)
        if request.integer("version"):
            raise ApiError(400, "emulator: configuration backups are not emulated")
        return Response.text(200, self.haproxy.read())

    def post_raw(self, request: Request) -> Response:
        try:
            body = request.content(TEXT_TYPE).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"invalid configuration: {exc}") from None
        if "\n" not in body:
            raise ApiError(400, "invalid configuration: no newline character found")
        if request.headers.get("X-Runtime-Actions"):
            raise ApiError(400, "emulator: X-Runtime-Actions is not emulated")
        version, skip_version = request.integer("version"), request.flag("skip_version")
        skip_reload, force_reload = request.flag("skip_reload"), request.flag("force_reload")
        with self.lock:
            if request.flag("only_validate"):
                self._check(body)
                return Response.text(202, self.haproxy.read())
            if skip_version:
                text = body
            else:
                if version == 0:
                    raise ApiError(400, "version or transaction not specified, specify only one")
                on_disk = self.haproxy.version()
                if on_disk != version:
                    raise ApiError(
                        409,
                        f"version in configuration file is {on_disk}, given version is {version}",
                    )
                text = with_version(body, version + 1)
            self._check(text)
            self.haproxy.write(text)
            if skip_reload:
                return Response.text(201, self.haproxy.read())
            if force_reload:
                try:
                    self.reload_agent.force()
                except ReloadFailed as exc:
                    raise ApiError(400, str(exc)) from None
                return Response.text(201, self.haproxy.read())
            reload_id = self.reload_agent.schedule()
            # Go canonicalizes the spec's "Reload-ID" to this on the wire (match it in any case).
            return Response.text(202, self.haproxy.read(), {"Reload-Id": reload_id})

    def reloads(self, request: Request) -> Response:
        return Response.json(200, self.reload_agent.reloads())

    def reload(self, request: Request) -> Response:
        reload_id = request.params["id"]
        found = self.reload_agent.get(reload_id)
        if found is None:
            raise ApiError(404, f"Reload with ID {reload_id} does not exist")
        return Response.json(200, found)

    def _check(self, text: str) -> None:
        try:
            self.haproxy.check(text)
        except CheckError as exc:
            raise ApiError(400, exc.output or str(exc)) from None

    def _reload(self) -> str:
        try:
            self.haproxy.reload()
        except ConfigRefused as exc:
            raise ReloadFailed(str(exc), response=exc.output) from exc
        return ""  # HAProxy's startup log is only kept for a refusal


def _no_transaction(request: Request) -> None:
    if request.query.get("transaction_id"):
        raise ApiError(400, "emulator: transactions are not emulated")
