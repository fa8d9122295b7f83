"""dataplane_client: HAProxy's Data Plane API (v3) over HTTP; the only code that imports requests.

Owns the wire: the base URL and `/v3`, HTTP basic auth, TLS verification, a timeout on every
call, the endpoints the applier uses as dataplaneapi v3.4.2 answers them
(`specification/build/dataplane_spec.yaml`), and how a call that fails becomes an error of
errors.py naming the endpoint, the status and the API's message: no answer (refused, reset, timed
out, a TLS failure) is HAProxyUnavailable, 401 and 403 AccessRefused, any other status the
caller did not expect UnexpectedAnswer. Error bodies are `{"code", "message"}` whatever their
Content-Type says (dataplaneapi up to 3.2 sent them as text/plain).

Whole configs go through `Pusher`: one push at a time, each with the configuration version it
replaces (optimistic concurrency: a 409 re-reads the version and pushes again, CONFLICT_RETRIES
times), and the file written without a reload in the background after runtime updates.

The password lives in the session's auth and nowhere else: not in a message (the API's own text
is scrubbed of it too), a log line or a repr.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import urllib3

from kube2haproxy import configfile
from kube2haproxy.errors import (
    AccessRefused,
    ConfigRefused,
    EnvironmentProblem,
    HAProxyUnavailable,
    Kube2HAProxyError,
    UnexpectedAnswer,
)

log = logging.getLogger(__name__)

API = "/v3"
RAW = "/services/haproxy/configuration/raw"
VERSION = "/services/haproxy/configuration/version"
RELOADS = "/services/haproxy/reloads"
SERVERS = "/services/haproxy/runtime/backends/{backend}/servers"
STORAGE_MAPS = "/services/haproxy/storage/maps"
HEALTH = "/health"
# Pushes after a 409 before giving up for this apply (retried after the controller's backoff): a
# writer that wins four races in a row is another controller fighting us, not bad luck.
CONFLICT_RETRIES = 3


def read_password(path: str) -> str:
    """The password in `path`, one trailing newline dropped (what `echo` and editors add).
    EnvironmentProblem naming the file, never its content, when it cannot be used."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise EnvironmentProblem(f"--dataplane-password-file {path}: {reason}") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password or "\n" in password:
        raise EnvironmentProblem(
            f"--dataplane-password-file {path}: expected the password on one line"
        )
    return password


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    text: str
    headers: Mapping[str, str]  # case-insensitive: "Reload-ID" arrives as "Reload-Id"

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def version(self) -> int | None:
        """The configuration version on the API's disk when it answered (every answer says)."""
        value = self.headers.get("Configuration-Version", "")
        return int(value) if value.isdigit() else None


class DataplaneClient:
    """One session (keep-alive) to the API: use it from one thread at a time; `copy` gives
    another with the same settings."""

    def __init__(
        self, *, url: str, username: str, password: str, verify: bool | str, timeout_s: float
    ) -> None:
        """`verify`: check the API's certificate (True), against this CA file (a path), or
        not at all (False)."""
        self.url = url.rstrip("/")
        self.username = username
        self.verify = verify
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.auth = (username, password)
        self._session.headers["User-Agent"] = "kube2haproxy"
        self._password = password
        if verify is False:  # the operator's choice, said once at start rather than per call
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def __repr__(self) -> str:
        return f"DataplaneClient({self.url!r}, user {self.username!r})"

    def copy(self) -> DataplaneClient:
        return DataplaneClient(
            url=self.url,
            username=self.username,
            password=self._password,
            verify=self.verify,
            timeout_s=self.timeout_s,
        )

    def close(self) -> None:
        self._session.close()

    # --- the endpoints --------------------------------------------------------------------

    def version(self) -> int:
        """The configuration version on the API's disk."""
        answer = self.call("GET", VERSION)
        value = answer.json()
        if not isinstance(value, int):
            raise self._unexpected("GET", VERSION, answer, "not an integer")
        return value

    def raw(self) -> str:
        """The config file on the API's disk, its `# _version=N` line included."""
        return self.call("GET", RAW).text

    def push(self, text: str, *, version: int, reload: str, timeout_s: float) -> Answer:
        """POST the whole config with the version it replaces; `reload` is "force" (reload now,
        answer its outcome: 201 or 400), "queued" (202 and a Reload-Id) or "skip" (write the
        file only, 201). The answers a caller handles (400 refused, 409 another writer's
        version) are returned, not raised."""
        params = {"version": str(version)}
        if reload == "force":
            params["force_reload"] = "true"
        elif reload == "skip":
            params["skip_reload"] = "true"
        return self.call(
            "POST",
            RAW,
            params=params,
            data=text.encode(),
            headers={"Content-Type": "text/plain"},
            expect=(201, 202, 400, 409),
            timeout_s=timeout_s,
        )

    def reload_status(self, reload_id: str) -> dict[str, Any]:
        """A queued or past reload: {"status": "in_progress" | "succeeded" | "failed", ...}."""
        answer = self.call("GET", f"{RELOADS}/{quote(reload_id, safe='')}")
        return _object(answer.json())

    def servers(self, backend: str) -> list[dict[str, Any]] | None:
        """The runtime servers of a backend, or None when HAProxy runs no such backend."""
        path = SERVERS.format(backend=quote(backend, safe=""))
        answer = self.call("GET", path, expect=(200, 404))
        if answer.status == 404:
            return None
        found = answer.json()
        if not isinstance(found, list):
            raise self._unexpected("GET", path, answer, "not a list")
        return [_object(item) for item in found]

    def server(self, backend: str, server: str) -> dict[str, Any]:
        """One runtime server."""
        return _object(self.call("GET", _server_path(backend, server)).json())

    def set_server(self, backend: str, server: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT a runtime server's address, port, admin state or weight; what it is now."""
        return _object(self.call("PUT", _server_path(backend, server), json_body=dict(body)).json())

    def health(self) -> str:
        """ "up", "down" or "unknown" (no status command configured in the API)."""
        return str(_object(self.call("GET", HEALTH).json()).get("haproxy", "unknown"))

    def storage_maps(self) -> dict[str, str]:
        """The map files in the API's storage: name -> full path on its host."""
        found = self.call("GET", STORAGE_MAPS).json()
        if not isinstance(found, list):
            return {}
        return {str(m.get("storage_name")): str(m.get("file")) for m in map(_object, found)}

    def upload_map(self, name: str, text: str) -> str | None:
        """Store a new map file; its full path on the API's host, None when one of that name
        is there already."""
        answer = self.call(
            "POST",
            STORAGE_MAPS,
            files={"file_upload": (name, text.encode(), "text/plain")},
            expect=(201, 409),
        )
        return None if answer.status == 409 else str(_object(answer.json()).get("file", ""))

    def delete_map(self, name: str) -> bool:
        """Delete a stored map file; False when the running config still names it (409) or
        it is gone already (404)."""
        path = f"{STORAGE_MAPS}/{quote(name, safe='')}"
        return self.call("DELETE", path, expect=(204, 404, 409)).status == 204

    # --- the wire -------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200,),
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        timeout_s: float | None = None,
    ) -> Answer:
        """One request; the answer when its status is in `expect`, else the error it means."""
        endpoint = f"{method} {API}{path}"
        read_s = timeout_s or self.timeout_s
        try:
            response = self._session.request(
                method,
                self.url + API + path,
                params=params,
                data=data,
                json=json_body,
                headers=headers,
                files=files,
                timeout=(self.timeout_s, read_s),
                # Per request: a session's `verify` loses to REQUESTS_CA_BUNDLE in the
                # environment, and --dataplane-ca-file must not.
                verify=self.verify,
            )
        except requests.exceptions.SSLError as exc:
            raise HAProxyUnavailable(
                f"Data Plane API {endpoint}: TLS failed ({self._reason(exc)}); check "
                "--dataplane-ca-file, or the URL's host name against the certificate"
            ) from None
        except requests.Timeout:
            raise HAProxyUnavailable(
                f"Data Plane API {endpoint}: no answer from {self.url} within {read_s:g}s"
            ) from None
        except requests.RequestException as exc:
            raise HAProxyUnavailable(
                f"Data Plane API {endpoint}: cannot reach {self.url}: {self._reason(exc)}"
            ) from None
        answer = Answer(response.status_code, response.text, response.headers)
        if answer.status in expect:
            return answer
        message = self.message(answer)
        if answer.status == 401:
            raise AccessRefused(
                f"Data Plane API {endpoint}: 401 {message}: the API refuses user "
                f"{self.username!r} with the password of --dataplane-password-file"
            )
        if answer.status == 403:
            raise AccessRefused(
                f"Data Plane API {endpoint}: 403 {message}: user {self.username!r} may not do this"
            )
        raise UnexpectedAnswer(
            f"Data Plane API {endpoint}: {answer.status}: {message}", status=answer.status
        )

    def message(self, answer: Answer) -> str:
        """The API's message in an answer (an error's `message`, else its text), scrubbed."""
        return self._scrub(_message(answer))

    def _unexpected(self, method: str, path: str, answer: Answer, what: str) -> UnexpectedAnswer:
        body = self._scrub(answer.text[:200])
        return UnexpectedAnswer(
            f"Data Plane API {method} {API}{path}: {answer.status}, {what}: {body!r}",
            status=answer.status,
        )

    def _reason(self, exc: BaseException) -> str:
        """What went wrong, short: urllib3's wrapping repeats the URL and object reprs."""
        text = str(exc)
        errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
        if errno:
            return errno.group(0).strip()
        ssl = re.search(r"\[SSL[^\]]*\] [^'\")]+", text)
        return self._scrub((ssl.group(0) if ssl else text)[:300])

    def _scrub(self, text: str) -> str:
        """No password in anything we say, whatever the API echoes back."""
        return text.replace(self._password, "***") if self._password else text


class Pusher:
    """Pushes whole configs through the raw configuration endpoint, one at a time, with the
    version each replaces; and brings the API's file in step after runtime updates in the
    background (`sync`: the newest text wins; `flush` waits until it is written)."""

    def __init__(self, client: DataplaneClient, *, check_timeout_s: float) -> None:
        self.client = client  # used under _lock only
        self.version: int | None = None  # the version our last write left on the API's disk
        self._timeout_s = check_timeout_s + client.timeout_s
        self._lock = threading.Lock()
        self.sync = configfile.Background(
            self._write, what="the Data Plane API's config file", name="dataplane-sync"
        )

    def push(self, text: str, *, reload: str, timeout_s: float) -> Answer:
        """POST `text` (see DataplaneClient.push); a 409 re-reads the version and pushes again,
        CONFLICT_RETRIES times. The answer: 201, 202 or 400."""
        with self._lock:
            for _ in range(CONFLICT_RETRIES + 1):
                if self.version is None:
                    self.version = self.client.version()
                answer = self.client.push(
                    text, version=self.version, reload=reload, timeout_s=timeout_s
                )
                if answer.status != 409:
                    self.version = answer.version or self.version
                    return answer
                ours, self.version = self.version, self.client.version()
                log.warning(
                    "the Data Plane API's configuration changed under us (version %d, we had "
                    "%d): another writer; pushing again",
                    self.version,
                    ours,
                )
            raise HAProxyUnavailable(
                f"Data Plane API POST {API}{RAW}: 409 {CONFLICT_RETRIES + 1} times in a row: "
                f"another writer keeps changing the configuration (version {self.version})"
            )

    def _write(self, text: str) -> None:
        """The API's file, without a reload: what runs after a runtime update."""
        try:
            answer = self.push(text, reload="skip", timeout_s=self._timeout_s)
            if answer.status != 201:
                raise ConfigRefused(self.client.message(answer))
        except Kube2HAProxyError as exc:
            raise EnvironmentProblem(
                f"cannot write the running config to the Data Plane API ({exc}): a reload "
                "there would load older servers until our next push"
            ) from exc


def _server_path(backend: str, server: str) -> str:
    return SERVERS.format(backend=quote(backend, safe="")) + "/" + quote(server, safe="")


def _message(answer: Answer) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()[:1000] or "(no message)"
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return answer.text.strip()[:1000]


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
