"""translate: the Kubernetes rules, table-driven over plain dicts."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube2haproxy import slots
from kube2haproxy.errors import FieldError
from kube2haproxy.findings import Collector, Severity, SkipReason
from kube2haproxy.model import (
    Balance,
    CheckKind,
    ProxyProtocol,
    Server,
    ServerState,
    SourceRule,
    hostport,
)
from kube2haproxy.settings import TranslateSettings
from kube2haproxy.translate import addresses, endpoints
from testkit.builders import endpoint, endpoint_slice, endpoints_v1, service
from tests.pipeline import fields_of, run, servers

WEB = "default_web_http"


# --- readiness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoints", "publish_not_ready", "expected"),
    [
        pytest.param(
            ["10.1.0.1", "10.1.0.2"],
            False,
            ["10.1.0.1:8080", "10.1.0.2:8080"],
            id="ready-missing-means-true",
        ),
        pytest.param(
            [endpoint("10.1.0.1", ready=True), endpoint("10.1.0.2", ready=False)],
            False,
            ["10.1.0.1:8080"],
            id="not-ready-excluded",
        ),
        pytest.param(
            [
                endpoint("10.1.0.1", ready=True),
                endpoint("10.1.0.2", ready=False, serving=True, terminating=True),
            ],
            False,
            ["10.1.0.1:8080"],
            id="terminating-unused-while-ready-exist",
        ),
        pytest.param(
            [
                endpoint("10.1.0.1", ready=False, serving=True, terminating=True),
                endpoint("10.1.0.2", ready=False, serving=False, terminating=True),
                endpoint("10.1.0.3", ready=False, serving=False, terminating=False),
            ],
            False,
            ["10.1.0.1:8080"],
            id="serving-terminating-when-no-ready",
        ),
        pytest.param(
            [endpoint("10.1.0.1", ready=False, terminating=True)],
            False,
            ["10.1.0.1:8080"],
            id="serving-missing-means-true",
        ),
        pytest.param(
            [
                endpoint("10.1.0.1", ready=False, serving=False),
                endpoint("10.1.0.2", ready=False, serving=True, terminating=True),
            ],
            True,
            ["10.1.0.1:8080", "10.1.0.2:8080"],
            id="publish-not-ready-takes-all",
        ),
        pytest.param([], False, [], id="no-endpoints-empty-backend"),
    ],
)
def test_readiness(endpoints, publish_not_ready, expected):
    svc = service(publishNotReadyAddresses=publish_not_ready)
    result = run(svc, endpoint_slice(endpoints=endpoints))
    assert servers(result, WEB) == expected
    assert result.model.frontends[0].binds[0].address == "10.96.0.10:80"


def test_first_address_of_an_endpoint_is_used():
    result = run(service(), endpoint_slice(endpoints=[endpoint("10.1.0.1", more=["10.1.0.9"])]))
    assert servers(result, WEB) == ["10.1.0.1:8080"]


def test_endpoint_listed_by_two_slices_counts_once_with_its_best_state():
    slices = [
        endpoint_slice(name="web-a", endpoints=[endpoint("10.1.0.1", ready=False), "10.1.0.2"]),
        endpoint_slice(name="web-b", endpoints=["10.1.0.1", endpoint("10.1.0.2", ready=False)]),
    ]
    assert servers(run(service(), *slices), WEB) == ["10.1.0.1:8080", "10.1.0.2:8080"]


def test_same_address_on_two_ports_numbers_is_two_servers():
    """A named targetPort resolving to different numbers in two slices for one address."""
    slices = [
        endpoint_slice(name="web-a", endpoints=["10.1.0.1"], ports=[("http", 8080)]),
        endpoint_slice(name="web-b", endpoints=["10.1.0.1"], ports=[("http", 8081)]),
    ]
    assert servers(run(service(), *slices), WEB) == ["10.1.0.1:8080", "10.1.0.1:8081"]


def test_fqdn_slices_are_skipped_with_info():
    result = run(
        service(),
        endpoint_slice(name="web-a", address_type="FQDN", endpoints=["db.example.com"]),
        endpoint_slice(name="web-b", endpoints=["10.1.0.1"]),
    )
    assert servers(result, WEB) == ["10.1.0.1:8080"]
    assert ("info", "EndpointSlice default/web-a", "addressType") in fields_of(result)


def test_slices_of_other_services_and_namespaces_do_not_join():
    result = run(
        service(),
        endpoint_slice("web", "other", endpoints=["10.1.0.1"]),
        endpoint_slice("api", endpoints=["10.1.0.2"]),
        endpoint_slice("web", endpoints=["10.1.0.3"]),
    )
    assert servers(result, WEB) == ["10.1.0.3:8080"]


def test_slice_family_must_match_address_type():
    result = run(
        service(),
        endpoint_slice(endpoints=["fd00::1", "10.1.0.1"]),
        endpoint_slice(name="web-v6", address_type="IPv6", endpoints=["fd00::2", "10.1.0.2"]),
    )
    assert servers(result, WEB) == ["10.1.0.1:8080", "[fd00::2]:8080"]
    warned = {(s, f) for sev, s, f in fields_of(result) if sev == "warning"}
    assert warned == {
        ("EndpointSlice default/web-abc12", "endpoints[0].addresses[0]"),
        ("EndpointSlice default/web-v6", "endpoints[1].addresses[0]"),
    }


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("169.254.1.1", False),
        ("224.0.0.5", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("ff02::1", False),
        ("10.0.0.1", True),
        ("192.168.1.1", True),
        ("fd00::1", True),
        ("2001:db8::1", True),
    ],
)
def test_special_endpoint_addresses_are_refused(address, allowed):
    family = "IPv6" if ":" in address else "IPv4"
    result = run(service(), endpoint_slice(address_type=family, endpoints=[address]))
    assert bool(servers(result, WEB)) is allowed
    assert any(f.field == "endpoints[0].addresses[0]" for f in result.warnings) is not allowed


def test_loopback_endpoints_allowed_by_setting():
    result = run(service(), endpoint_slice(endpoints=["127.0.0.2"]), allow_loopback_endpoints=True)
    assert servers(result, WEB) == ["127.0.0.2:8080"]


# --- ports -------------------------------------------------------------------------------------


def test_ports_match_by_name_and_protocol_per_slice():
    svc = service("api", ports=[("http", 80), ("grpc", 9090), ("metrics", 9100)])
    slices = [
        endpoint_slice(
            "api",
            name="api-a",
            endpoints=["10.1.0.1"],
            ports=[("http", 8080), ("grpc", 9000), ("metrics", 9100, "UDP")],
        ),
        endpoint_slice(
            "api", name="api-b", endpoints=["10.1.0.2"], ports=[("http", 8081), ("grpc", 9001)]
        ),
    ]
    result = run(svc, *slices)
    assert servers(result, "default_api_http") == ["10.1.0.1:8080", "10.1.0.2:8081"]
    assert servers(result, "default_api_grpc") == ["10.1.0.1:9000", "10.1.0.2:9001"]
    assert servers(result, "default_api_metrics") == []


def test_unnamed_port_named_by_number_and_matched_to_unnamed_slice_port():
    result = run(
        service(ports=[("", 9200)]), endpoint_slice(endpoints=["10.1.0.1"], ports=[("", 9200)])
    )
    assert servers(result, "default_web_9200") == ["10.1.0.1:9200"]
    assert [f.name for f in result.model.frontends] == ["fe_default_web_9200"]


@pytest.mark.parametrize(
    ("protocol", "reason"), [("UDP", SkipReason.UDP_PORT), ("SCTP", SkipReason.SCTP_PORT)]
)
def test_udp_and_sctp_ports_skipped_with_reason(protocol, reason):
    svc = service("dns", ports=[("dns", 53, protocol), ("dns-tcp", 53, "TCP")])
    result = run(
        svc,
        endpoint_slice(
            "dns", endpoints=["10.1.0.1"], ports=[("dns", 53, protocol), ("dns-tcp", 53, "TCP")]
        ),
    )
    assert [f.name for f in result.model.frontends] == ["fe_default_dns_dns-tcp"]
    (skip,) = [f for f in result.findings if f.skip is reason]
    # Skipped by design, nothing to fix: information (--strict must pass on real clusters).
    assert (skip.severity, skip.subject, skip.field) == (
        Severity.INFO,
        "Service default/dns",
        "spec.ports[0].protocol",
    )
    assert result.skipped[reason] == 1
    assert result.warnings == ()


def test_service_with_only_udp_ports_is_skipped():
    result = run(service("dns", ports=[("dns", 53, "UDP")]))
    assert result.model.frontends == ()
    assert result.skipped[SkipReason.NO_TCP_PORTS] == 1


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"name": "http", "port": "80"}, "spec.ports[0].port"),
        ({"name": "http", "port": 0}, "spec.ports[0].port"),
        ({"name": "http", "port": 70000}, "spec.ports[0].port"),
        ({"name": "http", "port": True}, "spec.ports[0].port"),
        ({"name": "HTTP", "port": 80}, "spec.ports[0].name"),
        ({"name": "http-", "port": 80}, "spec.ports[0].name"),
        ({"name": "web socket", "port": 80}, "spec.ports[0].name"),
        ({"name": "x" * 64, "port": 80}, "spec.ports[0].name"),
        ({"name": "http", "port": 80, "protocol": "QUIC"}, "spec.ports[0].protocol"),
        ("http:80", "spec.ports[0]"),
    ],
)
def test_invalid_ports_are_skipped_with_the_field_named(raw, field):
    """What the API server refuses (k/k validateServicePort) is skipped, with the field."""
    result = run(
        service(ports=[raw, ("ok", 81)]),
        endpoint_slice(ports=[("ok", 8081)], endpoints=["10.1.0.1"]),
    )
    assert [f.name for f in result.model.frontends] == ["fe_default_web_ok"]
    assert [(f.subject, f.field) for f in result.warnings] == [("Service default/web", field)]


def test_duplicate_port_names_keep_the_first():
    result = run(service(ports=[("http", 80), ("http", 81)]))
    assert [b.address for b in result.model.frontends[0].binds] == ["10.96.0.10:80"]
    assert [f.field for f in result.warnings] == ["spec.ports[1]"]


# --- services skipped by design ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("svc", "reason", "settings"),
    [
        (service(cluster_ips=["None"]), SkipReason.HEADLESS, {}),
        (service(cluster_ips=None, clusterIP="None"), SkipReason.HEADLESS, {}),
        (
            service(type="ExternalName", externalName="db.example.com", cluster_ips=None),
            SkipReason.EXTERNAL_NAME,
            {},
        ),
        (service(labels={"service.kubernetes.io/headless": ""}), SkipReason.HEADLESS_LABEL, {}),
        (
            service(labels={"service.kubernetes.io/service-proxy-name": "other"}),
            SkipReason.OTHER_PROXY,
            {},
        ),
        (
            service(labels={"service.kubernetes.io/service-proxy-name": ""}),
            SkipReason.OTHER_PROXY,
            {},
        ),
        (
            service(labels={"service.kubernetes.io/service-proxy-name": "other"}),
            SkipReason.OTHER_PROXY,
            {"proxy_name": "ours"},
        ),
    ],
)
def test_services_skipped_by_design(svc, reason, settings):
    result = run(svc, endpoint_slice(endpoints=["10.1.0.1"]), **settings)
    assert result.model.frontends == () and result.model.backends == ()
    (finding,) = result.findings
    assert finding.skip is reason and finding.severity is Severity.INFO
    assert finding.subject == "Service default/web"


def test_proxy_name_label_matching_ours_is_served_and_unlabelled_too():
    ours = service(labels={"service.kubernetes.io/service-proxy-name": "pool-a"})
    plain = service("api", cluster_ips=["10.96.0.11"])
    result = run(ours, plain, proxy_name="pool-a")
    assert [f.name for f in result.model.frontends] == [
        "fe_default_api_http",
        "fe_default_web_http",
    ]


def test_service_without_any_vip_is_skipped_with_warning():
    result = run(service(cluster_ips=None))
    assert result.skipped[SkipReason.NO_VIP] == 1
    assert result.warnings[0].skip is SkipReason.NO_VIP


@pytest.mark.parametrize(
    ("namespace", "name", "field"),
    [
        ("default", "Web", "metadata.name"),
        ("default", "web_1", "metadata.name"),
        ("default", "web\nbackend x", "metadata.name"),
        ("default", "x" * 64, "metadata.name"),
        ("kube system", "web", "metadata.namespace"),
        ("-ns", "web", "metadata.namespace"),
    ],
)
def test_invalid_names_skip_the_service(namespace, name, field):
    result = run(service(name, namespace))
    assert result.model.frontends == ()
    (finding,) = result.warnings
    assert (finding.field, finding.skip) == (field, SkipReason.INVALID)
    assert "\n" not in str(finding)


@pytest.mark.parametrize(
    "spec",
    [{"ports": "80"}, {"clusterIPs": "10.0.0.1"}, {"type": 5}, {"sessionAffinity": ["x"]}],
)
def test_wrongly_typed_fields_skip_the_service_not_the_run(spec):
    bad = service("bad", cluster_ips=None, **spec)
    result = run(bad, service("good"))
    assert [f.service for f in result.model.frontends] == ["good"]
    assert any(f.subject == "Service default/bad" for f in result.warnings)


def test_wrongly_typed_slice_fields_are_reported_not_fatal():
    bad = endpoint_slice(
        endpoints=[
            "10.1.0.1",
            {"addresses": "10.1.0.2"},
            {"addresses": ["10.1.0.3"], "conditions": {"ready": "yes"}},
            {"addresses": ["10.1.0.256"]},
            "not-a-mapping",
        ]
    )
    bad["endpoints"][4] = "not-a-mapping"
    result = run(service(), bad)
    assert servers(result, WEB) == ["10.1.0.1:8080"]
    assert sorted(f.field for f in result.warnings) == [
        "endpoints[1].addresses",
        "endpoints[2].conditions.ready",
        "endpoints[3].addresses[0]",
        "endpoints[4]",
    ]


# --- VIPs --------------------------------------------------------------------------------------


def test_vips_cluster_ips_external_ips_and_load_balancer_ingress():
    svc = service(
        cluster_ips=["10.96.0.10", "fd00:96::a"],
        externalIPs=["203.0.113.5", "10.96.0.10"],
        status={"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "lb.example"}]}},
    )
    result = run(svc)
    assert [b.address for b in result.model.frontends[0].binds] == [
        "10.96.0.10:80",
        "[fd00:96::a]:80",
        "203.0.113.5:80",
        "198.51.100.1:80",
    ]
    assert result.model.services[0].vips == (
        "10.96.0.10",
        "fd00:96::a",
        "203.0.113.5",
        "198.51.100.1",
    )


def test_cluster_ip_used_when_cluster_ips_missing():
    svc = service(cluster_ips=None, clusterIP="10.96.0.7")
    assert run(svc).model.frontends[0].binds[0].address == "10.96.0.7:80"


@pytest.mark.parametrize(
    "bad",
    [
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "239.1.1.1",  # multicast: nothing listens there
        "255.255.255.255",
        "127.0.0.1",  # the API server refuses special external IPs (ValidateNonSpecialIP)
        "169.254.169.254",
        "10.0.0.1/32",
        "10.0.0.256",
        "fe80::1%eth0",
        "1.2.3.4 ",
        "999.1.1.1",
        17,
    ],
)
def test_unusable_vips_are_ignored_with_a_warning(bad):
    result = run(service(externalIPs=[bad]))
    assert [b.address for b in result.model.frontends[0].binds] == ["10.96.0.10:80"]
    assert [f.field for f in result.warnings] == ["spec.externalIPs[0]"]


def test_addresses_the_api_server_accepts_are_canonicalized():
    """Leading zeros and the IPv4-mapped form (ParseIPSloppy: accepted up to 1.35, and kept
    on objects written before StrictIPCIDRValidation)."""
    result = run(
        service(cluster_ips=["010.096.000.010"], externalIPs=["::ffff:203.0.113.9"]),
        endpoint_slice(endpoints=["010.1.0.1", "::ffff:10.1.0.2"]),
    )
    assert [b.address for b in result.model.frontends[0].binds] == [
        "10.96.0.10:80",
        "203.0.113.9:80",
    ]
    assert servers(result, WEB) == ["10.1.0.1:8080", "10.1.0.2:8080"]
    assert result.warnings == ()


def test_ipv6_addresses_are_canonicalized():
    svc = service(cluster_ips=["FD00:0:0::000A"])
    result = run(svc, endpoint_slice(address_type="IPv6", endpoints=["FD00::0001"]))
    assert result.model.frontends[0].binds[0].address == "[fd00::a]:80"
    assert servers(result, WEB) == ["[fd00::1]:8080"]


def test_address_conflicts_go_to_the_cluster_ip_owner_then_the_oldest():
    owner = service("owner", cluster_ips=["10.96.0.10"], created="2026-02-01T00:00:00Z")
    thief = service(
        "aaa-thief",
        cluster_ips=["10.96.0.11"],
        externalIPs=["10.96.0.10"],
        created="2026-01-01T00:00:00Z",
    )
    old = service(
        "old",
        cluster_ips=["10.96.0.12"],
        externalIPs=["203.0.113.9"],
        created="2025-01-01T00:00:00Z",
    )
    new = service(
        "new",
        cluster_ips=["10.96.0.13"],
        externalIPs=["203.0.113.9"],
        created="2026-01-01T00:00:00Z",
    )
    result = run(owner, thief, old, new)
    binds = {f.service: [b.address for b in f.binds] for f in result.model.frontends}
    assert binds == {
        "owner": ["10.96.0.10:80"],
        "aaa-thief": ["10.96.0.11:80"],
        "old": ["10.96.0.12:80", "203.0.113.9:80"],
        "new": ["10.96.0.13:80"],
    }
    assert sorted(f.subject for f in result.warnings) == [
        "Service default/aaa-thief",
        "Service default/new",
    ]
    entries = {e.name: e.vips for e in result.model.services}
    assert entries["aaa-thief"] == ("10.96.0.11",)


def test_a_frontend_that_loses_every_address_disappears_with_its_backend():
    owner = service("owner", cluster_ips=["10.96.0.10"])
    copy = service("copy", cluster_ips=["10.96.0.10"], created="2020-01-01T00:00:00Z")
    result = run(owner, copy)
    # Both claim by cluster IP: the older wins.
    assert [f.service for f in result.model.frontends] == ["copy"]
    assert [b.service for b in result.model.backends] == ["copy"]
    assert [e.name for e in result.model.services] == ["copy"]


# --- affinity, annotations, source ranges -------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expire", "table", "warned"),
    [
        ({"sessionAffinity": "ClientIP"}, 10800, "ip", False),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            },
            60,
            "ip",
            False,
        ),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}},
            },
            10800,
            "ip",
            True,
        ),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}},
            },
            10800,
            "ip",
            True,
        ),
        (
            {"sessionAffinity": "ClientIP", "clusterIPs": ["10.96.0.10", "fd00::a"]},
            10800,
            "ipv6",
            False,
        ),
    ],
)
def test_client_ip_affinity(spec, expire, table, warned):
    result = run(service(**spec))
    affinity = result.model.backends[0].affinity
    assert affinity is not None
    assert (affinity.expire_s, affinity.table_type, affinity.size) == (expire, table, 100_000)
    assert bool(result.warnings) is warned


def test_no_affinity_by_default_and_unknown_mode_warns():
    assert run(service()).model.backends[0].affinity is None
    result = run(service(sessionAffinity="Cookie"))
    assert result.model.backends[0].affinity is None
    assert [f.field for f in result.warnings] == ["spec.sessionAffinity"]


def test_annotations_reach_the_model():
    result = run(
        service(
            annotations={
                "kube2haproxy.io/balance": "leastconn",
                "kube2haproxy.io/timeout-connect": "2s",
                "kube2haproxy.io/timeout-server": "90s",
                "kube2haproxy.io/timeout-client": "1m",
                "kube2haproxy.io/timeout-tunnel": "2h",
                "kube2haproxy.io/maxconn": "50",
                "kube2haproxy.io/check": "http",
                "kube2haproxy.io/check-path": "/ready?full=1",
                "kube2haproxy.io/check-interval": "500ms",
                "kube2haproxy.io/check-rise": "4",
                "kube2haproxy.io/check-fall": "5",
                "kube2haproxy.io/proxy-protocol": "v1",
                "kube2haproxy.io/source-ranges": "10.0.0.0/8, 192.168.1.7",
                "other.io/ignored": "x",
            }
        )
    )
    assert not result.findings
    backend, frontend = result.model.backends[0], result.model.frontends[0]
    assert backend.balance is Balance.LEASTCONN
    assert (backend.connect_timeout_ms, backend.server_timeout_ms, backend.tunnel_timeout_ms) == (
        2000,
        90000,
        7_200_000,
    )
    assert frontend.client_timeout_ms == 60000
    assert backend.server_maxconn == 50
    assert backend.check is not None
    assert (
        backend.check.kind,
        backend.check.path,
        backend.check.interval_ms,
        backend.check.rise,
        backend.check.fall,
    ) == (CheckKind.HTTP, "/ready?full=1", 500, 4, 5)
    assert backend.proxy_protocol is ProxyProtocol.V1
    assert frontend.source_rules == (SourceRule(("10.0.0.0/8", "192.168.1.7/32")),)


def test_load_balancer_source_ranges_guard_only_load_balancer_ips():
    svc = service(
        loadBalancerSourceRanges=["203.0.113.0/24"],
        status={"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}},
    )
    assert run(svc).model.frontends[0].source_rules == (
        SourceRule(("203.0.113.0/24",), ("198.51.100.1",)),
    )
    # Without a load balancer address there is nothing to guard.
    assert (
        run(service(loadBalancerSourceRanges=["203.0.113.0/24"])).model.frontends[0].source_rules
        == ()
    )


def test_invalid_load_balancer_source_ranges_fail_closed():
    svc = service(
        loadBalancerSourceRanges=["203.0.113.0/24", "everyone"],
        status={"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}},
    )
    result = run(svc)
    assert result.model.frontends[0].source_rules == (SourceRule((), ("198.51.100.1",)),)
    assert [f.field for f in result.warnings] == ["spec.loadBalancerSourceRanges"]


# --- Endpoints fallback ------------------------------------------------------------------------


def test_endpoints_used_only_without_slices():
    legacy = endpoints_v1(ready=["10.2.0.1", "10.2.0.2"], not_ready=["10.2.0.3"])
    assert servers(run(service(), legacy), WEB) == ["10.2.0.1:8080", "10.2.0.2:8080"]
    with_slice = run(service(), legacy, endpoint_slice(endpoints=["10.1.0.1"]))
    assert servers(with_slice, WEB) == ["10.1.0.1:8080"]


def test_endpoints_not_ready_are_used_when_publishing_not_ready():
    legacy = endpoints_v1(ready=["10.2.0.1"], not_ready=["10.2.0.3"])
    result = run(service(publishNotReadyAddresses=True), legacy)
    assert servers(result, WEB) == ["10.2.0.1:8080", "10.2.0.3:8080"]


# --- determinism -------------------------------------------------------------------------------


def test_same_cluster_in_any_order_gives_the_same_model():
    objects = []
    for i in range(30):
        objects.append(
            service(
                f"svc-{i}",
                f"ns-{i % 4}",
                cluster_ips=[f"10.96.1.{i}"],
                ports=[("http", 80), ("admin", 9000)],
            )
        )
        objects.append(
            endpoint_slice(
                f"svc-{i}",
                f"ns-{i % 4}",
                name=f"svc-{i}-a",
                endpoints=[f"10.1.{i}.{j}" for j in (3, 1, 2)],
                ports=[("http", 8080), ("admin", 9000)],
            )
        )
        objects.append(
            endpoint_slice(
                f"svc-{i}",
                f"ns-{i % 4}",
                name=f"svc-{i}-b",
                endpoints=[f"10.2.{i}.1"],
                ports=[("http", 8080), ("admin", 9000)],
            )
        )
    baseline = run(*objects)
    for seed in range(5):
        shuffled = objects[:]
        random.Random(seed).shuffle(shuffled)
        assert run(*shuffled) == baseline
    names = [f.name for f in baseline.model.frontends]
    assert names == sorted(names) and len(set(names)) == 60


def test_pruned_objects_translate_exactly_like_the_originals():
    """The kube source keeps only what translate reads (resources.prune); the proof that nothing
    read was dropped: every scenario and the example translate identically after pruning."""
    from pathlib import Path

    from kube2haproxy.resources import prune
    from kube2haproxy.sources.manifests import load
    from tests.pipeline import run_loaded

    scenarios = Path(__file__).parent / "scenarios"
    cut = 0
    for directory in sorted(p / "input" for p in scenarios.iterdir() if (p / "input").exists()):
        objects = list(load([str(directory)]).objects.items())
        original = run_loaded(*[obj for _, obj in objects])
        pruned = run_loaded(*[prune(kind, obj) for (kind, _), obj in objects])
        assert pruned == original, directory
        cut += sum(o != prune(k, o) for (k, _), o in objects)
    assert cut >= 10  # selectors, targetRefs, nodeNames...: the test is not vacuous


@pytest.mark.parametrize(
    "name",
    [
        "80-8080",  # `kubectl create service clusterip web --tcp=80:8080`
        "8080",  # a DNS label may be all digits
        "http--x",
        "a-very-long-port-name-that-is-still-a-dns-label",
    ],
)
def test_port_names_the_api_server_accepts_are_served(name):
    """Service and EndpointSlice port names are DNS-1123 labels, up to 63 characters (k/k
    validateServicePort, discovery validatePorts), not IANA service names."""
    result = run(
        service(ports=[(name, 80)]),
        endpoint_slice(ports=[(name, 8080)], endpoints=["10.1.0.1"]),
    )
    assert [f.name for f in result.model.frontends] == [f"fe_default_web_{name}"]
    assert servers(result, f"default_web_{name}") == ["10.1.0.1:8080"]
    assert result.warnings == ()
    # v1 Endpoints port names too (k/k validateEndpointPort: ValidateDNS1123Label).
    legacy = run(service(ports=[(name, 80)]), endpoints_v1(ready=["10.2.0.1"], ports=[(name, 81)]))
    assert servers(legacy, f"default_web_{name}") == ["10.2.0.1:81"]
    assert legacy.warnings == ()


# --- the fast readings agree with the full ones ------------------------------------------------

_ODD: list[object] = [None, True, False, 0, 1, "true", "", [], {}, "x\n"]
_ADDRESSES = [
    *("127.0.0.1", "010.1.0.3", "169.254.1.1", "0.0.0.0", "224.0.0.5", "fd00::1"),
    *("::ffff:10.1.0.4", "10.1.0.1\n", " 10.1.0.5", "10.1.0.256", 7, None),
]
_FLAG = st.sampled_from([None, True, False])


@st.composite
def _slices(draw: st.DrawFn) -> dict[str, Any]:
    """A valid slice (ready, not ready, terminating endpoints; named and unnamed ports), then
    a few of its values replaced by odd ones, each somewhere the fast path must notice."""
    listed = [
        endpoint(f"10.1.0.{i}", ready=draw(_FLAG), serving=draw(_FLAG), terminating=draw(_FLAG))
        for i in range(draw(st.integers(1, 3)))
    ]
    names = draw(st.lists(st.sampled_from(["http", "", "a-1"]), min_size=1, max_size=2))
    obj = endpoint_slice(endpoints=listed, ports=[(n, 8080 + i) for i, n in enumerate(names)])
    for _ in range(draw(st.integers(0, 2))):
        odd = draw(st.sampled_from(_ODD))
        where = draw(st.integers(0, 9))
        eps, ports = obj.get("endpoints"), obj.get("ports")
        ep = draw(st.sampled_from(eps)) if isinstance(eps, list) and eps else None
        port = draw(st.sampled_from(ports)) if isinstance(ports, list) and ports else None
        if where == 0:
            obj["addressType"] = draw(st.sampled_from(["IPv6", "FQDN", "ipv4", *_ODD]))
        elif where == 1 and isinstance(ep, dict):
            ep["addresses"] = [draw(st.sampled_from(_ADDRESSES))]
        elif where == 2 and isinstance(ep, dict):
            ep["conditions"] = odd
        elif where == 3 and isinstance(ep, dict) and isinstance(ep.get("conditions"), dict):
            ep["conditions"][draw(st.sampled_from(["ready", "serving", "terminating"]))] = odd
        elif where == 4 and isinstance(port, dict):
            port["port"] = draw(st.sampled_from([0, 65536, -1, "80", 80.0, *_ODD]))
        elif where == 5 and isinstance(port, dict):
            port["name"] = draw(st.sampled_from(["Http", "-a", "a" * 64, 5, *_ODD]))
        elif where == 6 and isinstance(port, dict):
            port["protocol"] = draw(st.sampled_from(["tcp", ["TCP"], 1, "UDP", "SCTP", *_ODD]))
        elif where == 7:
            obj[draw(st.sampled_from(["ports", "endpoints"]))] = odd
        elif where == 8 and isinstance(eps, list) and eps:
            eps[0] = odd
        elif where == 9 and isinstance(ep, dict):
            ep["addresses"] = odd
    return obj


@given(_slices())
@settings(max_examples=500)
def test_plain_slices_read_fast_as_the_full_reading_reads_them(slice_obj):
    """The fast path takes only slices the full reading accepts without a finding, and reads
    them the same: it is exactly as strict."""
    found = Collector("Service default/web")
    full = endpoints.full_slice(copy.deepcopy(slice_obj), TranslateSettings(), found)
    plain = endpoints.plain_slice(slice_obj)
    if plain is not None:
        assert found.found == []
        assert plain == full


def test_the_fast_path_takes_an_ordinary_slice():
    slice_obj = endpoint_slice(
        endpoints=["10.1.0.1", endpoint("10.1.0.2", ready=False, serving=True, terminating=True)]
    )
    assert endpoints.plain_slice(slice_obj) == endpoints.Group(
        {("http", "TCP"): 8080}, (("10.1.0.1", endpoints.READY), ("10.1.0.2", 1))
    )


_VIPS: list[object] = [
    *("10.96.0.1", "10.96.0.2", "0.0.0.0", "224.0.0.1", "239.255.255.255", "240.0.0.1"),
    *("255.255.255.255", "255.255.255.254", "223.255.255.255", "127.0.0.1", "010.96.0.3"),
    *("10.96.0.1\n", "fd00::1", "::ffff:10.96.0.4", "None", "", 7, None),
]


@st.composite
def _vip_services(draw: st.DrawFn) -> dict[str, Any]:
    """A service with cluster IPs (mostly ordinary ones), then perhaps external IPs, load
    balancer addresses or odd values where the fast path must notice them."""
    obj = service()
    spec, status = obj["spec"], obj.setdefault("status", {})
    any_ipv4 = st.ip_addresses(v=4).map(str)
    spec["clusterIPs"] = draw(st.lists(st.one_of(st.sampled_from(_VIPS), any_ipv4), max_size=3))
    where = draw(st.integers(0, 6))
    if where == 1:
        spec["externalIPs"] = draw(st.lists(st.sampled_from(_VIPS), max_size=2))
    elif where == 2:
        ingress = draw(st.lists(st.sampled_from(_VIPS), max_size=2))
        status["loadBalancer"] = {"ingress": [{"ip": ip} for ip in ingress]}
    elif where == 3:
        status["loadBalancer"] = draw(st.sampled_from(_ODD))
    elif where == 4:
        spec["clusterIPs"] = draw(st.sampled_from(_ODD))
    elif where == 5:
        obj["status"] = draw(st.sampled_from(_ODD))
    elif where == 6:
        spec["clusterIP"] = draw(st.sampled_from(_VIPS))
    return obj


@given(_vip_services())
@settings(max_examples=500)
def test_plain_vips_read_fast_as_the_full_reading_reads_them(service_obj):
    """The VIPs' fast path takes only services the full reading accepts without a finding, and
    reads them the same: it is exactly as strict."""
    found = Collector("Service default/web")
    try:
        full = addresses.full_vips(copy.deepcopy(service_obj), found)
    except FieldError:
        full = None
    plain = addresses.plain_vips(service_obj)
    if plain is not None:
        assert found.found == []
        assert plain == full


def test_the_vips_fast_path_takes_ordinary_cluster_ips():
    obj = service(cluster_ips=["10.96.0.1", "10.96.0.2"])
    assert addresses.plain_vips(obj) == (
        addresses.Vip("10.96.0.1", addresses.Via.CLUSTER_IP),
        addresses.Vip("10.96.0.2", addresses.Via.CLUSTER_IP),
    )


@given(
    st.lists(
        st.tuples(st.sampled_from(["10.1.0.1", "10.2.0.1", "fd00::1"]), st.integers(1, 3)),
        unique=True,
        max_size=8,
    ),
    st.integers(0, 8),
)
def test_slot_layout_places_endpoints_where_assign_does(addresses, spare):
    count = len(addresses) + spare
    if count == 0:
        return
    lines = slots.layout([(ip, port, ServerState.READY) for ip, port in addresses], count)
    places = slots.assign(addresses, count)
    assert len(lines) == count
    for (ip, port), slot in zip(addresses, places, strict=True):
        assert lines[slot] == Server(f"s{slot + 1}", ip, port, hostport(ip, port))
    assert sum(1 for line in lines if line.parked) == count - len(addresses)
