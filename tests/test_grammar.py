"""grammar: each strict grammar accepts its language and nothing else."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kube2haproxy import grammar
from kube2haproxy.errors import GrammarError

ACCEPT, REJECT = True, False


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("web", ACCEPT),
        ("a", ACCEPT),
        ("kube-system", ACCEPT),
        ("0abc", ACCEPT),
        ("x" * 63, ACCEPT),
        ("x" * 64, REJECT),
        ("", REJECT),
        ("-web", REJECT),
        ("web-", REJECT),
        ("Web", REJECT),
        ("web_1", REJECT),
        ("web.x", REJECT),
        ("web\n", REJECT),
        ("wéb", REJECT),
        (5, REJECT),
        (None, REJECT),
    ],
)
def test_dns_label(value, ok):
    if ok:
        assert grammar.dns_label(value) == value
    else:
        with pytest.raises(GrammarError):
            grammar.dns_label(value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        # Service, EndpointSlice and Endpoints port names are DNS-1123 labels
        # (k/k validateServicePort, discovery validatePorts, validateEndpointPort), not the
        # 15-character IANA names of container ports.
        ("http", ACCEPT),
        ("80-8080", ACCEPT),  # `kubectl create service clusterip web --tcp=80:8080`
        ("8080", ACCEPT),  # all digits: a DNS-1123 label
        ("a--b", ACCEPT),
        ("x" * 63, ACCEPT),
        ("x" * 64, REJECT),
        ("-a", REJECT),
        ("Http", REJECT),
        ("http\n", REJECT),
        ("", REJECT),
    ],
)
def test_port_names_are_dns_labels(value, ok):
    if ok:
        assert grammar.dns_label(value) == value
    else:
        with pytest.raises(GrammarError):
            grammar.dns_label(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("80", 80),
        (80, 80),
        ("0080", 80),
        (" 80", None),
        ("80 ", None),
        ("8_0", None),
        ("٨٠", None),
        ("+80", None),
        ("-1", None),
        ("", None),
        (True, None),
        (80.0, None),
        ("65536", None),
        ("1", 1),
    ],
)
def test_integer(value, expected):
    if expected is None:
        with pytest.raises(GrammarError):
            grammar.integer(value, low=1, high=65535)
    else:
        assert grammar.integer(value, low=1, high=65535) == expected


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("500", 500),
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1500us", 2),
        ("24d", 24 * 86_400_000),
        ("25d", None),
        ("0s", None),
        ("5 m", None),
        ("5M", None),
        ("5min", None),
        ("-5s", None),
        ("1.5s", None),
        ("", None),
        ("5s\n", None),
        (5, None),
    ],
)
def test_duration(value, ms):
    if ms is None:
        with pytest.raises(GrammarError):
            grammar.duration_ms(value)
    else:
        assert grammar.duration_ms(value) == ms


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Kubernetes IP fields: k/k IsValidIPForLegacyField (ParseIPSloppy), canonicalized.
        ("10.0.0.1", ("10.0.0.1", 4)),
        ("fd00::1", ("fd00::1", 6)),
        ("FD00:0::0001", ("fd00::1", 6)),
        ("10.0.0.01", ("10.0.0.1", 4)),  # leading zeros are decimal, as in Go 1.16's ParseIP
        ("010.000.000.001", ("10.0.0.1", 4)),
        ("::ffff:10.0.0.1", ("10.0.0.1", 4)),  # IPv4-mapped: the IPv4 address (To4)
        ("::ffff:127.0.0.1", ("127.0.0.1", 4)),
        ("::ffff:0.0.0.0", ("0.0.0.0", 4)),
        ("::ffff:7f00:1", ("127.0.0.1", 4)),
        ("::ffff:010.1.2.3", ("10.1.2.3", 4)),
        ("64:ff9b::a00:1", ("64:ff9b::a00:1", 6)),
        ("10.0.0.256", None),
        ("10.0.0.0256", None),
        ("10.0.0", None),
        ("1.2.3.4.5", None),
        ("10.0.0.1 ", None),
        ("fe80::1%eth0", None),  # zones: refused in every release
        ("fe80::1%0", None),
        ("[fd00::1]", None),
        ("10.0.0.1/32", None),
        ("", None),
        (10, None),
        ("1.2.3.4\n", None),
    ],
)
def test_ip_text(value, expected):
    if expected is None:
        with pytest.raises(GrammarError):
            grammar.ip_text(value)
    else:
        assert grammar.ip_text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Our own inputs keep the strict form.
        ("10.0.0.1", "10.0.0.1"),
        ("10.0.0.01", None),
        ("::ffff:10.0.0.1", None),
        ("fe80::1%eth0", None),
    ],
)
def test_ip_literal_is_strict(value, expected):
    if expected is None:
        with pytest.raises(GrammarError):
            grammar.ip_literal(value)
    else:
        assert str(grammar.ip_literal(value)) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        # k/k ValidateNonSpecialIP: unspecified, loopback, link-local unicast, link-local
        # multicast. Other multicast and broadcast pass, as they do at the API server.
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.5", "link-local multicast"),
        ("ff02::1", "link-local multicast"),
        ("ff12::1", "link-local multicast"),
        ("224.0.1.1", None),
        ("239.1.2.3", None),
        ("ff05::1", None),
        ("255.255.255.255", None),
        ("10.0.0.1", None),
        ("fd00::1", None),
    ],
)
def test_special_ip_follows_the_api_server(ip, expected):
    assert grammar.special_ip(ip, 6 if ":" in ip else 4) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("239.1.2.3", "multicast"),
        ("ff05::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("127.0.0.1", None),
        ("10.0.0.1", None),
    ],
)
def test_unlistenable_ip(ip, expected):
    assert grammar.unlistenable_ip(ip, 6 if ":" in ip else 4) == expected


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ipv4_fast_path_agrees_with_ipaddress(number):
    text = str(ipaddress.IPv4Address(number))
    assert grammar.ip_text(text) == (text, 4)
    assert bool(grammar.ORDINARY_IPV4.fullmatch(text)) == (grammar.special_ip(text, 4) is None)
    listenable = grammar.unlistenable_ip(text, 4) is None
    assert bool(grammar.LISTENABLE_IPV4.fullmatch(text)) == listenable


def test_the_ipv4_fast_paths_agree_on_every_first_octet_and_the_edges():
    """Where the fast paths' ranges begin and end (a random address rarely lands there)."""
    texts = [
        f"{octet}.{rest}" for octet in range(256) for rest in ("0.0.0", "1.2.3", "255.255.255")
    ]
    texts += ["0.0.0.0", "255.255.255.255", "255.255.255.254", "169.254.0.1", "224.0.0.255"]
    for text in texts:
        special, unlistenable = grammar.special_ip(text, 4), grammar.unlistenable_ip(text, 4)
        assert bool(grammar.ORDINARY_IPV4.fullmatch(text)) == (special is None), text
        assert bool(grammar.LISTENABLE_IPV4.fullmatch(text)) == (unlistenable is None), text


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_unlistenable_ipv4_read_from_the_text_agrees_with_ipaddress(number):
    address = ipaddress.IPv4Address(number)
    expected = (
        "unspecified"
        if address.is_unspecified
        else "multicast"
        if address.is_multicast
        else "broadcast"
        if number == 2**32 - 1
        else None
    )
    assert grammar.unlistenable_ip(str(address), 4) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("fd00::/8", "fd00::/8"),
        ("10.0.0.0/33", None),
        ("10.0.0.0/8 ", None),
        ("any", None),
    ],
)
def test_cidr(value, expected):
    if expected is None:
        with pytest.raises(GrammarError):
            grammar.cidr(value)
    else:
        assert str(grammar.cidr(value)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # spec.loadBalancerSourceRanges: k/k ValidateService trims spaces, then
        # IsValidCIDRForLegacyField (ParseCIDRSloppy): prefix required, host bits and leading
        # zeros accepted.
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
        ("\u00a010.0.0.0/8\n\u2028", "10.0.0.0/8"),  # Go's TrimSpace: Unicode spaces too
        ("10.0.0.0/8\x1c", None),  # a separator Python calls space, Go does not
        ("010.0.0.0/08", "10.0.0.0/8"),
        ("fd00::/8", "fd00::/8"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("10.1.2.3", None),
        ("10.0.0.0/33", None),
        ("10.0.0.0/-1", None),
        ("10.0.0.0/8/8", None),
        ("any", None),
        (8, None),
    ],
)
def test_api_cidr(value, expected):
    if expected is None:
        with pytest.raises(GrammarError):
            grammar.api_cidr(value)
    else:
        assert str(grammar.api_cidr(value)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # metav1.Time as the API writes it; fractions are cut as the API stores them.
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05.123Z", "2024-01-02T03:04:05Z"),
        ("2024-01-02T05:04:05+02:00", None),  # manifests bring offsets to UTC as they load
        ("2024-01-02", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_timestamp(value, expected):
    assert grammar.timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("/", ACCEPT),
        ("/healthz", ACCEPT),
        ("/ready?full=1&x=y", ACCEPT),
        ("/a%20b", ACCEPT),
        ("/-/healthy", ACCEPT),
        ("healthz", REJECT),
        ("/a b", REJECT),
        ("/a#b", REJECT),
        ("/a%2", REJECT),
        ('/a"', REJECT),
        ("/a'", REJECT),
        ("/a\\b", REJECT),
        ("/a$x", REJECT),
        ("/a;b", REJECT),
        ("/\n", REJECT),
        ("/" + "a" * 256, REJECT),
    ],
)
def test_http_path(value, ok):
    if ok:
        assert grammar.http_path(value) == value
    else:
        with pytest.raises(GrammarError):
            grammar.http_path(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-02T03:16:33Z", 1796181393.0),
        ("2026-12-02T03:16:33.5Z", 1796181393.5),
        ("2026-12-02T03:16:33.123456789Z", 1796181393.123456789),  # RFC3339Nano
        ("1970-01-01T00:00:00Z", 0.0),
        ("2026-13-02T03:16:33Z", None),  # no 13th month
        ("2026-12-02T24:00:00Z", None),
        ("2026-12-02 03:16:33Z", None),
        ("2026-12-02T03:16:33+01:00", None),  # the API writes UTC
        (1796181393, None),
        (None, None),
    ],
)
def test_trigger_times_are_read_as_the_endpoints_controller_writes_them(value, expected):
    got = grammar.epoch_seconds(value)
    assert got == (pytest.approx(expected) if expected is not None else None)
