"""What crosses the wire, shared by every other module: compact JSON, Go's boolean query flags,
the ``Status`` body of an error response (and ``Failure``, which carries one out of the code that
decides on it to the handler that sends it), the ``RequestRecord`` kept for every request, and
closing a socket abruptly."""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(code: int, message: str, reason: str | None = None) -> JSON:
    """A ``Status`` object as the API server sends with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which the API server uses for query flags."""
    if text in {"1", "t", "T", "TRUE", "true", "True"}:
        return True
    if text in {"0", "f", "F", "FALSE", "false", "False"}:
        return False
    raise ValueError(f"invalid boolean value {text!r}")


class Failure(Exception):
    """An error response: the status code and its Status body."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, body: JSON | None = None
    ) -> None:
        super().__init__(message)
        self.body = body or status_body(code, message, reason)
        self.code = code


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. Header names are lower-cased; for a repeated query
    parameter the first value is kept (as Go's url.Values.Get does). `body`: a POST's JSON."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    resource: str | None = None
    body: Any = None

    @property
    def watch(self) -> bool:
        try:
            return parse_bool(self.query.get("watch", "false"))
        except ValueError:
            return False


def shutdown(sock: socket.socket) -> None:
    """Shut a connection down both ways at once, with no HTTP-level goodbye."""
    with contextlib.suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)
