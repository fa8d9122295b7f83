"""status and explain, the pure parts: label selectors, HAProxy's line states as its stats page
says them, a row per service port with why it is (not) served, what HAProxy was seen doing,
the report on the wire, the text and the HTML (every value from an object escaped), and the
path `explain` walks, endpoint by endpoint, with the rule that left each one out."""

from __future__ import annotations

import html.parser
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kube2haproxy import dryrun, selectors, statuspage, tables
from kube2haproxy.appliers.runtime import parse_servers_state
from kube2haproxy.errors import GrammarError
from kube2haproxy.explain import Explanation, explain
from kube2haproxy.linestate import LineView, ServerStatus
from kube2haproxy.resources import Key, Kind, prune
from kube2haproxy.settings import RenderSettings, Settings, TranslateSettings
from kube2haproxy.status import (
    Filter,
    Observed,
    Published,
    Row,
    StatusReport,
    Summary,
    Waiting,
    filtered,
    observe,
    report,
)
from kube2haproxy.wire import WireError, decode, encode
from testkit.builders import JSON, endpoint, endpoint_slice, endpoints_v1, service, store_of

NOW = 1_000_000.0


def published(*objects: JSON, **settings: Any) -> Published:
    chosen = Settings(**settings) if settings else Settings()
    return dryrun.published_of(store_of(objects), chosen, now=NOW)


# --- selectors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "api"}, False),
        ("app!=web", {}, True),  # absent matches !=, as in Kubernetes
        ("app!=web", {"app": "web"}, False),
        ("app in (web, api)", {"app": "api"}, True),
        ("app notin (web,api)", {"app": "db"}, True),
        ("app notin (web,api)", {"app": "web"}, False),
        ("team", {"team": ""}, True),
        ("!canary", {"canary": "yes"}, False),
        ("app=web,!canary", {"app": "web"}, True),
        ("example.com/tier=front", {"example.com/tier": "front"}, True),
    ],
)
def test_label_selectors_match_as_kubectl_reads_them(text, labels, matches):
    assert selectors.parse(text).matches(labels) is matches


@pytest.mark.parametrize(
    "text", ["app=web,", "=web", "app in web", "app in ()", "app=we b", "a b", "-x=1", "app=$"]
)
def test_a_selector_kubectl_refuses_is_refused(text):
    with pytest.raises(GrammarError):
        selectors.parse(text)


# --- HAProxy's view -------------------------------------------------------------------------

# `show servers state` as 2.6.12 and 3.4.0 gave it for one config (a live and a refused port
# with tcp checks, a line without checks, a disabled line, weight 0, drained; an http-checked
# backend with one line in maintenance), with what `show stat` said of the same lines.
HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn "
    "srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
)
SERVERS_STATE = {
    "2.6.12": "1\n"
    + HEADER
    + """
3 b 1 s1 127.0.0.5 2 0 1 1 4 6 3 4 6 0 0 0 - 18080 - 0 0 - - 0
3 b 2 s2 127.0.0.5 0 0 1 1 3 8 2 0 6 0 0 0 - 18099 - 0 0 - - 0
3 b 3 s3 127.0.0.5 2 0 1 1 4 1 0 2 0 0 0 0 - 18080 - 0 0 - - 0
3 b 4 s4 127.0.0.1 0 5 1 1 4 1 0 0 8 0 0 0 - 1 - 0 0 - - 0
3 b 5 s5 127.0.0.5 2 0 0 0 4 1 0 2 0 0 0 0 - 18080 - 0 0 - - 0
3 b 6 s6 127.0.0.5 2 8 1 1 1 6 3 4 6 0 0 0 - 18080 - 0 0 - - 0
4 c 1 s1 127.0.0.5 2 0 1 1 4 15 3 4 6 0 0 0 - 18080 - 0 0 - - 0
4 c 2 s2 127.0.0.5 0 1 1 1 1 15 3 0 14 0 0 0 - 18080 - 0 0 - - 0
""",
    "3.4.0": "1\n"
    + HEADER
    + """
3 b 1 s1 127.0.0.5 2 0 1 1 3 6 3 4 6 0 0 0 - 18080 - 0 0 - - 0
3 b 2 s2 127.0.0.5 0 0 1 1 3 8 2 0 6 0 0 0 - 18099 - 0 0 - - 0
3 b 3 s3 127.0.0.5 2 0 1 1 3 1 0 0 0 0 0 0 - 18080 - 0 0 - - 0
3 b 4 s4 127.0.0.1 0 5 1 1 3 1 0 0 8 0 0 0 - 1 - 0 0 - - 0
3 b 5 s5 127.0.0.5 2 0 0 0 3 1 0 0 0 0 0 0 - 18080 - 0 0 - - 0
3 b 6 s6 127.0.0.5 2 8 1 1 3 6 3 4 6 0 0 0 - 18080 - 0 0 - - 0
4 c 1 s1 127.0.0.5 2 0 1 1 3 15 3 4 6 0 0 0 - 18080 - 0 0 - - 0
4 c 2 s2 127.0.0.5 0 1 1 1 1 15 3 0 14 0 0 0 - 18080 - 0 0 - - 0
""",
}
# `show stat` of those lines: status and check_status ("no check" and MAINT lines have none).
STATS_PAGE = {
    ("b", "s1"): LineView("UP", "L4OK"),
    ("b", "s2"): LineView("DOWN", "L4CON"),
    ("b", "s3"): LineView("UP", "no check"),  # show stat: "no check"
    ("b", "s4"): LineView("MAINT", "no check"),
    ("b", "s5"): LineView("DRAIN", "no check"),  # weight 0: takes no new connection
    ("b", "s6"): LineView("DRAIN", "L4OK"),
    ("c", "s1"): LineView("UP", "L7OK"),
    ("c", "s2"): LineView("MAINT", "L7OK"),
}


@pytest.mark.parametrize("version", sorted(SERVERS_STATE))
def test_server_lines_read_as_haproxy_s_own_stats_page(version):
    lines = parse_servers_state(SERVERS_STATE[version])
    assert {key: status.view() for key, status in lines.items()} == STATS_PAGE


@pytest.mark.parametrize(
    ("addr", "port", "op", "admin", "weight", "state"),
    [
        ("127.0.0.1", 1, 0, 0x04, 1, "MAINT"),  # a free slot as loaded: `disabled`
        ("10.1.0.1", 8080, 2, 0x04, 1, "UP"),  # a slot loaded disabled, readied at runtime
        ("10.1.0.1", 8080, 0, 0x04, 1, "DOWN"),  # ... whose health check fails
        ("10.1.0.1", 8080, 0, 0x01, 1, "MAINT"),  # maintenance at runtime, endpoint kept
        ("10.1.0.1", 8080, 2, 0x00, 0, "DRAIN"),  # loaded draining (`weight 0`)
        ("10.1.0.1", 8080, 3, 0x00, 1, "NOLB"),
    ],
)
def test_a_line_s_state_is_the_stats_page_s(addr, port, op, admin, weight, state):
    assert ServerStatus(addr, port, op, admin, weight).view().state == state


def test_lines_that_changed_since_haproxy_was_asked_are_not_reported_as_its_view():
    web = [service("web", "shop"), endpoint_slice("web", "shop", endpoints=["10.1.0.1"])]
    before = published(*web)
    assert before.deployed is not None
    (line,) = (s for s in before.deployed.backends["shop_web_http"].servers if not s.parked)
    text = (
        "1\n# be_name srv_name srv_addr srv_port srv_op_state srv_admin_state srv_uweight "
        "srv_check_status srv_check_state\n"
        f"shop_web_http {line.name} 10.1.0.1 8080 2 0 1 0 0\n"
    )
    seen = Observed(NOW, before.deployed, observe(before.deployed, parse_servers_state(text)))
    now = replace(before, observed=seen)
    (row,) = report(now, now=NOW).rows
    assert (row.up, row.endpoints, dict(row.lines)) == (1, 1, {"UP": 1})

    # An endpoint added since: HAProxy was not asked about its line yet.
    more = [web[0], endpoint_slice("web", "shop", endpoints=["10.1.0.1", "10.1.0.2"])]
    after = replace(published(*more), observed=seen)
    (row,) = report(after, now=NOW).rows
    assert dict(row.lines) == {"UP": 1, "?": 1}


# --- the report -----------------------------------------------------------------------------

CLUSTER = [
    service("web", "shop", labels={"app": "web"}, ports=[("http", 80), ("dns", 53, "UDP")]),
    endpoint_slice("web", "shop", endpoints=["10.1.0.1", endpoint("10.1.0.2", ready=False)]),
    service("db", "shop", cluster_ips=["None"], labels={"app": "db"}),
    service("alias", "shop", cluster_ips=None, type="ExternalName", externalName="x.example"),
    service(
        "sharded",
        "shop",
        cluster_ips=["10.96.0.11"],
        labels={"service.kubernetes.io/service-proxy-name": "other"},
    ),
    # Two services claim one external IP: the older keeps it, the newer has nothing left.
    service(
        "old", "edge", cluster_ips=[], externalIPs=["192.0.2.1"], created="2024-01-01T00:00:00Z"
    ),
    service(
        "new", "edge", cluster_ips=[], externalIPs=["192.0.2.1"], created="2025-01-01T00:00:00Z"
    ),
]


def rows_of(found: StatusReport) -> list[tuple[str, str, str, str]]:
    return [(f"{r.namespace}/{r.name}", r.port, r.state, r.skip) for r in found.rows]


def test_every_service_port_is_a_row_that_says_why_it_is_or_is_not_served():
    found = report(published(*CLUSTER), now=NOW)
    assert rows_of(found) == [
        ("edge/new", "http:80", "not-served", ""),
        ("edge/old", "http:80", "served", ""),
        ("shop/alias", "", "skipped", "external-name"),
        ("shop/db", "", "skipped", "headless"),
        ("shop/sharded", "", "skipped", "other-proxy"),
        ("shop/web", "http:80", "served", ""),
        ("shop/web", "dns:53/UDP", "skipped", "udp-port"),
    ]
    new = found.rows[0]
    assert "already served by Service edge/old" in new.reason
    web = found.rows[-2]
    assert (web.vips, web.frontend, web.backend, web.endpoints) == (
        ("10.96.0.10",),
        "fe_shop_web_http",
        "shop_web_http",
        1,
    )
    assert dict(web.lines) == {"?": 1}  # HAProxy not asked yet
    assert found.summary.services == 6 and found.summary.served == 2
    table = tables.status_table(found)
    assert "shop/web        http:80     10.96.0.10  shop_web_http  0/1" in table
    assert "skipped (udp-port)" in table and "skipped (headless)" in table
    assert "not-served: 192.0.2.1:80 is already served by Service edge/old" in table


@pytest.mark.parametrize(
    ("chosen", "names"),
    [
        (Filter(namespace="edge"), {"edge/new", "edge/old"}),
        (Filter(selector=selectors.parse("app in (web,db)")), {"shop/web", "shop/db"}),
        (Filter(name="we*"), {"shop/web"}),
        (Filter(name="s*"), {"shop/sharded"}),  # the name, not namespace/name
        (Filter(name="*/*e*"), {"edge/new", "shop/sharded", "shop/web"}),
        (Filter(name="shop/*", selector=selectors.parse("!app")), {"shop/alias", "shop/sharded"}),
    ],
)
def test_rows_are_filtered_as_kubectl_filters(chosen, names):
    found = filtered(report(published(*CLUSTER), now=NOW), chosen)
    assert {f"{r.namespace}/{r.name}" for r in found.rows} == names


def test_a_change_that_waits_for_a_reload_says_so_on_its_rows():
    base = published(*CLUSTER)
    waiting = Waiting("reload", ("services",), ("services added: shop/web",), since=NOW - 1)
    found = report(replace(base, pending=frozenset({Key("shop", "web")}), waiting=waiting), now=NOW)
    web = [r for r in found.rows if r.name == "web"]
    assert {r.state for r in web} == {"waiting"}
    assert web[0].reason == (
        "waiting for a reload: services added or removed, each with sockets of its own"
    )
    assert "waiting for a reload: services added" in tables.summary(found)


def test_the_report_survives_the_wire_and_a_wrong_answer_names_its_field():
    found = report(published(*CLUSTER), now=NOW)
    again = decode(StatusReport, json.loads(json.dumps(encode(found))))
    assert again == found
    data = encode(found)
    data["rows"][1]["endpoints"] = "many"
    with pytest.raises(WireError, match=r"StatusReport.rows\[1\].endpoints: expected int"):
        decode(StatusReport, data)
    found_one = explain(published(*CLUSTER), Key("shop", "web"), now=NOW, source="manifests")
    assert found_one is not None
    assert decode(Explanation, json.loads(json.dumps(encode(found_one)))) == found_one


def test_names_a_terminal_would_obey_are_escaped():
    hostile = service("evil\x1b[2J\nline", "shop", cluster_ips=["10.96.0.12"])
    found = report(published(hostile), now=NOW)
    table = tables.status_table(found, wide=True)
    assert "\x1b" not in table and table.count("\n") == 2
    assert "'shop/evil\\x1b[2J\\nline'" in table


# --- the page -------------------------------------------------------------------------------


class _Cells(html.parser.HTMLParser):
    """The text of each cell of the services table, and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str | None]] = []
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += attrs
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._in_body and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "p", "form", "label", "input"}
TAGS |= {"button", "table", "thead", "tbody", "tr", "th", "td", "a", "span"}
text = st.text(min_size=1, max_size=30)


@given(
    namespace=text,
    name=text,
    port=text,
    reason=text,
    vip=text,
    label=text,
)
def test_the_page_shows_every_value_as_text_never_as_markup(
    namespace, name, port, reason, vip, label
):
    row = Row(
        namespace,
        name,
        port,
        "not-served",
        reason,
        vips=(vip,),
        frontend="fe",
        backend="be",
        endpoints=1,
        lines={"DOWN": 1},
        labels={"x": label},
    )
    summary = Summary(True, True, "per-service", 1, 0, 0, 0, 0)
    page = statuspage.page(StatusReport(NOW, summary, (row,)), Filter(name=name), selector=label)
    parsed = _Cells()
    parsed.feed(page)
    assert parsed.tags <= TAGS
    (cells,) = parsed.rows
    assert cells[0] == f"{namespace}/{name}"
    assert cells[1] == port and cells[2] == vip
    assert cells[7] == f"not-served: {reason}"
    assert ("value", label) in parsed.attributes and ("value", name) in parsed.attributes
    href = dict(a for a in parsed.attributes if a[0] == "href")["href"]
    assert href is not None and all(c.isascii() and c.isprintable() for c in href)


# --- explain --------------------------------------------------------------------------------


def endpoints_of(found: Explanation, port: int = 0) -> dict[str, tuple[str, str]]:
    """address -> (server role, or why it is left out)."""
    return {
        e.address: (e.role if e.served else e.reason, e.pod) for e in found.ports[port].endpoints
    }


def test_explain_gives_each_endpoint_its_line_or_the_rule_that_left_it_out():
    ref = {"kind": "Pod", "name": "web-1", "namespace": "shop"}
    slices = [
        endpoint_slice(
            "web",
            "shop",
            name="web-a",
            endpoints=[
                {**endpoint("10.1.0.1"), "targetRef": ref, "nodeName": "node-a"},
                endpoint("10.1.0.2", ready=False),
                endpoint("10.1.0.3", ready=False, serving=True, terminating=True),
                endpoint("10.1.0.4", ready=False, serving=False, terminating=True),
                endpoint("127.0.0.1"),
                endpoint("fd00::1"),
            ],
        ),
        endpoint_slice("web", "shop", name="web-b", endpoints=["10.1.0.1"]),
        endpoint_slice("web", "shop", name="web-c", endpoints=["10.1.0.9"], ports=[("metrics", 9)]),
        endpoint_slice("web", "shop", name="web-d", endpoints=["web.example"], address_type="FQDN"),
    ]
    found = explain(
        published(service("web", "shop"), *slices), Key("shop", "web"), now=NOW, source="manifests"
    )
    assert found is not None
    (port,) = found.ports
    verdicts = [(e.address, e.source, e.served, e.role or e.reason) for e in port.endpoints]
    assert verdicts == [
        ("10.1.0.1:8080", "EndpointSlice web-a", True, "ready"),
        ("10.1.0.2:8080", "EndpointSlice web-a", False, "not ready"),
        ("10.1.0.3:8080", "EndpointSlice web-a", True, "drain"),  # finishes its connections
        ("10.1.0.4:8080", "EndpointSlice web-a", False, "terminating"),
        ("127.0.0.1", "EndpointSlice web-a", False, "127.0.0.1 is loopback: not an endpoint"),
        ("fd00::1", "EndpointSlice web-a", False, "fd00::1 is not IPv4"),
        (
            "10.1.0.1:8080",
            "EndpointSlice web-b",
            False,
            "listed by EndpointSlice web-a endpoints[0] too: counted once",
        ),
        (
            "10.1.0.9",
            "EndpointSlice web-c",
            False,
            "the slice lists no port 'http' (TCP): a named targetPort these pods do not declare, "
            "or a port the service does not have",
        ),
        ("web.example", "EndpointSlice web-d", False, "FQDN endpoints are not proxied"),
    ]
    first = port.endpoints[0]
    assert (first.pod, first.node, first.conditions, first.server) == (
        "Pod/web-1",
        "node-a",
        "ready",
        port.endpoints[0].server,
    )
    assert first.server.startswith("s")
    assert port.endpoints[3].conditions == "not ready, terminating, not serving"
    assert found.records[0].name == "web.shop.svc.cluster.local"
    assert [(a.address, a.via, a.bound) for a in port.addresses] == [
        ("10.96.0.10:80", "cluster IP", True)
    ]
    text = tables.explanation(found)
    path = "10.96.0.10:80 (cluster IP) -> frontend fe_shop_web_http -> backend shop_web_http"
    assert path in text
    assert "left out: not ready" in text and "HAPROXY" not in text  # manifests: no HAProxy


def test_explain_reads_a_slice_s_ports_as_translate_does():
    """A port entry translate ignores (no usable number) does not hide a later usable entry of
    the same name: translate serves the endpoint there, and explain says so."""
    slices = [
        endpoint_slice(
            "web", "shop", name="web-a", endpoints=["10.1.0.1"], ports=[("http", 0), ("http", 8080)]
        ),
        endpoint_slice("web", "shop", name="web-b", endpoints=["10.1.0.2"], ports=[("http", 0)]),
    ]
    found = explain(
        published(service("web", "shop"), *slices), Key("shop", "web"), now=NOW, source="manifests"
    )
    assert found is not None
    (port,) = found.ports
    assert [(e.address, e.served, e.role or e.reason) for e in port.endpoints] == [
        ("10.1.0.1:8080", True, "ready"),
        ("10.1.0.2", False, "the slice gives port http no usable number (0)"),
    ]


def test_explain_when_only_terminating_endpoints_serve_and_with_publish_not_ready():
    slices = [
        endpoint_slice(
            "web",
            endpoints=[
                endpoint("10.1.0.3", ready=False, serving=True, terminating=True),
                endpoint("10.1.0.2", ready=False),
            ],
        )
    ]
    found = explain(published(service("web"), *slices), Key("default", "web"), now=NOW, source="")
    assert found is not None
    assert endpoints_of(found) == {
        "10.1.0.3:8080": ("ready", ""),  # a rollout's last pods take the traffic
        "10.1.0.2:8080": ("not ready", ""),
    }
    every = service("web", publishNotReadyAddresses=True)
    found = explain(published(every, *slices), Key("default", "web"), now=NOW, source="")
    assert found is not None
    assert {v[0] for v in endpoints_of(found).values()} == {"ready"}


def test_explain_reads_v1_endpoints_for_a_service_without_slices():
    objects = [service("old"), endpoints_v1("old", ready=["10.1.0.1"], not_ready=["10.1.0.2"])]
    found = explain(published(*objects), Key("default", "old"), now=NOW, source="")
    assert found is not None
    assert endpoints_of(found) == {
        "10.1.0.1:8080": ("ready", ""),
        "10.1.0.2:8080": ("not ready", ""),
    }
    assert found.ports[0].endpoints[1].field == "subsets[0].notReadyAddresses[0]"


def test_explain_names_what_left_a_port_or_an_address_out():
    objects = [
        service("dns", "kube-system", ports=[("dns", 53, "UDP"), ("dns-tcp", 53)]),
        endpoint_slice("dns", "kube-system", endpoints=["10.1.0.1"], ports=[("dns-tcp", 53)]),
        service(
            "old", "edge", cluster_ips=[], externalIPs=["192.0.2.1"], created="2024-01-01T00:00:00Z"
        ),
        service("new", "edge", externalIPs=["192.0.2.1"], created="2025-01-01T00:00:00Z"),
    ]
    dns = explain(published(*objects), Key("kube-system", "dns"), now=NOW, source="")
    assert dns is not None
    udp, tcp = dns.ports
    assert (udp.port, udp.state, udp.endpoints) == ("dns:53/UDP", "skipped", ())
    assert udp.reason == "UDP port 53 skipped: kube2haproxy serves TCP ports only"
    assert (tcp.state, [e.address for e in tcp.endpoints]) == ("served", ["10.1.0.1:53"])
    assert dns.only("dns-tcp").ports == (tcp,) and dns.only("53").ports == (udp, tcp)

    new = explain(published(*objects), Key("edge", "new"), now=NOW, source="")
    assert new is not None
    bound, lost = new.ports[0].addresses
    assert (bound.address, bound.bound) == ("10.96.0.10:80", True)
    assert (lost.address, lost.via, lost.bound) == ("192.0.2.1:80", "external IP", False)
    assert "already served by Service edge/old" in lost.reason


def test_explain_shows_the_per_port_map_entry_that_routes_a_vip():
    objects = [service("web"), endpoint_slice(endpoints=["10.1.0.1"])]
    chosen = {"render": RenderSettings(frontend_layout="per-port")}
    found = explain(published(*objects, **chosen), Key("default", "web"), now=NOW, source="")
    assert found is not None
    (address,) = found.ports[0].addresses
    assert found.ports[0].frontend == "port_80"
    assert address.route.startswith("port-80-") and address.route.endswith(
        ".map: 10.96.0.10 -> default_web_http"
    )


def test_explain_of_a_service_skipped_as_another_proxy_s():
    label = {"service.kubernetes.io/service-proxy-name": "other"}
    objects = [service("web", labels=label), endpoint_slice(endpoints=["10.1.0.1"])]
    found = explain(published(*objects), Key("default", "web"), now=NOW, source="")
    assert found is not None and found.state == "skipped" and not found.records
    assert "served by proxy 'other', not ours" in found.reason
    assert found.ports[0].endpoints == ()
    assert explain(published(*objects), Key("default", "nope"), now=NOW, source="") is None
    allowed = published(*objects, translate=TranslateSettings(proxy_name="other"))
    served = explain(allowed, Key("default", "web"), now=NOW, source="")
    assert served is not None and served.state == "served"


def test_explain_shows_pod_and_node_of_objects_the_kube_source_pruned():
    """The kube source keeps what explain shows of an endpoint compactly (resources.prune):
    the same pods and nodes as the objects as written."""
    ref = {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u-1"}
    objects = [
        service("web", "shop"),
        endpoint_slice(
            "web",
            "shop",
            endpoints=[
                {**endpoint("10.1.0.1"), "targetRef": ref, "nodeName": "node-a"},
                {**endpoint("10.1.0.2", ready=False), "targetRef": {"name": "web-2"}},
                endpoint("10.1.0.3"),
            ],
        ),
    ]
    pruned = [prune(Kind.SERVICE, objects[0]), prune(Kind.ENDPOINT_SLICE, objects[1])]
    assert pruned[1]["endpoints"][0]["targetRef"] == "Pod/web-1"
    shown = []
    for listed in (objects, pruned):
        found = explain(published(*listed), Key("shop", "web"), now=NOW, source="")
        assert found is not None
        shown.append([(e.address, e.pod, e.node) for e in found.ports[0].endpoints])
    assert shown[0] == shown[1]
    assert shown[0] == [
        ("10.1.0.1:8080", "Pod/web-1", "node-a"),
        ("10.1.0.2:8080", "Pod/web-2", ""),
        ("10.1.0.3:8080", "", ""),
    ]
