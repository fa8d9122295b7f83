"""Strict grammars for every untrusted string that can reach haproxy.cfg.

Each parser either returns a canonical value built from a small alphabet or raises
`GrammarError`. Nothing is escaped: a value outside its grammar is rejected. Patterns use explicit
ASCII classes and `fullmatch` (so a trailing newline never slips past `$`), and numbers are matched
before `int()` sees them (`int` alone would take " 80", "8_0" and non-ASCII digits).
"""

from __future__ import annotations

import ipaddress
import re

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")
_UINT = re.compile(r"[0-9]{1,10}")
_DURATION = re.compile(r"([0-9]{1,10})(us|ms|s|m|h|d)?")
_IP_CHARS = re.compile(r"[0-9a-fA-F:.]{2,45}")
_CIDR = re.compile(r"([0-9a-fA-F:.]{2,45})(/[0-9]{1,3})?")
# An absolute URI path: RFC 3986 unreserved characters, "/", and percent-encoded octets. No
# quotes, spaces, "#", "\\", "$" or ";", which HAProxy's config parser would interpret.
_HTTP_PATH = re.compile(r"/(?:[A-Za-z0-9._~/!*+,=:@&?-]|%[0-9A-Fa-f]{2}){0,255}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")

_UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# HAProxy keeps timers in signed 32-bit milliseconds.
MAX_DURATION_MS = 2**31 - 1


class GrammarError(ValueError):
    """A value does not belong to its grammar; the message says what was expected."""


def dns_label(value: object) -> str:
    """An RFC 1123 label (namespaces, Service names): lowercase alphanumerics and '-', 1-63."""
    if isinstance(value, str) and _DNS_LABEL.fullmatch(value):
        return value
    raise GrammarError("expected a DNS label: 1-63 of [a-z0-9-], starting and ending alphanumeric")


def port_name(value: object) -> str:
    """An IANA service name (Service port names): 1-15 of [a-z0-9-], one letter, no '--'."""
    if (
        isinstance(value, str)
        and _PORT_NAME.fullmatch(value)
        and "--" not in value
        and any("a" <= c <= "z" for c in value)
    ):
        return value
    raise GrammarError("expected a port name: 1-15 of [a-z0-9-] with a letter and no '--'")


def integer(value: object, *, low: int, high: int) -> int:
    """A decimal integer in [low, high], from a string of ASCII digits or a JSON integer."""
    if isinstance(value, bool):
        raise GrammarError(f"expected an integer in {low}..{high}")
    if isinstance(value, str) and _UINT.fullmatch(value):
        number = int(value)
    elif isinstance(value, int):
        number = value
    else:
        raise GrammarError(f"expected an integer in {low}..{high}")
    if not low <= number <= high:
        raise GrammarError(f"expected an integer in {low}..{high}")
    return number


def duration_ms(value: object, *, low_ms: int = 1, high_ms: int = MAX_DURATION_MS) -> int:
    """An HAProxy duration (`500ms`, `30s`, `5m`, `1h`, `1d`; no unit means ms), in milliseconds."""
    expected = "expected a duration such as 500ms, 30s, 5m or 1h" + (
        f" (at least {low_ms}ms, at most {high_ms}ms)"
        if (low_ms, high_ms) != (1, MAX_DURATION_MS)
        else " (at most 24d)"
    )
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise GrammarError(expected)
    unit = match.group(2) or "ms"
    millis = int(match.group(1)) * _UNIT_MS[unit]
    whole = int(millis) if millis == int(millis) else int(millis) + 1
    if not low_ms <= whole <= high_ms:
        raise GrammarError(expected)
    return whole


def choice(value: object, options: tuple[str, ...]) -> str:
    if isinstance(value, str) and value in options:
        return value
    raise GrammarError("expected one of " + ", ".join(options))


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


# An IPv4 address that special_ip() finds ordinary: the endpoints' fast path.
ORDINARY_IPV4 = re.compile(
    r"(?!0\.0\.0\.0$|127\.|169\.254\.|2(?:2[4-9]|3[0-9])\.|255\.255\.255\.255$)"
    rf"(?:{_OCTET}\.){{3}}{_OCTET}"
)


def ip_text(value: object) -> tuple[str, int]:
    """The canonical text and family (4 or 6) of an IP literal; hot path of endpoint parsing.

    Dotted-quad IPv4 without leading zeros is already canonical and skips `ipaddress`.
    """
    if isinstance(value, str) and _IPV4.fullmatch(value):
        return value, 4
    ip = ip_literal(value)
    return str(ip), ip.version


def special_ip(ip: str, version: int) -> str | None:
    """What makes a canonical address unusable as a service address or endpoint, if anything:
    "unspecified", "multicast", "link-local" or "loopback" (the ranges the API server refuses
    for endpoints). IPv4 is classified from its text, the hot path."""
    if version == 4:
        first = int(ip[: ip.index(".")])
        if ip == "0.0.0.0":  # noqa: S104 - a comparison, not a bind
            return "unspecified"
        if 224 <= first <= 239 or ip == "255.255.255.255":
            return "multicast"
        if ip.startswith("169.254."):
            return "link-local"
        return "loopback" if first == 127 else None
    addr = ipaddress.IPv6Address(ip)
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_multicast:
        return "multicast"
    if addr.is_link_local:
        return "link-local"
    return "loopback" if addr.is_loopback else None


def ip_literal(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 or IPv6 literal without zone index, leading zeros or surrounding text."""
    if isinstance(value, str) and _IP_CHARS.fullmatch(value):
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            pass
        else:
            # ::ffff:127.0.0.1 is loopback and ::ffff:0.0.0.0 the IPv4 wildcard, but Python
            # classifies neither: refuse the form (the API server treats it as IPv4 too).
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                raise GrammarError("IPv4-mapped IPv6 addresses are refused: write the IPv4 one")
            return ip
    raise GrammarError("expected an IPv4 or IPv6 address")


def cidr(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or network in CIDR notation (host bits allowed, as the Kubernetes API allows)."""
    if isinstance(value, str):
        match = _CIDR.fullmatch(value)
        if match is not None:
            try:
                return ipaddress.ip_network(value, strict=False)
            except ValueError:
                pass
    raise GrammarError("expected a CIDR such as 10.0.0.0/8 or fd00::/8")


def http_path(value: object) -> str:
    """An absolute request path for HTTP health checks."""
    if isinstance(value, str) and _HTTP_PATH.fullmatch(value):
        return value
    raise GrammarError("expected an absolute path of URI characters, such as /healthz")


def timestamp(value: object) -> str | None:
    """An RFC 3339 UTC timestamp as the API writes it (creationTimestamp), or None."""
    if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
        return value
    return None
