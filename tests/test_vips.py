"""--vip-mode pool: every replica computes the same addresses, and a service's address never moves
while it exists, whatever happens to the other services; collisions are refused and reported."""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kube2haproxy.errors import GrammarError
from kube2haproxy.render import Renderer
from kube2haproxy.resources import Kind, key_of
from kube2haproxy.settings import RenderSettings, TranslateSettings
from kube2haproxy.store import Store
from kube2haproxy.translate import TranslateCache, Translation, translate, vip_cidr_networks
from kube2haproxy.translate import addresses as vips
from testkit.builders import endpoint_slice, service
from tests.pipeline import run

V4 = ipaddress.ip_network("10.200.0.0/16")
V6 = ipaddress.ip_network("fd00:200::/64")
POOL = {"vip_mode": "pool", "vip_cidr": "10.200.0.0/16,fd00:200::/64"}
VIP = "kube2haproxy.io/vip"


def claim(i: int, *, requested: tuple[str, ...] = ()) -> vips.AddressClaim:
    """Service number i, created i seconds after the first."""
    return vips.AddressClaim(
        "ns", f"svc-{i}", f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z", requested
    )


def bound(translation: Translation, name: str, namespace: str = "default") -> set[str]:
    return {
        b.ip
        for f in translation.model.frontends
        if (f.namespace, f.service) == (namespace, name)
        for b in f.binds
    }


# The addresses themselves.


@pytest.mark.parametrize(
    ("network", "first", "count"),
    [
        ("10.0.0.0/24", 1, 254),  # neither the network's own address nor its broadcast
        ("10.0.0.0/30", 1, 2),
        ("10.0.0.0/31", 0, 2),  # point-to-point: both usable (RFC 3021)
        ("10.0.0.7/32", 0, 1),
        ("fd00::/64", 1, 2**64 - 1),  # no broadcast; the Subnet-Router anycast is left out
        ("fd00::/127", 0, 2),
    ],
)
def test_usable_addresses(network, first, count):
    assert vips.usable(ipaddress.ip_network(network)) == (first, count)


def test_an_ipv4_pool_never_hands_out_its_network_or_broadcast_address():
    network = ipaddress.ip_network("192.0.2.0/30")
    got = {vips.preferred("ns", f"svc-{i}", network) for i in range(200)}
    assert got == {ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")}


@pytest.mark.parametrize(
    ("network", "address", "holds"),
    [
        ("10.0.0.0/24", "10.0.0.1", True),
        ("10.0.0.0/24", "10.0.0.0", False),
        ("10.0.0.0/24", "10.0.0.255", False),
        ("10.0.0.0/24", "10.0.1.1", False),
        ("fd00::/64", "fd00::", False),  # Subnet-Router anycast
        ("fd00::/64", "fd00::1", True),
        ("fd00::/64", "10.0.0.1", False),
    ],
)
def test_which_addresses_a_service_may_hold(network, address, holds):
    net, ip = ipaddress.ip_network(network), ipaddress.ip_address(address)
    assert vips.holds(net, ip) is holds


def test_the_address_is_a_function_of_the_name_only():
    a = vips.preferred("shop", "api", V4)
    assert a == vips.preferred("shop", "api", V4)
    assert a in V4
    # Namespace and name are not interchangeable: "a/bc" and "ab/c" are different services.
    assert vips.preferred("a", "bc", V4) != vips.preferred("ab", "c", V4)
    spread = {vips.preferred("ns", f"svc-{i}", V6) for i in range(1000)}
    assert len(spread) == 1000


# Allocation among services.


def test_every_replica_allocates_the_same_whatever_order_it_sees_services_in():
    claims = [claim(i) for i in range(300)]
    network = ipaddress.ip_network("10.9.0.0/22")  # small enough for collisions
    expected = vips.allocate(claims, [network])
    assert expected[1], "this pool is meant to be crowded enough for collisions"
    for seed in range(5):
        shuffled = claims[:]
        random.Random(seed).shuffle(shuffled)
        assert vips.allocate(shuffled, [network]) == expected


def test_a_collision_is_refused_and_names_the_older_holder():
    network = ipaddress.ip_network("10.9.0.0/30")  # two usable addresses
    claims = [claim(i) for i in range(3)]
    allocated, refused = vips.allocate(claims, [network])
    holders = [k for k, a in allocated.items() if a]
    assert len(holders) <= 2
    assert refused, "three services cannot all fit in two addresses"
    addresses = [a for k, a in allocated.items() if a]
    assert len({a for (a,) in addresses}) == len(addresses), "no address is shared"
    for refusal in refused:
        assert allocated[(refusal.namespace, refusal.name)] == ()
        holder_ns, holder_name = refusal.holder.split("/")
        assert allocated[(holder_ns, holder_name)] == (refusal.address,)
        # The holder is the older one.
        assert int(holder_name.split("-")[1]) < int(refusal.name.split("-")[1])


def test_a_requested_address_is_used_and_beats_a_younger_hash():
    older_hash = str(vips.preferred("ns", "svc-5", V4))
    allocated, refused = vips.allocate([claim(1, requested=(older_hash,)), claim(5)], [V4])
    assert allocated[("ns", "svc-1")] == (older_hash,)
    assert allocated[("ns", "svc-5")] == ()
    assert [(r.name, r.holder) for r in refused] == [("svc-5", "ns/svc-1")]


def test_a_request_for_a_taken_address_is_refused_when_younger():
    taken = str(vips.preferred("ns", "svc-1", V4))
    allocated, refused = vips.allocate([claim(1), claim(2, requested=(taken,))], [V4])
    assert allocated[("ns", "svc-1")] == (taken,)
    assert allocated[("ns", "svc-2")] == ()
    assert [(r.name, r.address) for r in refused] == [("svc-2", taken)]


def test_a_request_applies_to_its_family_only():
    allocated, _ = vips.allocate([claim(1, requested=("10.200.7.7",))], [V4, V6])
    assert allocated[("ns", "svc-1")] == ("10.200.7.7", str(vips.preferred("ns", "svc-1", V6)))


def test_an_unknown_creation_time_counts_as_newest():
    network = ipaddress.ip_network("10.9.0.0/32")  # one address: everyone collides
    unknown = vips.AddressClaim("aaa", "first-by-name", "")
    allocated, _ = vips.allocate([unknown, claim(59)], [network])
    assert allocated[("ns", "svc-59")] == ("10.9.0.0",)
    assert allocated[("aaa", "first-by-name")] == ()


# The promise: an address never moves while its service exists.

CROWDED = ipaddress.ip_network("10.9.0.0/26")  # 62 addresses: collisions are common


@given(
    existing=st.sets(st.integers(0, 199), min_size=1, max_size=60),
    added=st.sets(st.integers(200, 400), max_size=40),
    removed=st.sets(st.integers(0, 199), max_size=30),
)
def test_no_address_moves_when_other_services_come_and_go(existing, added, removed):
    before, _ = vips.allocate([claim(i) for i in existing], [CROWDED])
    survivors = (existing - removed) | added  # services added later are younger
    after, refused = vips.allocate([claim(i) for i in survivors], [CROWDED])
    for i in existing - removed:
        key = ("ns", f"svc-{i}")
        if before[key]:
            assert after[key] == before[key], f"svc-{i} moved"
    # And the pool is never shared silently: every service without an address was told why.
    held = [a for a in after.values() if a]
    assert len({a for (a,) in held}) == len(held)
    refused_names = {r.name for r in refused}
    assert {k[1] for k, a in after.items() if not a} == refused_names


# Through translate and render: the pool mode as a user runs it.


def test_pool_mode_binds_the_pool_address_instead_of_the_cluster_ip():
    translation = run(
        service("api", "shop", cluster_ips=["10.96.0.5", "fd00:96::5"]),
        endpoint_slice("api", "shop", endpoints=["10.1.0.1"]),
        **POOL,
    )
    expected = {str(vips.preferred("shop", "api", V4)), str(vips.preferred("shop", "api", V6))}
    assert bound(translation, "api", "shop") == expected
    (entry,) = translation.model.services
    assert set(entry.primary) == expected
    assert not translation.warnings


def test_pool_mode_keeps_external_and_load_balancer_ips():
    translation = run(
        service(
            "api",
            externalIPs=["192.0.2.10"],
            status={"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}},
        ),
        **POOL,
    )
    addresses = bound(translation, "api")
    assert {"192.0.2.10", "198.51.100.7"} <= addresses
    assert "10.96.0.10" not in addresses


def test_the_annotation_picks_the_address():
    translation = run(service("api", annotations={VIP: "10.200.1.1, fd00:200::1"}), **POOL)
    assert bound(translation, "api") == {"10.200.1.1", "fd00:200::1"}
    assert not translation.warnings


@pytest.mark.parametrize(
    "value",
    [
        "10.201.0.1",  # outside the pool
        "10.200.0.0",  # the pool's network address
        "10.200.255.255",  # its broadcast address
    ],
)
def test_a_request_outside_the_usable_pool_is_reported_and_the_hash_used(value):
    translation = run(service("api", annotations={VIP: value}), **POOL)
    assert str(vips.preferred("default", "api", V4)) in bound(translation, "api")
    (finding,) = translation.warnings
    assert finding.subject == "Service default/api"
    assert finding.field == f"metadata.annotations[{VIP}]"
    assert "outside --vip-cidr" in finding.message


@pytest.mark.parametrize("value", ["10.200.1.1\nfrontend evil", "10.200.1.1 10.200.1.2", "x"])
def test_a_malformed_request_is_reported_by_the_annotation_grammar(value):
    translation = run(service("api", annotations={VIP: value}), **POOL)
    assert any(f.field == f"metadata.annotations[{VIP}]" for f in translation.warnings)
    assert str(vips.preferred("default", "api", V4)) in bound(translation, "api")


def test_the_annotation_is_reported_as_useless_outside_pool_mode():
    translation = run(service("api", annotations={VIP: "10.200.1.1"}))
    assert bound(translation, "api") == {"10.96.0.10"}
    (finding,) = translation.warnings
    assert "--vip-mode is pool" in finding.message


def test_a_collision_through_translate_names_both_services_and_skips_the_newer():
    old = service("old", "a", created="2025-01-01T00:00:00Z", cluster_ips=["10.96.0.1"])
    address = str(vips.preferred("a", "old", V4))
    new = service(
        "new",
        "b",
        created="2026-01-01T00:00:00Z",
        cluster_ips=["10.96.0.2"],
        annotations={VIP: address},
    )
    translation = run(new, old, vip_mode="pool", vip_cidr="10.200.0.0/16")
    assert bound(translation, "old", "a") == {address}
    assert bound(translation, "new", "b") == set()
    (finding,) = translation.warnings
    assert finding.subject == "Service b/new"
    assert address in finding.message and "a/old" in finding.message
    assert [e.name for e in translation.model.services] == ["old"]


def test_every_replica_renders_the_same_config_from_the_same_cluster():
    """A replica that lived through the cluster's history (services created and deleted in some
    order, translated incrementally with its cache) and one started afterwards from a list in
    another order render the same bytes: a crowded pool (14 addresses, 40 services) makes the
    collisions, and the deletions hand addresses to the services that waited for them."""
    objects = [
        service(f"svc-{i}", f"ns-{i % 7}", created=f"2026-01-01T00:00:{i:02d}Z") for i in range(40)
    ]
    settings = TranslateSettings(vip_mode="pool", vip_cidr="10.9.0.0/28")
    renderer = Renderer(RenderSettings())
    gone = set(random.Random(7).sample(range(40), 12))

    store, cache = Store(), TranslateCache()
    for i in random.Random(1).sample(range(40), 40):
        store.put(Kind.SERVICE, key_of(objects[i]), objects[i])
        translate(store.snapshot(), settings, cache=cache)
    for i in sorted(gone):
        store.delete(Kind.SERVICE, key_of(objects[i]))
        translate(store.snapshot(), settings, cache=cache)
    lived = translate(store.snapshot(), settings, cache=cache)

    kept = [objects[i] for i in range(40) if i not in gone]
    random.Random(2).shuffle(kept)
    started_later = run(*kept, **dataclasses.asdict(settings))
    assert renderer.render(lived.model) == renderer.render(started_later.model)
    assert lived.findings == started_later.findings
    assert any("belongs to the older Service" in f.message for f in lived.findings)


@pytest.mark.parametrize(
    "cidr",
    [
        "10.0.0.0/8,10.1.0.0/16",
        "fd00::/64,fd01::/64",
        "10.0.0.0/33",
        "10.0.0.0/8,",
        "x",
        # No service can listen there, or keepalived advertises there.
        "0.0.0.0/0",
        "0.0.0.0/24",
        "169.254.0.0/16",
        "224.0.0.0/24",
        "255.255.255.255/32",
        "::/0",
        "fe80::/64",
        "ff02::/16",
    ],
)
def test_invalid_pool_networks_are_refused(cidr):
    settings = TranslateSettings(vip_mode="pool", vip_cidr=cidr)
    with pytest.raises(GrammarError):
        vip_cidr_networks(settings)


def test_pool_networks_are_canonical_and_only_used_in_pool_mode():
    settings = TranslateSettings(vip_mode="pool", vip_cidr=" 10.200.0.1/16 , fd00:200::/64")
    assert vip_cidr_networks(settings) == (V4, V6)  # host bits dropped: the same network
    assert vip_cidr_networks(TranslateSettings(vip_cidr="10.200.0.0/16")) == ()
    loopback = TranslateSettings(vip_mode="pool", vip_cidr="127.0.0.0/8,::1/128")
    assert [str(n) for n in vip_cidr_networks(loopback)] == ["127.0.0.0/8", "::1/128"]
