"""remote: the client of a running controller's /status, for `status` and `explain`.

One GET of JSON from the controller's --listen address, with a timeout; what comes back is
read into the report's dataclasses (wire.py), checked field by field. A controller that cannot
be reached, or answers something else, is an environment error naming the address; a service
it does not know is an input error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import TypeVar

from kube2haproxy.errors import EnvironmentProblem, InputError
from kube2haproxy.model import hostport
from kube2haproxy.settings import parse_listen
from kube2haproxy.wire import WireError, decode

T = TypeVar("T")
MAX_ANSWER = 256 * 1024 * 1024  # a report of 50,000 services is tens of MB


def url_of(listen: str, path: str, query: dict[str, str] | None = None) -> str:
    """http://host:port/path?query for a --listen value (`:9333`: this host)."""
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise InputError(f"--listen {exc}") from exc
    if host in ("", "0.0.0.0"):  # noqa: S104 - every address: ask this host's
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    wanted = {k: v for k, v in (query or {}).items() if v}
    suffix = f"?{urllib.parse.urlencode(wanted)}" if wanted else ""
    return f"http://{hostport(host, port)}{path}{suffix}"


def fetch(cls: type[T], url: str, *, kind: str, timeout_s: float) -> T:
    """GET `url` and read its JSON as a `cls` (whose `kind` field says `kind`)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            body = answer.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        message = _error_of(exc.read(4096))
        if exc.code == 404:
            raise InputError(message or f"{url}: not found") from exc
        raise EnvironmentProblem(f"{url}: HTTP {exc.code}: {message or exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnvironmentProblem(
            f"{url}: cannot reach the controller ({reason}); is `kube2haproxy run` serving "
            "on that --listen address?"
        ) from exc
    if len(body) > MAX_ANSWER:
        raise EnvironmentProblem(f"{url}: answer larger than {MAX_ANSWER} bytes")
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("kind") != kind:
            raise WireError(f"not a {kind}")
        if data.get("version") != 1:
            raise WireError(f"version {data.get('version')!r} (this command reads 1)")
        return decode(cls, data)
    except (ValueError, WireError) as exc:
        raise EnvironmentProblem(f"{url}: not a controller's answer: {exc}") from exc


def _error_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    message = data.get("error") if isinstance(data, dict) else None
    return message if isinstance(message, str) else ""
