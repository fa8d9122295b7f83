"""plan: what changed between two models, and the reasons an operator reads."""

from __future__ import annotations

import pytest

from kube2haproxy.plan import Action, diff, plan
from tests.builders import endpoint_slice, run, service


def model(*objects):
    return run(*objects).model


BASE = [
    service("web", cluster_ips=["10.96.0.10"]),
    endpoint_slice("web", endpoints=["10.1.0.1", "10.1.0.2"]),
    service("api", cluster_ips=["10.96.0.11"], ports=[("http", 80), ("grpc", 9090)]),
    endpoint_slice("api", endpoints=["10.2.0.1"], ports=[("http", 8080), ("grpc", 9000)]),
]


def test_first_apply_is_a_reload():
    decision = plan(None, model(*BASE))
    assert (decision.action, decision.reasons) == (Action.RELOAD, ("initial config",))


def test_same_cluster_is_nothing_to_do():
    decision = plan(model(*BASE), model(*BASE))
    assert decision.action is Action.NONE
    assert decision.changes.empty


@pytest.mark.parametrize(
    ("after", "field", "names", "reason"),
    [
        (
            [
                *BASE[:2],
                BASE[2],
                endpoint_slice(
                    "api", endpoints=["10.2.0.9"], ports=[("http", 8080), ("grpc", 9000)]
                ),
            ],
            "servers_changed",
            ("default_api_grpc", "default_api_http"),
            "endpoints changed: 2",
        ),
        (
            [
                *BASE[:3],
                endpoint_slice(
                    "api", endpoints=["10.2.0.1"], ports=[("http", 8081), ("grpc", 9000)]
                ),
            ],
            "servers_changed",
            ("default_api_http",),
            "endpoints changed: 1",
        ),
        (
            [
                service(
                    "web",
                    cluster_ips=["10.96.0.10"],
                    annotations={"kube2haproxy.io/balance": "leastconn"},
                ),
                *BASE[1:],
            ],
            "backends_changed",
            ("default_web_http",),
            "backend settings changed: 1",
        ),
        (
            [service("web", cluster_ips=["10.96.0.10"], externalIPs=["203.0.113.1"]), *BASE[1:]],
            "frontends_changed",
            ("default_web_http",),
            "frontends changed: 1",
        ),
        (
            [
                service("web", cluster_ips=["10.96.0.10"], ports=[("http", 80), ("admin", 81)]),
                *BASE[1:],
            ],
            "frontends_changed",
            ("default_web_admin",),
            "frontends changed: 1",
        ),
        (
            [*BASE, service("new", cluster_ips=["10.96.0.12"])],
            "services_added",
            ("default/new",),
            "services added: default/new",
        ),
        (BASE[2:], "services_removed", ("default/web",), "services removed: default/web"),
    ],
)
def test_each_kind_of_change(after, field, names, reason):
    decision = plan(model(*BASE), model(*after))
    assert decision.action is Action.RELOAD
    assert getattr(decision.changes, field) == names
    assert reason in decision.reasons


def test_added_services_are_not_repeated_as_frontends_and_backends():
    changes = diff(model(*BASE), model(*BASE, service("new", cluster_ips=["10.96.0.12"])))
    assert changes.frontends_changed == () and changes.backends_changed == ()


def test_servers_only_tells_endpoint_churn_from_the_rest():
    moved = [
        *BASE[:3],
        endpoint_slice("api", endpoints=["10.2.0.7"], ports=[("http", 8080), ("grpc", 9000)]),
    ]
    assert diff(model(*BASE), model(*moved)).servers_only
    grown = [*moved, service("new", cluster_ips=["10.96.0.12"])]
    assert not diff(model(*BASE), model(*grown)).servers_only
    assert not diff(model(*BASE), model(*BASE)).servers_only


def test_many_services_are_counted_not_listed():
    extra = [service(f"s{i}", cluster_ips=[f"10.96.1.{i}"]) for i in range(5)]
    decision = plan(model(*BASE), model(*BASE, *extra))
    assert "services added: default/s0, default/s1, default/s2 (+2 more)" in decision.reasons


def test_global_settings_force_a_reload():
    decision = plan(model(*BASE), model(*BASE), globals_changed=True)
    assert decision.action is Action.RELOAD
    assert decision.reasons == ("global settings changed",)
