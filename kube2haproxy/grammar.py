"""Strict grammars for every untrusted string that can reach haproxy.cfg.

Each parser either returns a canonical value built from a small alphabet or raises
`GrammarError`. Nothing is escaped: a value outside its grammar is rejected. Patterns use explicit
ASCII classes and `fullmatch` (so a trailing newline never slips past `$`), and numbers are matched
before `int()` sees them (`int` alone would take " 80", "8_0" and non-ASCII digits).

A Kubernetes field is read by the API server's own rule for that field, cited at each parser
(`k/k` is kubernetes/kubernetes, `apimachinery` k8s.io/apimachinery/pkg/util/validation): what
the API server refuses is refused, everything it accepts is accepted, across the releases still
in use (1.29 to 1.37), so a real cluster's objects are never turned away. Our own inputs
(annotations, flags) keep the strictest form.
"""

from __future__ import annotations

import calendar
import functools
import ipaddress
import re

from kube2haproxy.errors import GrammarError

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
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


def dns_label(value: object) -> str:
    """An RFC 1123 label: 1-63 of [a-z0-9-], alphanumeric at both ends; may be all digits.

    apimachinery IsDNS1123Label. Namespaces (k/k ValidateNamespaceName); Service port names
    (k/k validateServicePort: ValidateDNS1123Label, required when a Service has several ports;
    not the 15-character IANA name of container ports: `kubectl create service clusterip web
    --tcp=80:8080` names its port `80-8080`); EndpointSlice port names (k/k discovery
    validatePorts, since 1.17) and Endpoints port names (k/k validateEndpointPort). Service
    names are DNS-1035 labels (a letter first) up to 1.35 and DNS-1123 labels from 1.36
    (RelaxedServiceNameValidation, GA in 1.37): the labels of both releases are accepted."""
    if isinstance(value, str) and DNS_LABEL.fullmatch(value):
        return value
    raise GrammarError("expected a DNS label: 1-63 of [a-z0-9-], starting and ending alphanumeric")


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
# Go 1.16's net.ParseIP, which Kubernetes parses legacy IP fields with (k8s.io/utils/net
# ParseIPSloppy), reads IPv4 octets with leading zeros as decimal: 010.0.0.1 is 10.0.0.1.
_SLOPPY_QUAD = re.compile(r"(.*?)([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)")

# An IPv4 address that special_ip() finds ordinary, in canonical form: the endpoints' fast path.
ORDINARY_IPV4 = re.compile(
    r"(?!0\.0\.0\.0$|127\.|169\.254\.|224\.0\.0\.)" rf"(?:{_OCTET}\.){{3}}{_OCTET}"
)

# An IPv4 address that unlistenable_ip() finds usable, in canonical form: the VIPs' fast path.
LISTENABLE_IPV4 = re.compile(
    r"(?!0\.0\.0\.0$|22[4-9]\.|23[0-9]\.|255\.255\.255\.255$)" rf"(?:{_OCTET}\.){{3}}{_OCTET}"
)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
# What Go's strings.TrimSpace trims (unicode.IsSpace): ASCII and Latin-1 spaces, then the
# Unicode White_Space characters.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_text(value: object) -> tuple[str, int]:
    """The canonical text and family (4 or 6) of an IP field of a Kubernetes object (api_ip);
    the hot path of endpoint parsing: canonical dotted-quad IPv4 skips `ipaddress`."""
    if isinstance(value, str) and _IPV4.fullmatch(value):
        return value, 4
    ip = api_ip(value)
    return str(ip), ip.version


def api_ip(value: object) -> IP:
    """An IP field of a Kubernetes object, read as the API server reads it: k/k
    IsValidIPForLegacyField (apimachinery ip.go; IsValidIP before 1.33), which parses with
    ParseIPSloppy. Accepted, and canonicalized: IPv4 octets with leading zeros (decimal), and
    IPv4-mapped IPv6 (::ffff:a.b.c.d), which Kubernetes treats as the IPv4 address (To4). Both
    are refused for new objects once StrictIPCIDRValidation is on (beta in 1.36), but objects
    written before stay valid (ratcheting), so a cluster may still hold them. Refused in every
    release: zones (fe80::1%eth0), prefixes, octets over 255, anything else."""
    if isinstance(value, str) and _IP_CHARS.fullmatch(value):
        quad = _SLOPPY_QUAD.fullmatch(value)
        text = value
        if quad is not None:
            octets = [int(o) for o in quad.groups()[1:]]
            if max(octets) > 255:
                raise GrammarError("expected an IPv4 or IPv6 address")
            text = quad.group(1) + ".".join(map(str, octets))
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                return ip.ipv4_mapped
            return ip
    raise GrammarError("expected an IPv4 or IPv6 address")


# Link-local multicast as Go's net.IP.IsLinkLocalMulticast has it: 224.0.0.0/24 and ffX2::/16.
_LINK_LOCAL_MULTICAST_V4 = ipaddress.IPv4Network("224.0.0.0/24")


def special_ip(ip: str, version: int) -> str | None:
    """What makes a canonical address unusable as an endpoint or external IP, if anything:
    "unspecified", "loopback", "link-local" or "link-local multicast", the ranges the API
    server refuses there (k/k ValidateNonSpecialIP: Endpoints and EndpointSlice addresses,
    spec.externalIPs). Other multicast and broadcast addresses pass, as they do there. IPv4 is
    classified from its text, the hot path."""
    if version == 4:
        if ip == "0.0.0.0":  # noqa: S104 - a comparison, not a bind
            return "unspecified"
        if ip.startswith("127."):
            return "loopback"
        if ip.startswith("169.254."):
            return "link-local"
        return "link-local multicast" if ip.startswith("224.0.0.") else None
    addr = ipaddress.IPv6Address(ip)
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link-local"
    packed = addr.packed
    return "link-local multicast" if packed[0] == 0xFF and packed[1] & 0x0F == 0x02 else None


def unlistenable_ip(ip: str, version: int) -> str | None:
    """Why no host can listen on a canonical address for TCP, if it cannot: "unspecified" (the
    wildcard), "multicast" or "broadcast". IPv4 is classified from its text, the hot path."""
    if version == 4:
        if ip == "0.0.0.0":  # noqa: S104 - a comparison, not a bind
            return "unspecified"
        if 224 <= int(ip[: ip.index(".")]) <= 239:  # 224.0.0.0/4
            return "multicast"
        return "broadcast" if ip == "255.255.255.255" else None
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_multicast:
        return "multicast"
    return "broadcast" if version == 4 and ip == "255.255.255.255" else None


def same_ip(a: str, b: str) -> bool:
    """Two texts name one address (`::1` and `0:0::1`); False when either is none."""
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def ip_literal(value: object) -> IP:
    """An IPv4 or IPv6 literal in our own inputs (annotations, flags): no zone index, no
    leading zeros, no IPv4-mapped form, no surrounding text."""
    if isinstance(value, str) and _IP_CHARS.fullmatch(value):
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            pass
        else:
            # ::ffff:127.0.0.1 is loopback and ::ffff:0.0.0.0 the IPv4 wildcard, but Python
            # classifies neither: refuse the form.
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                raise GrammarError("IPv4-mapped IPv6 addresses are refused: write the IPv4 one")
            return ip
    raise GrammarError("expected an IPv4 or IPv6 address")


def cidr(value: object) -> Network:
    """An address or network in CIDR notation in our own inputs (host bits allowed)."""
    if isinstance(value, str):
        match = _CIDR.fullmatch(value)
        if match is not None:
            try:
                return ipaddress.ip_network(value, strict=False)
            except ValueError:
                pass
    raise GrammarError("expected a CIDR such as 10.0.0.0/8 or fd00::/8")


def api_cidr(value: object) -> Network:
    """A CIDR field of a Kubernetes object (spec.loadBalancerSourceRanges), as the API server
    reads it: k/k ValidateService trims spaces, then IsValidCIDRForLegacyField (ParseCIDRSloppy
    before 1.33): a prefix length is required; host bits, leading zeros and the IPv4-mapped form
    are accepted (refused for new objects once StrictIPCIDRValidation is on, kept on old ones)."""
    if isinstance(value, str):
        address, slash, prefix = value.strip(GO_SPACE).partition("/")
        if slash and _UINT.fullmatch(prefix):
            ip = api_ip(address)
            bits = int(prefix)
            mapped = ":" in address and ip.version == 4  # ::ffff:a.b.c.d/N counts 128 bits
            if mapped:
                bits -= 96
            if 0 <= bits <= ip.max_prefixlen:
                return ipaddress.ip_network(f"{ip}/{bits}", strict=False)
    raise GrammarError("expected a CIDR such as 10.0.0.0/8 or fd00::/8")


# Never handed out by a VIP pool: no host can listen there, or keepalived advertises there
# (link-local). Loopback stays allowed (a pool on one host, the tests).
_NOT_POOLS = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", "::/128", "fe80::/10", "ff00::/8")
)


@functools.lru_cache(maxsize=8)
def vip_networks(text: str) -> tuple[Network, ...]:
    """--vip-cidr: comma-separated networks, at most one per family, none overlapping the
    addresses no service can listen on."""
    networks = tuple(cidr(item.strip()) for item in text.split(","))
    if len({n.version for n in networks}) != len(networks):
        raise GrammarError("expected at most one IPv4 and one IPv6 network")
    for network in networks:
        for special in _NOT_POOLS:
            if network.version == special.version and network.overlaps(special):
                raise GrammarError(
                    f"{network} overlaps {special} (unspecified, link-local, multicast or "
                    "reserved addresses), which a service cannot listen on"
                )
    return networks


def http_path(value: object) -> str:
    """An absolute request path for HTTP health checks."""
    if isinstance(value, str) and _HTTP_PATH.fullmatch(value):
        return value
    raise GrammarError("expected an absolute path of URI characters, such as /healthz")


def epoch_seconds(value: object) -> float | None:
    """A metav1.Time, or the RFC 3339 time the endpoints controller writes in
    `endpoints.kubernetes.io/last-change-trigger-time` (UTC, "Z", fractions up to
    nanoseconds), as seconds since the epoch; None for anything else."""
    if not (isinstance(value, str) and _TIMESTAMP.fullmatch(value)):
        return None
    month, day, hour, minute, second = (int(value[i : i + 2]) for i in (5, 8, 11, 14, 17))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    whole = calendar.timegm((int(value[0:4]), month, day, hour, minute, second, 0, 0, 0))
    fraction = value[19:-1]
    return whole + (float(fraction) if fraction else 0.0)


def timestamp(value: object) -> str | None:
    """creationTimestamp in the form the API writes it (metav1.Time: RFC 3339 in UTC, "Z";
    fractions, which Go's parser tolerates, are cut to whole seconds as the API stores them),
    or None. Manifests bring other forms to this one as they load (manifests.py)."""
    if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
        return value[:19] + "Z"
    return None
