"""DNS records of the served services: what `kube2haproxy dns` prints and the files `run` keeps.
Zone files are read back with dnspython, a real DNS implementation, not with our own parser."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import dns.rdatatype
import dns.zone
import pytest
import yaml

from kube2haproxy import cli
from kube2haproxy import dns as records_mod
from kube2haproxy.errors import ZoneError
from kube2haproxy.model import Model
from kube2haproxy.publish import Publisher, next_serial
from kube2haproxy.settings import PublishSettings
from kube2haproxy.translate import addresses as vips
from testkit.builders import endpoint_slice, service
from tests.pipeline import run

ROOT = Path(__file__).resolve().parents[1]


def cluster(**settings: Any) -> Model:
    return run(
        service(
            "api",
            "shop",
            cluster_ips=["10.96.0.5", "fd00:96::5"],
            ports=[("http", 80), ("grpc", 9090), ("", 8443)],
        ),
        endpoint_slice("api", "shop", endpoints=["10.1.0.1"]),
        service("db", "data", cluster_ips=["10.96.0.6"], ports=[("", 5432)]),
        service("dns", "kube-system", cluster_ips=["10.96.0.10"], ports=[("dns", 53, "UDP")]),
        service("headless", "shop", cluster_ips=["None"]),
        **settings,
    ).model


def parse_zone(text: str, origin: str = "cluster.local") -> dns.zone.Zone:
    return dns.zone.from_text(text, origin=origin, relativize=False, check_origin=True)


def rrset(zone: dns.zone.Zone, name: str, rdtype: str) -> set[str]:
    found = zone.get_rdataset(dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
    return {r.to_text() for r in found} if found is not None else set()


def test_records_of_served_services():
    found = records_mod.records(cluster(), zone="cluster.local")
    assert {(r.name, r.type, r.value) for r in found} == {
        ("api.shop.svc.cluster.local", "A", "10.96.0.5"),
        ("api.shop.svc.cluster.local", "AAAA", "fd00:96::5"),
        ("_http._tcp.api.shop.svc.cluster.local", "SRV", "0 100 80 api.shop.svc.cluster.local."),
        (
            "_grpc._tcp.api.shop.svc.cluster.local",
            "SRV",
            "0 100 9090 api.shop.svc.cluster.local.",
        ),
        ("db.data.svc.cluster.local", "A", "10.96.0.6"),
    }
    # Not served, not published: a headless service, a UDP-only one, an unnamed port's SRV.


def test_the_zone_file_is_valid_rfc_1035():
    found = records_mod.records(cluster(), zone="cluster.local")
    text = records_mod.zone_file(found, zone="cluster.local", serial=42, ttl_s=30)
    zone = parse_zone(text)
    soa = zone.get_rdataset("cluster.local.", "SOA")
    assert soa is not None and soa[0].serial == 42 and soa.ttl == 30
    assert rrset(zone, "api.shop.svc.cluster.local.", "A") == {"10.96.0.5"}
    assert rrset(zone, "api.shop.svc.cluster.local.", "AAAA") == {"fd00:96::5"}
    assert rrset(zone, "_grpc._tcp.api.shop.svc.cluster.local.", "SRV") == {
        "0 100 9090 api.shop.svc.cluster.local."
    }
    names = {n.to_text() for n in zone.nodes}
    assert "db.data.svc.cluster.local." in names
    assert not any("headless" in n or "kube-system" in n for n in names)
    assert records_mod.serial_of(text) == 42


def test_the_hosts_file_has_one_address_and_name_per_line():
    found = records_mod.records(cluster(), zone="example.org")
    lines = records_mod.hosts_file(found).splitlines()
    assert lines[0].startswith("#")
    assert sorted(lines[1:]) == [
        "10.96.0.5 api.shop.svc.example.org",
        "10.96.0.6 db.data.svc.example.org",
        "fd00:96::5 api.shop.svc.example.org",
    ]


def test_pool_mode_publishes_the_pool_addresses():
    model = cluster(vip_mode="pool", vip_cidr="10.200.0.0/16")
    found = records_mod.records(model, zone="cluster.local")
    api = {r.value for r in found if r.name == "api.shop.svc.cluster.local"}
    assert api == {str(vips.preferred("shop", "api", ipaddress.ip_network("10.200.0.0/16")))}


def test_an_address_not_bound_is_not_published():
    """The loser of an address conflict does not listen there: DNS must not send clients to
    the winner under the loser's name."""
    model = run(
        service("first", created="2025-01-01T00:00:00Z", cluster_ips=["10.96.0.1"]),
        service(
            "squatter",
            created="2026-01-01T00:00:00Z",
            cluster_ips=["10.96.0.2"],
            externalIPs=["10.96.0.1"],
        ),
    ).model
    found = records_mod.records(model, zone="cluster.local")
    assert {(r.name, r.value) for r in found if r.type == "A"} == {
        ("first.default.svc.cluster.local", "10.96.0.1"),
        ("squatter.default.svc.cluster.local", "10.96.0.2"),
    }


@pytest.mark.parametrize(
    ("zone", "ok"),
    [
        ("cluster.local", True),
        ("cluster.local.", True),
        ("svc.example.org", True),
        ("a" * 63 + ".org", True),
        ("a" * 64 + ".org", False),
        ("Cluster.local", False),
        ("cluster..local", False),
        ("-bad.local", False),
        ("cluster.local\n@ IN NS evil.", False),
        ("cluster local", False),
        ("", False),
    ],
)
def test_the_zone_name_grammar(zone, ok):
    if ok:
        assert records_mod.check_zone(zone) == zone.rstrip(".")
    else:
        with pytest.raises(ZoneError):
            records_mod.check_zone(zone)


def test_the_longest_names_fit_in_the_longest_zone():
    zone = ".".join(["a" * 49, "b" * 49])  # 99 characters: the most check_zone takes
    assert records_mod.check_zone(zone) == zone
    with pytest.raises(ZoneError, match="at most 99"):
        records_mod.check_zone("c" + zone)
    name, namespace = "s" * 63, "n" * 63
    model = run(service(name, namespace, cluster_ips=["10.96.0.5"], ports=[("p" * 15, 80)])).model
    found = records_mod.records(model, zone=zone)
    assert max(len(r.name) for r in found) == 253
    # dnspython refuses a name over 255 octets in wire form: all of them load.
    parsed = parse_zone(records_mod.zone_file(found, zone=zone, serial=1, ttl_s=30), zone)
    assert rrset(parsed, f"_{'p' * 15}._tcp.{name}.{namespace}.svc.{zone}.", "SRV")


def test_the_zone_names_its_name_server():
    found = records_mod.records(cluster(), zone="cluster.local")
    # By default out of the zone (no address record needed for integrity checks).
    zone = parse_zone(records_mod.zone_file(found, zone="cluster.local", serial=1, ttl_s=30))
    assert rrset(zone, "cluster.local.", "NS") == {"localhost."}
    assert zone.find_rdataset("cluster.local.", "SOA")[0].mname.to_text() == "localhost."
    text = records_mod.zone_file(
        found, zone="cluster.local", serial=1, ttl_s=30, nameserver="ns1.example.org"
    )
    assert rrset(parse_zone(text), "cluster.local.", "NS") == {"ns1.example.org."}
    for bad in ("ns1 example.org", "ns1.example.org.\n@ IN NS evil.", "NS1.example.org", ""):
        with pytest.raises(ZoneError):
            records_mod.check_nameserver(bad)


def test_serials_always_increase():
    assert next_serial(0, 1_800_000_000.5) == 1_800_000_000
    assert next_serial(1_800_000_000, 1_800_000_000) == 1_800_000_001  # two changes in a second
    assert next_serial(1_900_000_000, 1_800_000_000) == 1_900_000_001  # the clock went back


# The dry run.


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KUBE2HAPROXY_"):
            monkeypatch.delenv(name)


def test_dns_command_prints_a_zone(capsys):
    code = cli.main(["dns", "-f", str(ROOT / "examples"), "--serial", "7", "--dns-ttl", "1m"])
    out, err = capsys.readouterr()
    assert code == 0
    zone = parse_zone(out)
    assert zone.find_rdataset("cluster.local.", "SOA")[0].serial == 7
    assert rrset(zone, "api.shop.svc.cluster.local.", "A") == {"10.96.12.41"}
    assert zone.find_rdataset("api.shop.svc.cluster.local.", "A").ttl == 60
    # The example's one warning is about a timeout annotation: nothing DNS publishes.
    assert err == ""


def test_dns_command_prints_only_what_concerns_the_records(capsys, tmp_path):
    long_port = "p" * 63  # a DNS label, but `_<port>` is one character too long for one
    objects = [
        service(
            "a" * 63,
            "n" * 63,
            cluster_ips=["10.96.0.5"],
            ports=[(long_port, 80), ("web", 81)],
            annotations={"kube2haproxy.io/timeout-server": "soon"},
        ),
        service("lost", "shop", cluster_ips=["bogus"]),
        endpoint_slice("lost", "shop", endpoints=["127.0.0.1"]),
    ]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    assert cli.main(["dns", "-f", str(path), "--serial", "1"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "warning: Service shop/lost: spec.clusterIPs[0]: 'bogus': expected an IPv4 or IPv6 "
        "address; address ignored",
        "warning: Service shop/lost: spec.clusterIPs: no usable VIP; service skipped",
        f"warning: Service {'n' * 63}/{'a' * 63}: port {long_port}: no SRV record: "
        f"_{long_port}._tcp.{'a' * 63}.{'n' * 63}.svc.cluster.local is longer than DNS allows "
        "(63 characters a label, 253 a name)",
    ]
    zone = parse_zone(out)
    fqdn = f"{'a' * 63}.{'n' * 63}.svc.cluster.local."
    assert rrset(zone, fqdn, "A") == {"10.96.0.5"}
    assert rrset(zone, f"_web._tcp.{fqdn}", "SRV") == {f"0 100 81 {fqdn}"}


def test_dns_command_prints_a_hosts_file_in_pool_mode(capsys):
    code = cli.main(
        [
            "dns",
            "-f",
            str(ROOT / "examples"),
            "--format",
            "hosts",
            "--vip-mode",
            "pool",
            "--vip-cidr",
            "10.200.0.0/16",
            "--dns-zone",
            "svc.example.org",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    expected = vips.preferred("shop", "api", ipaddress.ip_network("10.200.0.0/16"))
    assert f"{expected} api.shop.svc.svc.example.org" in out.splitlines()
    assert "10.96.12.41" not in out


@pytest.mark.parametrize("option", ["--dns-zone", "--dns-nameserver"])
def test_dns_command_refuses_a_bad_name(capsys, option):
    code = cli.main(["dns", "-f", str(ROOT / "examples"), option, "evil\nzone"])
    _, err = capsys.readouterr()
    assert code == 2
    assert option in err


def test_dns_command_names_the_name_server(capsys):
    args = ["dns", "-f", str(ROOT / "examples"), "--dns-nameserver", "ns1.example.org."]
    assert cli.main(args) == 0
    out, _ = capsys.readouterr()
    assert rrset(parse_zone(out), "cluster.local.", "NS") == {"ns1.example.org."}


# The files `run` keeps.


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_publisher_keeps_both_files_and_raises_the_serial_on_change(tmp_path):
    zone_path, hosts_path = tmp_path / "cluster.local.zone", tmp_path / "hosts"
    settings = PublishSettings(dns_zone_file=str(zone_path), dns_hosts_file=str(hosts_path))
    clock = Clock(1_800_000_000)
    publisher = Publisher(settings, clock=clock)
    assert publisher.enabled
    model = cluster()
    publisher.publish(model)
    first = parse_zone(zone_path.read_text())
    assert first.find_rdataset("cluster.local.", "SOA")[0].serial == 1_800_000_000
    assert "10.96.0.6 db.data.svc.cluster.local" in hosts_path.read_text().splitlines()

    before = zone_path.stat().st_mtime_ns, hosts_path.stat().st_mtime_ns
    publisher.publish(cluster())  # the same records: the files are not touched
    assert (zone_path.stat().st_mtime_ns, hosts_path.stat().st_mtime_ns) == before

    smaller = run(service("db", "data", cluster_ips=["10.96.0.6"], ports=[("", 5432)])).model
    publisher.publish(smaller)  # within the same second: the serial still increases
    second = parse_zone(zone_path.read_text())
    assert second.find_rdataset("cluster.local.", "SOA")[0].serial == 1_800_000_001
    assert "api" not in hosts_path.read_text()
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_a_restarted_publisher_continues_the_serial(tmp_path):
    zone_path = tmp_path / "zone"
    settings = PublishSettings(dns_zone_file=str(zone_path))
    Publisher(settings, clock=Clock(1_900_000_000)).publish(cluster())
    # A controller restarted with a clock behind the file's serial, the same cluster: nothing
    # to do; then a change: a serial above the file's.
    restarted = Publisher(settings, clock=Clock(1_000))
    restarted.publish(cluster())
    assert records_mod.serial_of(zone_path.read_text()) == 1_900_000_000
    restarted.publish(run(service("db", "data", cluster_ips=["10.96.0.6"])).model)
    assert records_mod.serial_of(zone_path.read_text()) == 1_900_000_001


def test_a_publishing_failure_is_logged_and_retried(tmp_path, caplog):
    blocked = tmp_path / "missing-dir" / "hosts"
    publisher = Publisher(PublishSettings(dns_hosts_file=str(blocked)))
    publisher.publish(cluster())  # never raises: serving goes on
    assert "cannot publish" in caplog.text
    blocked.parent.mkdir()
    publisher.publish(cluster())  # the same model, tried again
    assert "api.shop.svc.cluster.local" in blocked.read_text()


def test_an_invalid_zone_setting_stops_the_publisher_at_start():
    with pytest.raises(ZoneError):
        Publisher(PublishSettings(dns_zone="bad zone"))
