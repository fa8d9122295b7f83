"""plan: what changed between what runs and a new model, what the runtime API can do about it
(servers added, slots filled and parked, spare backends and map entries for new services), and
the reasons an operator reads."""

from __future__ import annotations

from typing import Any

import pytest

from kube2haproxy.appliers.runtime import commands_of
from kube2haproxy.deployed import Abilities, Deployed, RuntimeOps, Transition, loaded, spare_pool
from kube2haproxy.layouts import layout
from kube2haproxy.model import Backend, Balance, Model, Server, ServerState, hostport
from kube2haproxy.plan import Action, Reason, Scope, correct, diff, loaded_state, plan
from testkit.builders import JSON, endpoint, endpoint_slice, service
from tests.pipeline import run

PER_SERVICE = Scope(layout("per-service"))
PER_PORT = Scope(layout("per-port"), spare_pool(2), Abilities(delete_servers=True))


def model(*objects: JSON) -> Model:
    return run(*objects).model


def running(model: Model, scope: Scope = PER_SERVICE) -> Deployed:
    return loaded_state(model, scope)


def commands(ops: RuntimeOps, options: dict[str, str] | None = None) -> list[str]:
    return commands_of(ops, options=options or {}, maps_dir="/maps")


BASE = [
    service("web", cluster_ips=["10.96.0.10"]),
    endpoint_slice("web", endpoints=["10.1.0.1", "10.1.0.2"]),
    service("api", cluster_ips=["10.96.0.11"], ports=[("http", 80), ("grpc", 9090)]),
    endpoint_slice("api", endpoints=["10.2.0.1"], ports=[("http", 8080), ("grpc", 9000)]),
]


def test_first_apply_is_a_reload():
    decision = plan(None, model(*BASE), PER_SERVICE)
    assert (decision.action, decision.reasons, decision.details) == (
        Action.RELOAD,
        (Reason.INITIAL,),
        ("initial config",),
    )


def test_same_cluster_is_nothing_to_do():
    decision = plan(running(model(*BASE)), model(*BASE), PER_SERVICE)
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
    decision = plan(running(model(*BASE)), model(*after), PER_SERVICE)
    runtime = field == "servers_changed"  # endpoints moving within their slots: no reload
    assert decision.action is (Action.RUNTIME if runtime else Action.RELOAD)
    assert bool(decision.ops) is runtime
    assert getattr(decision.changes, field) == names
    assert reason in decision.details


def test_added_services_are_not_repeated_as_frontends_and_backends():
    changes = diff(model(*BASE), model(*BASE, service("new", cluster_ips=["10.96.0.12"])))
    assert changes.frontends_changed == () and changes.backends_changed == ()


def test_many_services_are_counted_not_listed():
    extra = [service(f"s{i}", cluster_ips=[f"10.96.1.{i}"]) for i in range(5)]
    decision = plan(running(model(*BASE)), model(*BASE, *extra), PER_SERVICE)
    assert "services added: default/s0, default/s1, default/s2 (+2 more)" in decision.details
    assert decision.reasons == (Reason.SERVICES,)


def test_global_settings_force_a_reload():
    decision = plan(running(model(*BASE)), model(*BASE), PER_SERVICE, globals_changed=True)
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
    ("before", "after", "expected"),
    [
        pytest.param(
            [PARKED],
            [("10.0.0.1", 80, READY)],
            [
                "set server ns_web_http/s1 addr 10.0.0.1 port 80",
                "set server ns_web_http/s1 weight 1",
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
                "set server ns_web_http/s1 weight 1",
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
                "set server ns_web_http/s5 weight 1",
                "set server ns_web_http/s5 state ready",
                "set server ns_web_http/s3 state maint",
                "set server ns_web_http/s3 addr 10.0.0.9 port 80",
                "set server ns_web_http/s3 weight 1",
                "set server ns_web_http/s3 state ready",
                "set server ns_web_http/s1 state maint",
                "set server ns_web_http/s1 addr 127.0.0.1 port 1",
                "set server ns_web_http/s2 state drain",
            ],
            id="capacity-before-removal",
        ),
    ],
)
def test_runtime_commands(before, after, expected):
    assert commands(ops_between(backend(*before), backend(*after))) == expected


def ops_between(before: Backend, after: Backend, can: Abilities | None = None) -> RuntimeOps:
    step = Transition(loaded(Model(backends=(before,))), can or Abilities())
    assert step.servers(after)
    return step.result(Model(backends=(after,)))[0]


def observed(ip: str, port: int, *, maintenance: bool = False, draining: bool = False) -> Server:
    """A server line as HAProxy reports it (appliers turn `show servers state` into these)."""
    state = READY if not (maintenance or draining) else DRAIN if not maintenance else PARKED[2]
    return Server("", ip, port, hostport(ip, port), state)


@pytest.mark.parametrize(
    ("seen", "expected"),
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
            ["set server ns_web_http/s1 weight 1", "set server ns_web_http/s1 state ready"],
            id="someone-put-it-in-maint",
        ),
        pytest.param(
            {"s1": observed("10.9.9.9", 80), "s2": observed("127.0.0.1", 1, maintenance=True)},
            [
                "set server ns_web_http/s1 state maint",
                "set server ns_web_http/s1 addr 10.0.0.1 port 80",
                "set server ns_web_http/s1 weight 1",
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
            ["set server ns_web_http/s1 weight 1", "set server ns_web_http/s1 state ready"],
            id="drained-by-hand",
        ),
    ],
)
def test_drift_is_found_and_corrected(seen, expected):
    should = running(Model(backends=(backend(("10.0.0.1", 80, READY), PARKED),)))
    found = correct(should, {("ns_web_http", name): o for name, o in seen.items()}, PER_SERVICE)
    assert commands(found.ops) == expected
    assert found.action is (Action.RUNTIME if expected else Action.NONE)
    assert found.reasons == ((Reason.DRIFT,) if expected else ())


def test_a_server_missing_in_haproxy_needs_a_reload():
    should = running(Model(backends=(backend(("10.0.0.1", 80, READY), PARKED),)))
    found = correct(should, {("ns_web_http", "s1"): observed("10.0.0.1", 80)}, PER_SERVICE)
    assert (found.action, found.reasons, found.force) == (Action.RELOAD, (Reason.DRIFT,), True)
    assert "ns_web_http/s2" in found.details[0]


def test_a_scale_up_past_the_slots_adds_servers_at_runtime():
    many = [
        *BASE[:3],
        endpoint_slice(
            "api",
            endpoints=[f"10.2.0.{i}" for i in range(1, 12)],
            ports=[("http", 8080), ("grpc", 9000)],
        ),
    ]
    after = model(*many)
    decision = plan(running(model(*BASE)), after, PER_SERVICE)
    assert (decision.action, decision.reasons) == (Action.RUNTIME, (Reason.ENDPOINTS,))
    assert decision.model == after  # the file renders the cluster, whatever ran before
    assert decision.changes.slots_changed == ("default_api_grpc", "default_api_http")
    added = [(a.backend, a.server.name) for a in decision.ops.adds]
    assert added == [
        (b, f"s{i}") for b in ("default_api_grpc", "default_api_http") for i in range(9, 17)
    ]
    sent = commands(decision.ops, {"default_api_grpc": "", "default_api_http": "check inter 2s"})
    assert "add server default_api_grpc/s9 127.0.0.1:1" in sent
    assert "add server default_api_http/s16 127.0.0.1:1 check inter 2s" in sent
    assert "enable health default_api_http/s16" in sent
    # Added parked, then given their endpoints like any free slot; lines first, routes never.
    assert sent.index("add server default_api_http/s16 127.0.0.1:1 check inter 2s") < min(
        i for i, c in enumerate(sent) if c.startswith("set server")
    )
    assert decision.deployed.backends["default_api_http"] == after.backends[1]


def _web(n: int, **extra: Any) -> list[JSON]:
    return [
        service("web", cluster_ips=["10.96.0.10"], **extra),
        endpoint_slice(endpoints=[f"10.1.0.{i}" for i in range(1, n + 1)]),
    ]


def test_static_rr_cannot_take_servers_at_runtime():
    static = {"annotations": {"kube2haproxy.io/balance": "static-rr"}}
    small, big = model(*_web(2, **static)), model(*_web(10, **static))
    assert small.backends[0].balance is Balance.STATIC_RR
    decision = plan(running(small), big, PER_SERVICE)
    assert (decision.action, decision.reasons) == (Action.RELOAD, (Reason.SLOTS,))
    # Within its slots it still changes at runtime.
    assert plan(running(small), model(*_web(3, **static)), PER_SERVICE).action is Action.RUNTIME


@pytest.mark.parametrize("balance", ["static-rr", "roundrobin"])
def test_a_static_rr_line_loaded_draining_is_readied_by_a_reload(balance):
    """A draining endpoint renders `weight 0`; readying it needs `weight 1`, which HAProxy
    refuses on a static algorithm (only 0% or 100% of the loaded weight): a reload, planned.
    Dynamic algorithms take it at runtime."""
    annotations = {"kube2haproxy.io/balance": balance}
    draining = endpoint("10.1.0.2", ready=False, serving=True, terminating=True)
    before = model(
        service("web", cluster_ips=["10.96.0.10"], annotations=annotations),
        endpoint_slice(endpoints=["10.1.0.1", draining]),
    )
    after = model(*_web(2, annotations=annotations))
    decision = plan(running(before), after, PER_SERVICE)
    if balance == "static-rr":
        assert (decision.action, decision.reasons) == (Action.RELOAD, (Reason.SLOTS,))
    else:
        assert decision.action is Action.RUNTIME
    # Once reloaded, the line loaded ready drains and is readied again at runtime.
    assert plan(running(after), before, PER_SERVICE).action is Action.RUNTIME
    assert plan(running(after), after, PER_SERVICE).action is Action.NONE


@pytest.mark.parametrize("deletes", [True, False])
def test_a_scale_down_parks_the_lines_beyond_the_count_and_deletes_them_where_safe(deletes):
    big, small = model(*_web(10)), model(*_web(2))
    assert len(big.backends[0].servers) == 16 and len(small.backends[0].servers) == 8
    scope = Scope(layout("per-service"), abilities=Abilities(delete_servers=deletes))
    decision = plan(running(big), small, scope)
    assert decision.action is Action.RUNTIME and decision.model == small
    lines = decision.deployed.backends["default_web_http"].servers
    assert [d.server for d in decision.ops.deletes] == (
        [f"s{i}" for i in range(9, 17)] if deletes else []
    )
    assert len(lines) == (8 if deletes else 16)
    assert lines[:8] == small.backends[0].servers and all(s.parked for s in lines[8:])
    # Growing again reuses the parked lines HAProxy kept, and adds the deleted ones back.
    again = plan(decision.deployed, big, scope)
    assert again.action is Action.RUNTIME and again.model == big
    assert len(again.ops.adds) == (8 if deletes else 0)
    assert again.deployed.backends["default_web_http"] == big.backends[0]


def test_filling_the_free_slots_is_a_runtime_update():
    before, after = model(*_web(4)), model(*_web(8))  # 8 endpoints want 16 slots to keep 4 free
    decision = plan(running(before), after, PER_SERVICE)
    assert decision.action is Action.RUNTIME and len(decision.ops.adds) == 8


# --- per-port: new and deleted services at runtime (spare backends, map entries) ----------------

PORTED = [
    service("web", cluster_ips=["10.96.0.10"]),
    endpoint_slice("web", endpoints=["10.1.0.1", "10.1.0.2"]),
]


def new_service(name: str = "new", ip: str = "10.96.0.12", **extra: Any) -> list[JSON]:
    return [
        service(name, cluster_ips=[ip], **extra),
        endpoint_slice(name, endpoints=["10.3.0.1"]),
    ]


def test_a_new_service_on_a_listened_port_takes_a_spare_and_a_map_entry():
    before = running(model(*PORTED), PER_PORT)
    after = model(*PORTED, *new_service())
    decision = plan(before, after, PER_PORT)
    assert (decision.action, decision.reasons) == (Action.RUNTIME, (Reason.SERVICES,))
    assert decision.model == after  # the file names the service's own backend
    deployed = decision.deployed
    assert deployed.homes == {"default_new_http": "spare_0001"}
    assert deployed.spares == ("spare_0002",)
    assert deployed.routes[80]["10.96.0.12"] == "spare_0001"
    (route,) = decision.ops.routes
    map_file = before.maps[80]
    assert commands(RuntimeOps(routes=(route,))) == [
        f"add map /maps/{map_file} 10.96.0.12 spare_0001"
    ]
    # Lines added to the spare and filled before the route exists.
    sent = commands(decision.ops, {"default_new_http": ""})
    filled = next(i for i, c in enumerate(sent) if c.endswith("addr 10.3.0.1 port 8080"))
    assert sent[filled].startswith("set server spare_0001/s")
    assert filled < sent.index(f"add map /maps/{map_file} 10.96.0.12 spare_0001")
    assert len(deployed.backends["spare_0001"].servers) == 8


def test_endpoints_of_a_service_a_spare_serves_change_the_spare():
    before = plan(running(model(*PORTED), PER_PORT), model(*PORTED, *new_service()), PER_PORT)
    moved = [
        *PORTED,
        service("new", cluster_ips=["10.96.0.12"]),
        endpoint_slice("new", endpoints=["10.3.0.9"]),
    ]
    decision = plan(before.deployed, model(*moved), PER_PORT)
    assert decision.action is Action.RUNTIME
    assert {c.backend for c in decision.ops.slots} == {"spare_0001"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"annotations": {"kube2haproxy.io/balance": "leastconn"}}, Reason.SERVICE_SETTINGS),
        ({"sessionAffinity": "ClientIP"}, Reason.SERVICE_SETTINGS),
        ({"ports": [("http", 8081)]}, Reason.PORTS),
    ],
)
def test_a_new_service_that_a_spare_cannot_serve_reloads(extra, reason):
    decision = plan(
        running(model(*PORTED), PER_PORT), model(*PORTED, *new_service(**extra)), PER_PORT
    )
    assert (decision.action, decision.reasons) == (Action.RELOAD, (reason,))


def test_spares_exhausted_reload_once_and_the_reload_refills_them():
    state = running(model(*PORTED), PER_PORT)
    objects = list(PORTED)
    for i, expected in enumerate([Action.RUNTIME, Action.RUNTIME, Action.RELOAD]):
        objects += new_service(f"new{i}", f"10.96.0.{20 + i}")
        decision = plan(state, model(*objects), PER_PORT)
        assert decision.action is expected
        state = decision.deployed
    assert decision.reasons == (Reason.SPARES,)
    assert state.spares == ("spare_0001", "spare_0002") and not state.homes


def test_a_deleted_service_stops_routing_and_its_spare_returns():
    taken = plan(running(model(*PORTED), PER_PORT), model(*PORTED, *new_service()), PER_PORT)
    decision = plan(taken.deployed, model(*PORTED), PER_PORT)
    assert (decision.action, decision.reasons) == (Action.RUNTIME, (Reason.SERVICES,))
    sent = commands(decision.ops)
    map_file = taken.deployed.maps[80]
    # The route goes first, then its one endpoint's slot is parked: it keeps its connections.
    assert sent[0] == f"del map /maps/{map_file} 10.96.0.12"
    assert [c.split()[2].split("/")[0] for c in sent[1:]] == ["spare_0001"] * 2
    assert sent[1].endswith("state maint") and sent[2].endswith("addr 127.0.0.1 port 1")
    assert decision.deployed.spares == ("spare_0002", "spare_0001")
    assert "10.96.0.12" not in decision.deployed.routes[80]
    assert all(s.parked for s in decision.deployed.backends["spare_0001"].servers)


def test_a_service_deleted_and_created_again_gets_its_own_lingering_backend():
    other = service("other", cluster_ips=["10.96.0.11"])
    start = running(model(*PORTED, other), PER_PORT)
    gone = plan(start, model(other), PER_PORT)
    assert gone.action is Action.RUNTIME and "default_web_http" in gone.deployed.backends
    back = plan(gone.deployed, model(*PORTED, other), PER_PORT)
    assert back.action is Action.RUNTIME
    assert back.deployed.homes == {} and back.deployed.spares == start.spares
    assert back.deployed.routes == start.routes
    assert back.deployed.backends["default_web_http"] == start.backends["default_web_http"]


def test_drift_reads_a_spare_by_its_name_in_haproxy():
    taken = plan(running(model(*PORTED), PER_PORT), model(*PORTED, *new_service()), PER_PORT)
    seen = {(name, s.name): s for name, b in taken.deployed.backends.items() for s in b.servers}
    assert correct(taken.deployed, seen, PER_PORT).action is Action.NONE
    (slot,) = [s.name for s in taken.deployed.backends["spare_0001"].servers if not s.parked]
    seen[("spare_0001", slot)] = observed("10.3.0.1", 8080, maintenance=True)
    found = correct(taken.deployed, seen, PER_PORT)
    assert commands(found.ops) == [
        f"set server spare_0001/{slot} weight 1",
        f"set server spare_0001/{slot} state ready",
    ]
    # A line HAProxy kept beyond the model is fine parked, parked when it serves.
    seen[("spare_0001", slot)] = observed("10.3.0.1", 8080)
    seen[("spare_0001", "s9")] = observed("127.0.0.1", 1, maintenance=True)
    assert correct(taken.deployed, seen, PER_PORT).action is Action.NONE
    seen[("spare_0001", "s9")] = observed("10.9.9.9", 80)
    found = correct(taken.deployed, seen, PER_PORT)
    assert commands(found.ops) == [
        "set server spare_0001/s9 state maint",
        "set server spare_0001/s9 addr 127.0.0.1 port 1",
    ]
