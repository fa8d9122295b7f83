"""plan: what changed between two models, and the reasons an operator reads."""

from __future__ import annotations

import pytest

from kube2haproxy.appliers.runtime import slot_commands
from kube2haproxy.model import Backend, Model, Server, ServerState, hostport
from kube2haproxy.plan import Action, Reason, correct, diff, fit, plan, slot_changes
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
    assert (decision.action, decision.reasons, decision.details) == (
        Action.RELOAD,
        (Reason.INITIAL,),
        ("initial config",),
    )


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
            ("fe_default_web_http",),
            "frontends changed: 1",
        ),
        (
            [
                service("web", cluster_ips=["10.96.0.10"], ports=[("http", 80), ("admin", 81)]),
                *BASE[1:],
            ],
            "frontends_changed",
            ("fe_default_web_admin",),
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
    runtime = field == "servers_changed"  # endpoints moving within their slots: no reload
    assert decision.action is (Action.RUNTIME if runtime else Action.RELOAD)
    assert bool(decision.slots) is runtime
    assert getattr(decision.changes, field) == names
    assert reason in decision.details


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
    assert "services added: default/s0, default/s1, default/s2 (+2 more)" in decision.details
    assert decision.reasons == (Reason.SERVICES,)


def test_global_settings_force_a_reload():
    decision = plan(model(*BASE), model(*BASE), globals_changed=True)
    assert decision.action is Action.RELOAD
    assert (decision.reasons, decision.details) == ((Reason.GLOBALS,), ("global settings changed",))


# --- runtime slot changes (as the runtime API's commands) and drift -----------------------------

PARKED = ("127.0.0.1", 1, ServerState.PARKED)


def backend(*slots: tuple[str, int, ServerState]) -> Backend:
    servers = tuple(
        Server(f"s{i}", ip, port, hostport(ip, port), state)
        for i, (ip, port, state) in enumerate(slots, 1)
    )
    return Backend("ns_web_http", "ns", "web", "http", servers)


READY, DRAIN = ServerState.READY, ServerState.DRAIN


@pytest.mark.parametrize(
    ("before", "after", "commands"),
    [
        pytest.param(
            [PARKED],
            [("10.0.0.1", 80, READY)],
            [
                "set server ns_web_http/s1 addr 10.0.0.1 port 80",
                "set server ns_web_http/s1 state ready",
            ],
            id="fill-a-free-slot",
        ),
        pytest.param(
            [("10.0.0.1", 80, READY)],
            [PARKED],
            [
                "set server ns_web_http/s1 state maint",
                "set server ns_web_http/s1 addr 127.0.0.1 port 1",
            ],
            id="park-a-slot",
        ),
        pytest.param(
            [("10.0.0.1", 80, READY)],
            [("10.0.0.1", 80, DRAIN)],
            ["set server ns_web_http/s1 state drain"],
            id="drain-a-terminating-endpoint",
        ),
        pytest.param(
            [("10.0.0.1", 80, DRAIN)],
            [PARKED],
            [
                "set server ns_web_http/s1 state maint",
                "set server ns_web_http/s1 addr 127.0.0.1 port 1",
            ],
            id="drained-endpoint-gone",
        ),
        pytest.param(
            [("10.0.0.1", 80, READY)],
            [("fd00::2", 81, READY)],
            [
                "set server ns_web_http/s1 state maint",
                "set server ns_web_http/s1 addr fd00::2 port 81",
                "set server ns_web_http/s1 state ready",
            ],
            id="slot-moves-to-another-endpoint",
        ),
        pytest.param(
            [PARKED],
            [("10.0.0.1", 80, DRAIN)],
            [
                "set server ns_web_http/s1 addr 10.0.0.1 port 80",
                "set server ns_web_http/s1 state drain",
            ],
            id="fill-as-draining",
        ),
        pytest.param(
            [("10.0.0.1", 80, READY), PARKED], [("10.0.0.1", 80, READY), PARKED], [], id="unchanged"
        ),
        pytest.param(
            # Every endpoint replaced: the new ones serve before the old ones stop, whatever
            # the slot order (a moment without a server closes the connections it gets).
            [
                ("10.0.0.1", 80, READY),
                ("10.0.0.2", 80, READY),
                ("10.0.0.3", 80, READY),
                PARKED,
                PARKED,
            ],
            [
                PARKED,
                ("10.0.0.2", 80, DRAIN),
                ("10.0.0.9", 80, READY),
                PARKED,
                ("10.0.0.8", 80, READY),
            ],
            [
                "set server ns_web_http/s5 addr 10.0.0.8 port 80",
                "set server ns_web_http/s5 state ready",
                "set server ns_web_http/s3 state maint",
                "set server ns_web_http/s3 addr 10.0.0.9 port 80",
                "set server ns_web_http/s3 state ready",
                "set server ns_web_http/s1 state maint",
                "set server ns_web_http/s1 addr 127.0.0.1 port 1",
                "set server ns_web_http/s2 state drain",
            ],
            id="capacity-before-removal",
        ),
    ],
)
def test_runtime_commands(before, after, commands):
    assert commands_of(slot_changes(backend(*before), backend(*after))) == commands


def commands_of(changes) -> list[str]:
    return [command for change in changes for command in slot_commands(change)]


def observed(ip: str, port: int, *, maintenance: bool = False, draining: bool = False) -> Server:
    """A server line as HAProxy reports it (appliers turn `show servers state` into these)."""
    state = READY if not (maintenance or draining) else DRAIN if not maintenance else PARKED[2]
    return Server("", ip, port, hostport(ip, port), state)


@pytest.mark.parametrize(
    ("seen", "commands"),
    [
        pytest.param(
            {"s1": observed("10.0.0.1", 80), "s2": observed("127.0.0.1", 1, maintenance=True)},
            [],
            id="in-step",
        ),
        pytest.param(
            {
                "s1": observed("10.0.0.1", 80, maintenance=True),
                "s2": observed("127.0.0.1", 1, maintenance=True),
            },
            ["set server ns_web_http/s1 state ready"],
            id="someone-put-it-in-maint",
        ),
        pytest.param(
            {"s1": observed("10.9.9.9", 80), "s2": observed("127.0.0.1", 1, maintenance=True)},
            [
                "set server ns_web_http/s1 state maint",
                "set server ns_web_http/s1 addr 10.0.0.1 port 80",
                "set server ns_web_http/s1 state ready",
            ],
            id="wrong-address",
        ),
        pytest.param(
            {"s1": observed("10.0.0.1", 80), "s2": observed("127.0.0.1", 1)},
            ["set server ns_web_http/s2 state maint"],
            id="a-parked-slot-serves",
        ),
        pytest.param(
            {
                "s1": observed("10.0.0.1", 80, draining=True),
                "s2": observed("127.0.0.1", 1, maintenance=True),
            },
            ["set server ns_web_http/s1 state ready"],
            id="drained-by-hand",
        ),
    ],
)
def test_drift_is_found_and_corrected(seen, commands):
    expected = Model(backends=(backend(("10.0.0.1", 80, READY), PARKED),))
    found = correct(expected, {("ns_web_http", name): o for name, o in seen.items()})
    assert commands_of(found.slots) == commands
    assert found.action is (Action.RUNTIME if commands else Action.NONE)
    assert found.reasons == ((Reason.DRIFT,) if commands else ())


def test_a_server_missing_in_haproxy_needs_a_reload():
    expected = Model(backends=(backend(("10.0.0.1", 80, READY), PARKED),))
    found = correct(expected, {("ns_web_http", "s1"): observed("10.0.0.1", 80)})
    assert (found.action, found.reasons, found.force) == (Action.RELOAD, (Reason.DRIFT,), True)
    assert "ns_web_http/s2" in found.details[0]


def test_slot_count_changes_need_a_reload():
    many = [
        *BASE[:3],
        endpoint_slice(
            "api",
            endpoints=[f"10.2.0.{i}" for i in range(1, 12)],
            ports=[("http", 8080), ("grpc", 9000)],
        ),
    ]
    decision = plan(model(*BASE), model(*many))
    assert decision.action is Action.RELOAD
    assert decision.changes.slots_changed == ("default_api_grpc", "default_api_http")
    assert "server slots resized: 2" in decision.details
    assert decision.reasons == (Reason.SLOTS,)


def _web(n: int, **extra):
    return [
        service("web", cluster_ips=["10.96.0.10"], **extra),
        endpoint_slice(endpoints=[f"10.1.0.{i}" for i in range(1, n + 1)]),
    ]


def test_a_scale_down_keeps_the_running_slots_and_needs_no_reload():
    big, small = model(*_web(10)), model(*_web(2))
    assert len(big.backends[0].servers) == 16 and len(small.backends[0].servers) == 8
    fitted = fit(big, small)
    assert len(fitted.backends[0].servers) == 16
    assert sorted(s.address for s in fitted.backends[0].servers if not s.parked) == [
        "10.1.0.1:8080",
        "10.1.0.2:8080",
    ]
    decision = plan(big, small)  # plan fits by itself
    assert decision.action is Action.RUNTIME and decision.model == fitted


def test_endpoints_that_no_longer_fit_grow_the_slots_with_a_reload():
    small, big = model(*_web(2)), model(*_web(10))
    fitted = fit(small, big)
    assert fitted == big and len(fitted.backends[0].servers) == 16
    decision = plan(small, fitted)
    assert decision.action is Action.RELOAD
    assert decision.changes.slots_changed == ("default_web_http",)


def test_filling_the_free_slots_is_still_a_runtime_update():
    before, after = model(*_web(4)), model(*_web(8))  # 8 slots; 8 endpoints need 16 to keep 4 free
    fitted = fit(before, after)
    assert len(fitted.backends[0].servers) == 8
    assert plan(before, after).action is Action.RUNTIME


def test_any_other_change_brings_the_slots_back_to_their_computed_count():
    big = model(*_web(10))
    other = model(*_web(2, annotations={"kube2haproxy.io/balance": "leastconn"}))
    assert fit(big, other) == other and len(other.backends[0].servers) == 8
