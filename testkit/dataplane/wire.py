"""wire: what every endpoint of the emulator shares on the wire, as dataplaneapi v3.4.2 does it.

Owns the request and response values the endpoints see: errors as `{"code": <status>,
"message": ...}` (code = the HTTP status) with `Content-Type: application/json`; JSON written
compactly, keys sorted, with a trailing newline (Go's json.Encoder on generated structs); query
parameters read as kin-openapi reads them (400 with its wording for a bad boolean or integer);
request bodies of the one media type an operation declares (415 otherwise, 400 when missing or
malformed, 422 when not an object); path parameters checked against the spec's patterns; 406
for an `Accept` header none of an operation's response types match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import unquote

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain"
# The spec's pattern for every name in a runtime path (parent_name, name, id).
NAME_PATTERN = re.compile(r'^[^\r\n<>*;$#&{}"]+$')


class ApiError(Exception):
    """An error answer: `{"code": status, "message": message}`."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> Response:
        # Go's json.Encoder: compact, no HTML escaping, one trailing newline; models are structs
        # whose fields are in alphabetical order, maps are sorted: sort_keys matches both.
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        return cls(status, (text + "\n").encode(), JSON_TYPE, dict(headers or {}))

    @classmethod
    def text(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, text.encode(), TEXT_TYPE, dict(headers or {}))

    @classmethod
    def error(cls, error: ApiError) -> Response:
        return cls.json(
            error.status, {"code": error.status, "message": error.message}, error.headers
        )


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # path parameters, unescaped

    def flag(self, name: str) -> bool:
        """A boolean query parameter (default false), as kin-openapi reads one."""
        value = self.query.get(name)
        if value is None or value == "":
            return False
        if value in ("true", "1", "t", "T", "TRUE", "True"):
            return True
        if value in ("false", "0", "f", "F", "FALSE", "False"):
            return False
        raise ApiError(400, f"{name} in query: value {value}: an invalid boolean: invalid syntax")

    def integer(self, name: str) -> int:
        """An integer query parameter (0 when absent, as the Go handlers see it)."""
        value = self.query.get(name)
        if value is None or value == "":
            return 0
        try:
            return int(value)
        except ValueError:
            raise ApiError(
                400, f"{name} in query: value {value}: an invalid integer: invalid syntax"
            ) from None

    def content(self, expected: str) -> bytes:
        """The body, of the one media type the operation declares (415 otherwise)."""
        declared = self.headers.get("Content-Type", "")
        media = declared.split(";", 1)[0].strip()
        if media.lower() != expected:
            raise ApiError(415, f'header Content-Type has unexpected value "{media}"')
        if not self.body:
            raise ApiError(400, "value is required but missing")
        return self.body

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.content(JSON_TYPE))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"failed to decode request body: {exc}") from None
        if not isinstance(value, dict):
            raise ApiError(422, "value must be an object")
        return value


Handler = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str  # after /v3, with {name} placeholders
    handler: Handler
    produces: tuple[str, ...] = (JSON_TYPE,)
    patterns: Mapping[str, re.Pattern[str]] = field(default_factory=dict)  # else NAME_PATTERN

    def match(self, path: str) -> dict[str, str] | None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.pattern)
        found = re.fullmatch("/v3" + regex, path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}

    def check(self, params: Mapping[str, str]) -> None:
        """400 for a path parameter the spec's pattern refuses, as kin-openapi words it."""
        for name, value in params.items():
            pattern = self.patterns.get(name, NAME_PATTERN)
            if not pattern.match(value):
                raise ApiError(
                    400,
                    f"{name} in path: string doesn't match the regular expression "
                    f'"{pattern.pattern}"',
                )


def negotiate(accept: str, produced: tuple[str, ...]) -> None:
    """406 unless the Accept header takes one of the operation's response types."""
    if not accept.strip():
        return
    for item in accept.split(","):
        media = item.split(";", 1)[0].strip().lower()
        if media == "*/*" or media in produced:
            return
        if media.endswith("/*") and any(p.startswith(media[:-1]) for p in produced):
            return
    raise ApiError(
        406, f"unsupported media type requested, only [{' '.join(sorted(produced))}] are available"
    )
