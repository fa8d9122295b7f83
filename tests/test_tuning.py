"""tuning: kube2haproxy.io/* annotations, their grammars, defaults and fallbacks."""

from __future__ import annotations

import pytest

from kube2haproxy import tuning
from kube2haproxy.model import Balance, CheckKind, ProxyProtocol

P = tuning.PREFIX


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("balance", "source", "balance", Balance.SOURCE),
        ("balance", "random", "balance", Balance.RANDOM),
        ("timeout-connect", "250ms", "connect_timeout_ms", 250),
        ("timeout-server", "2m", "server_timeout_ms", 120_000),
        ("timeout-client", "45s", "client_timeout_ms", 45_000),
        ("timeout-tunnel", "12h", "tunnel_timeout_ms", 43_200_000),
        ("maxconn", "1", "server_maxconn", 1),
        ("check", "tcp", "check_kind", CheckKind.TCP),
        ("proxy-protocol", "v2", "proxy_protocol", ProxyProtocol.V2),
        ("proxy-protocol", "none", "proxy_protocol", ProxyProtocol.NONE),
        (
            "source-ranges",
            "192.168.0.0/16,10.0.0.0/8,10.0.0.0/8",
            "source_ranges",
            ("10.0.0.0/8", "192.168.0.0/16"),
        ),
        ("source-ranges", "fd00::/8, 10.0.0.1", "source_ranges", ("10.0.0.1/32", "fd00::/8")),
    ],
)
def test_valid_values(key, value, field, expected):
    options, findings = tuning.parse({P + key: value}, subject="Service a/b")
    assert findings == []
    assert getattr(options, field) == expected


@pytest.mark.parametrize(
    ("key", "value", "field", "fallback"),
    [
        ("balance", "RoundRobin", "balance", None),
        ("balance", "uri", "balance", None),
        ("timeout-server", "5 minutes", "server_timeout_ms", None),
        ("timeout-connect", "0", "connect_timeout_ms", None),
        ("maxconn", "0", "server_maxconn", None),
        ("maxconn", "10\nserver evil 1.2.3.4:80", "server_maxconn", None),
        ("check", "yes", "check_kind", CheckKind.NONE),
        ("proxy-protocol", "v3", "proxy_protocol", ProxyProtocol.NONE),
        ("source-ranges", "10.0.0.0/8,", "source_ranges", ()),
        ("source-ranges", "10.0.0.0/8, everyone", "source_ranges", ()),
        ("source-ranges", "", "source_ranges", ()),
        ("source-ranges", ",".join(["10.0.0.0/8"] * 1001), "source_ranges", ()),
    ],
)
def test_invalid_values_fall_back_and_are_reported(key, value, field, fallback):
    options, findings = tuning.parse({P + key: value}, subject="Service a/b")
    assert getattr(options, field) == fallback
    (finding,) = findings
    assert finding.subject == "Service a/b"
    assert finding.field == f"metadata.annotations[{P + key}]"
    assert "\n" not in str(finding)


def test_check_options_without_check_are_reported():
    _, findings = tuning.parse({P + "check-path": "/x", P + "check-rise": "3"}, subject="S")
    assert sorted(f.field for f in findings) == [
        f"metadata.annotations[{P}check-path]",
        f"metadata.annotations[{P}check-rise]",
    ]
    _, findings = tuning.parse({P + "check": "tcp", P + "check-path": "/x"}, subject="S")
    assert [f.field for f in findings] == [f"metadata.annotations[{P}check-path]"]
    _, findings = tuning.parse({P + "check": "http", P + "check-path": "/x"}, subject="S")
    assert findings == []


def test_unknown_annotations_under_our_prefix_are_reported_others_ignored():
    options, findings = tuning.parse(
        {P + "timeout": "5s", "example.com/timeout": "5s"}, subject="S"
    )
    assert options == tuning.DEFAULTS
    assert [f.field for f in findings] == [f"metadata.annotations[{P + 'timeout'!r}]"]
