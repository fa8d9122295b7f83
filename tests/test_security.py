"""Untrusted input cannot reach haproxy.cfg: property-based tests with hostile values.

Anyone who may edit a Service (or an EndpointSlice) in any namespace writes into our input. For
every field that can reach the template, a hostile value (a newline, a carriage return, '#',
quotes, spaces, backslashes, control characters, unicode line separators, very long strings)
must be rejected by its grammar: the rendered config is then exactly the config of the same
cluster with that field absent (or, for allow-lists, failing closed), line for line.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube2haproxy import grammar
from kube2haproxy.model import SourceRule
from kube2haproxy.render import BUNDLED
from testkit.builders import endpoint, endpoint_slice, endpoints_v1, service
from tests.pipeline import backend_servers, render, run, run_loaded

JSON = dict[str, Any]
P = "kube2haproxy.io/"

INJECTIONS = [
    "\n",
    "\r",
    "\r\n",
    "#",
    '"',
    "'",
    " ",
    "\t",
    "\\",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x85",
    "\u2028",
    "\u2029",
    "é",
    "$",
    "{",
    "}",
    "\ufeff",
]
CLEAN_VALUES = [
    "10.0.0.1",
    "web",
    "http",
    "fd00::1",
    "/healthz",
    "5s",
    "v2",
    "10.0.0.0/8",
    "leastconn",
    "TCP",
    "80",
    "frontend",
    "backend x",
    "server s9 6.6.6.6:80",
]


def hostile(injections: list[str]) -> st.SearchStrategy[str]:
    """A plausible value with at least one character that no grammar of ours admits."""
    inject = st.lists(st.sampled_from(injections), min_size=1, max_size=3).map("".join)
    prefix = st.sampled_from(CLEAN_VALUES) | st.text(max_size=12)
    suffix = st.sampled_from(
        ["", *CLEAN_VALUES, "\nbackend evil\n    server x 6.6.6.6:1"]
    ) | st.text(max_size=12)
    long_tail = st.sampled_from(["", "a" * 5000])
    return st.tuples(prefix, inject, suffix, long_tail).map("".join)


def cluster() -> list[JSON]:
    """A clean cluster using every field that reaches the template."""
    web = service(
        "web",
        "shop",
        ports=[("http", 80), ("admin", 9000)],
        cluster_ips=["10.96.0.10"],
        externalIPs=["203.0.113.10"],
        loadBalancerSourceRanges=["198.51.100.0/24"],
        status={"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}},
        annotations={
            P + "balance": "leastconn",
            P + "timeout-connect": "3s",
            P + "timeout-server": "40s",
            P + "timeout-client": "50s",
            P + "timeout-tunnel": "2h",
            P + "maxconn": "100",
            P + "check": "http",
            P + "check-path": "/healthz",
            P + "check-interval": "3s",
            P + "check-rise": "2",
            P + "check-fall": "4",
            P + "proxy-protocol": "v2",
            P + "source-ranges": "10.0.0.0/8",
        },
        labels={"app": "web"},
    )
    web_slice = endpoint_slice(
        "web",
        "shop",
        endpoints=["10.1.0.1", endpoint("10.1.0.2", ready=True)],
        ports=[("http", 8080), ("admin", 9000)],
    )
    legacy = service("legacy", "shop", cluster_ips=["10.96.0.11"], ports=[("soap", 8443)])
    legacy_eps = endpoints_v1(
        "legacy", "shop", ready=["10.2.0.1", "10.2.0.2"], ports=[("soap", 8443)]
    )
    other = service("api", "prod", cluster_ips=["10.96.0.12"])
    other_slice = endpoint_slice("api", "prod", endpoints=["10.3.0.1"])
    return [web, web_slice, legacy, legacy_eps, other, other_slice]


def config(objects: list[JSON], transform: Callable[[Any], Any] | None = None) -> str:
    model = run(*objects).model
    return render(transform(model) if transform else model)


Mutation = Callable[[list[JSON], Any], None]


def at(index: int, *path: str | int) -> Callable[[list[JSON], Any], None]:
    """Set objects[index][path...] = value; a value of DELETE removes the key."""

    def mutate(objects: list[JSON], value: Any) -> None:
        node: Any = objects[index]
        for part in path[:-1]:
            node = node[part]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return mutate


DELETE = object()


def without_service(index: int) -> Mutation:
    def mutate(objects: list[JSON], _: Any) -> None:
        objects[index] = {"kind": "Deleted"}

    return mutate


def lb_rule_fails_closed(model: Any) -> Any:
    frontends = tuple(
        replace(f, source_rules=(f.source_rules[0], SourceRule((), f.source_rules[1].destinations)))
        if f.service == "web"
        else f
        for f in model.frontends
    )
    return replace(model, frontends=frontends)


def annotation_fails_closed(model: Any) -> Any:
    frontends = tuple(
        replace(f, source_rules=(SourceRule(()), f.source_rules[1])) if f.service == "web" else f
        for f in model.frontends
    )
    return replace(model, frontends=frontends)


def drop_port(objects: list[JSON], _: Any) -> None:
    objects[0]["spec"]["ports"].pop(0)


def drop_first_endpoint(objects: list[JSON], _: Any) -> None:
    objects[1]["endpoints"].pop(0)


def drop_slice_port(objects: list[JSON], _: Any) -> None:
    objects[1]["ports"].pop(0)


def drop_legacy_address(objects: list[JSON], _: Any) -> None:
    objects[3]["subsets"][0]["addresses"].pop(0)


def set_cluster_ip(objects: list[JSON], value: Any) -> None:
    at(0, "spec", "clusterIPs")(objects, [value])
    at(0, "spec", "clusterIP")(objects, value)


def no_cluster_ip(objects: list[JSON], _: Any) -> None:
    objects[0]["spec"]["clusterIPs"] = []
    objects[0]["spec"]["clusterIP"] = ""


def no_annotation(key: str) -> Mutation:
    return lambda objects, _: objects[0]["metadata"]["annotations"].pop(P + key)


# field name -> (how to put the hostile value in, how to build the expected cluster, a transform
# of the expected model for fields that fail closed)
FIELDS: dict[str, tuple[Mutation, Mutation, Callable[[Any], Any] | None]] = {
    "metadata.namespace": (at(0, "metadata", "namespace"), without_service(0), None),
    "metadata.name": (at(0, "metadata", "name"), without_service(0), None),
    "proxy-name label": (
        at(0, "metadata", "labels", "service.kubernetes.io/service-proxy-name"),
        without_service(0),
        None,
    ),
    "spec.ports[0].name": (at(0, "spec", "ports", 0, "name"), drop_port, None),
    "spec.ports[0].protocol": (at(0, "spec", "ports", 0, "protocol"), drop_port, None),
    "spec.clusterIP(s)": (set_cluster_ip, no_cluster_ip, None),
    "spec.externalIPs[0]": (at(0, "spec", "externalIPs", 0), at(0, "spec", "externalIPs"), None),
    "status.loadBalancer.ingress[0].ip": (
        at(0, "status", "loadBalancer", "ingress", 0, "ip"),
        lambda o, _: o[0]["status"]["loadBalancer"].pop("ingress"),
        None,
    ),
    "spec.loadBalancerSourceRanges[0]": (
        at(0, "spec", "loadBalancerSourceRanges", 0),
        lambda o, _: None,
        lb_rule_fails_closed,
    ),
    "spec.sessionAffinity": (
        at(0, "spec", "sessionAffinity"),
        lambda o, _: o[0]["spec"].pop("sessionAffinity"),
        None,
    ),
    "sessionAffinityConfig.clientIP.timeoutSeconds": (
        at(0, "spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"),
        lambda o, _: o[0]["spec"]["sessionAffinityConfig"]["clientIP"].pop("timeoutSeconds"),
        None,
    ),
    "EndpointSlice endpoints[0].addresses[0]": (
        at(1, "endpoints", 0, "addresses", 0),
        drop_first_endpoint,
        None,
    ),
    "EndpointSlice ports[0].name": (at(1, "ports", 0, "name"), drop_slice_port, None),
    "EndpointSlice ports[0].protocol": (at(1, "ports", 0, "protocol"), drop_slice_port, None),
    "Endpoints subsets[0].addresses[0].ip": (
        at(3, "subsets", 0, "addresses", 0, "ip"),
        drop_legacy_address,
        None,
    ),
    **{
        f"annotation {key}": (at(0, "metadata", "annotations", P + key), no_annotation(key), None)
        for key in [
            "balance",
            "timeout-connect",
            "timeout-server",
            "timeout-client",
            "timeout-tunnel",
            "maxconn",
            "check-path",
            "check-interval",
            "check-rise",
            "check-fall",
            "proxy-protocol",
        ]
    },
    "annotation source-ranges": (
        at(0, "metadata", "annotations", P + "source-ranges"),
        lambda o, _: None,
        annotation_fails_closed,
    ),
}


@pytest.mark.parametrize("field", list(FIELDS))
@settings(max_examples=40)
@given(data=st.data())
def test_hostile_value_renders_exactly_the_config_without_it(field, data):
    put, expect, transform = FIELDS[field]
    # Spaces around commas are part of the source-ranges grammar, and the API server trims
    # whitespace around each loadBalancerSourceRanges entry (strings.TrimSpace): a value it
    # would accept is no attack. Any other injection is.
    injections = INJECTIONS
    if "source-ranges" in field.lower():
        injections = [c for c in INJECTIONS if c != " "]
    elif "SourceRanges" in field:
        injections = [c for c in INJECTIONS if c.strip(grammar.GO_SPACE)]
    value = data.draw(hostile(injections), label="value")

    attacked = cluster()
    put(attacked, value)
    expected_objects = cluster()
    expect(expected_objects, None)

    translation = run(*[o for o in attacked if o.get("kind") != "Deleted"])
    text = render(translation.model)
    want = config([o for o in expected_objects if o.get("kind") != "Deleted"], transform)
    assert text.splitlines() == want.splitlines()
    assert translation.warnings or translation.findings, "a rejected value must be reported"
    for finding in translation.findings:
        assert "\n" not in str(finding) and "\r" not in str(finding)
        assert str(finding).isascii()


def test_the_clean_cluster_exercises_every_field():
    """The attacks above are only meaningful if the clean cluster renders each field."""
    text = config(cluster())
    for needle in [
        "bind 10.96.0.10:80",
        "bind 203.0.113.10:80",
        "bind 192.0.2.10:80",
        "acl from_allowed_0 src 10.0.0.0/8",
        "acl to_guarded_1 dst 192.0.2.10",
        "acl from_allowed_1 src 198.51.100.0/24",
        "stick-table type ip size 100000 expire 10m",
        "balance leastconn",
        "timeout connect 3s",
        "timeout server 40s",
        "timeout client 50s",
        "timeout tunnel 2h",
        "http-check send meth GET uri /healthz",
        "10.1.0.1:8080 check inter 3s rise 2 fall 4 maxconn 100 send-proxy-v2",
        "frontend fe_shop_web_admin",
        "backend prod_api_http",
    ]:
        assert needle in text, needle
    assert backend_servers(text, "shop_web_http") == ["10.1.0.1:8080", "10.1.0.2:8080"]
    assert backend_servers(text, "shop_web_admin") == ["10.1.0.1:9000", "10.1.0.2:9000"]
    assert backend_servers(text, "shop_legacy_soap") == ["10.2.0.1:8443", "10.2.0.2:8443"]


# --- any shape at all: whatever the input, every line has a known shape -------------------------

_TOKEN = r"[A-Za-z0-9_.:/\[\]@%?=&+,~!*-]+"
_FIXED_COMMENTS = {
    line.strip()
    for template in BUNDLED.glob("*.j2")
    for line in template.read_text().splitlines()
    if line.strip().startswith("#") and "{" not in line
}
_LINE = re.compile(
    r"|(?:global|defaults)"
    r"|(?:frontend|backend) [a-z0-9_-]+"
    r"|# Service [a-z0-9-]+/[a-z0-9-]+, port [a-z0-9-]+"
    rf"|    [a-z][a-z_-]*(?: {_TOKEN})*"
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | hostile(INJECTIONS)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            out += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += paths(child, (*prefix, i))
    return out


@settings(max_examples=300)
@given(data=st.data())
def test_any_value_anywhere_yields_only_known_line_shapes(data):
    objects = cluster()
    index = data.draw(st.integers(0, len(objects) - 1), label="object")
    path = data.draw(
        st.sampled_from([p for p in paths(objects[index]) if p[0] != "kind"]), label="path"
    )
    value = data.draw(json_values, label="value")
    node: Any = objects[index]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = copy.deepcopy(value)

    text = render(run_loaded(*objects).model)
    for line in text.splitlines():
        assert _LINE.fullmatch(line) or line.strip() in _FIXED_COMMENTS, repr(line)
    assert text.isascii()


_PUBLISHED = re.compile(
    r"; Generated by kube2haproxy: the services' addresses on the HAProxy pool\."
    r"|# Generated by kube2haproxy: the services' addresses on the HAProxy pool\."
    r"|\$ORIGIN cluster\.local\.|\$TTL 30"
    r"|@ IN SOA localhost\. hostmaster\.cluster\.local\. \(1 7200 1800 86400 30\)"
    r"|@ IN NS localhost\."
    r"|[a-z0-9-]+\.[a-z0-9-]+\.svc IN A [0-9.]+"
    r"|[a-z0-9-]+\.[a-z0-9-]+\.svc IN AAAA [0-9a-f:]+"
    r"|_[a-z0-9-]+\._tcp\.[a-z0-9-]+\.[a-z0-9-]+\.svc IN SRV 0 100 [0-9]+ "
    r"[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local\."
    r"|[0-9a-f.:]+ [a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local"
    r"|global_defs \{|    router_id pool-a|\}|"
    r"|vrrp_instance kube2haproxy_v[46] \{|    state BACKUP|    interface eth0"
    r"|    virtual_router_id 5[12]|    priority 100|    advert_int 1"
    r"|    virtual_ipaddress(?:_excluded)? \{|    \}"
    r"|        [0-9a-f.:]+/(?:32|128) dev eth0|        fe80::200:5eff:fe00:234/64 dev eth0"
    r"|        169\.254\.51\.1/32 dev eth0"
    r"|# Generated by kube2haproxy: VRRP failover of the HAProxy pool's VIPs\."
)


@settings(max_examples=200)
@given(data=st.data(), pool=st.booleans())
def test_what_is_published_has_only_known_line_shapes(data, pool):
    """The DNS files and keepalived's configuration are built from the same untrusted objects:
    any value anywhere (the pool annotation included) yields only known lines."""
    from kube2haproxy import dns, keepalived

    objects = cluster()
    objects[0]["metadata"]["annotations"][P + "vip"] = "10.200.0.7"
    index = data.draw(st.integers(0, len(objects) - 1), label="object")
    path = data.draw(
        st.sampled_from([p for p in paths(objects[index]) if p[0] != "kind"]), label="path"
    )
    node: Any = objects[index]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = copy.deepcopy(data.draw(json_values, label="value"))

    mode = {"vip_mode": "pool", "vip_cidr": "10.200.0.0/16,fd00:200::/64"} if pool else {}
    model = run_loaded(*objects, **mode).model
    found = dns.records(model, zone="cluster.local")
    vips = sorted({ip for e in model.services for ip in e.vips})
    vrrp = keepalived.Vrrp("eth0", 51, 100, "pool-a")
    for text in (
        dns.zone_file(found, zone="cluster.local", serial=1, ttl_s=30),
        dns.hosts_file(found),
        keepalived.render(vips, vrrp),
    ):
        assert text.isascii()
        for line in text.splitlines():
            assert _PUBLISHED.fullmatch(line), repr(line)


def test_line_shapes_are_strict_enough_to_catch_an_injection():
    """The allowlist above would notice an injected line."""
    for evil in [
        "backend evil x",
        "    server x 6.6.6.6:1 # c",
        "    bind 1.2.3.4:80\r",
        "lua-load /tmp/x.lua",
        '    bind "1.2.3.4:80"',
        "    server s1 a\\ b:1",
    ]:
        assert not _LINE.fullmatch(evil) and evil.strip() not in _FIXED_COMMENTS, evil


def test_an_alias_bomb_is_reported_in_bounded_space():
    """YAML aliases make a tiny file a huge value: a message about it must not print it whole."""
    from kube2haproxy.findings import shown

    bomb: object = ["lol"] * 10
    for _ in range(8):  # 10**9 leaves, a few hundred objects
        bomb = [bomb] * 10
    assert len(shown(bomb)) <= 90

    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        text += f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, "
        text += f"*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
    import yaml

    doc = yaml.safe_load(text)
    slice_obj = endpoint_slice("web", "shop", endpoints=[{"addresses": [doc["h"]]}])
    result = run_loaded(service("web", "shop"), slice_obj)
    (finding,) = [f for f in result.findings if "addresses" in f.field]
    assert len(str(finding)) < 400


def test_ipv4_mapped_addresses_cannot_sneak_past_the_special_ranges():
    """::ffff:127.0.0.1 is loopback and ::ffff:0.0.0.0 the IPv4 wildcard in disguise. The API
    server reads the form as the IPv4 address (ParseIPSloppy, To4), and so do we: it is
    accepted where that address is, and refused where that address is."""
    web = service("web", "shop", externalIPs=["::ffff:0.0.0.0", "::ffff:198.51.100.1"])
    in_v6 = endpoint_slice(
        "web",
        "shop",
        address_type="IPv6",
        endpoints=["::ffff:10.1.0.9", "fd00::1"],
    )
    in_v4 = endpoint_slice(
        "web",
        "shop",
        name="web-v4",
        endpoints=["::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.1.0.1"],
    )
    result = run(web, in_v6, in_v4)
    text = render(result.model)
    assert "ffff" not in text
    assert "127.0.0.1:8080" not in text and "169.254" not in text and "0.0.0.0" not in text
    assert "bind 198.51.100.1:80" in text
    assert sorted(backend_servers(text, "shop_web_http")) == ["10.1.0.1:8080", "[fd00::1]:8080"]
    assert sorted(f.message.split(":")[0].split(";")[0] for f in result.warnings) == [
        "0.0.0.0 is unspecified",
        "10.1.0.9 is not IPv6",
        "127.0.0.1 is loopback",
        "169.254.169.254 is link-local",
    ]
