"""`kube2haproxy doctor`: each check against a fake /proc tree (a tmp dir passed as the proc
root: sysctls, CapEff, a controller's cmdline), real sockets (test binds, netlink routes, an
address in use), the real haproxy (-vv, a supervised master and its runtime socket) and the
fake API server (GET /version and SelfSubjectAccessReviews); then the command itself, run as a
process, in text and JSON."""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from kube2haproxy import doctor
from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.capabilities import Version, capabilities
from kube2haproxy.doctor import files, haproxy, limits, network
from kube2haproxy.doctor.check import Check, Status
from kube2haproxy.doctor.host import CAP_NET_ADMIN, CAP_NET_BIND_SERVICE, CAP_SYS_RESOURCE, Host
from kube2haproxy.doctor.kube import kube_checks
from kube2haproxy.settings import (
    KubeSettings,
    Paths,
    PathSettings,
    PublishSettings,
    RenderSettings,
    Settings,
    resolve_paths,
)
from testkit.backends import fleet, free_port, loopback_ip
from testkit.builders import service, write_manifests
from testkit.fakeapi import FakeKubeAPI
from tests.live import capabilities_of, haproxy_config

# --- a fake /proc ---------------------------------------------------------------------------


_trees = itertools.count()


def proc_tree(root: Path, *, caps: int = 0, **sysctls: str | int) -> Path:
    """A new /proc tree under root: `net__core__somaxconn=4096` is
    /proc/sys/net/core/somaxconn; /proc/self/status carries CapEff `caps`."""
    proc = root / f"proc{next(_trees)}"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "status").write_text(
        f"Name:\tkube2haproxy\nCapInh:\t0000000000000000\nCapEff:\t{caps:016x}\n"
    )
    for name, value in sysctls.items():
        path = proc / "sys" / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return proc


def host(
    tmp_path: Path,
    *,
    nofile: tuple[int, int] = (1024, 1024),
    cpus: int = 2,
    caps: int = 0,
    **sysctls: str | int,
) -> Host:
    return Host(proc=proc_tree(tmp_path, caps=caps, **sysctls), nofile=nofile, cpus=cpus, euid=0)


def bit(capability: int) -> int:
    return 1 << capability


def test_host_reads_sysctls_and_capabilities_under_its_proc_root(tmp_path):
    h = host(
        tmp_path,
        caps=bit(CAP_NET_ADMIN),
        net__core__somaxconn=4096,
        net__ipv4__ip_local_port_range="32768\t60999",
    )
    assert h.sysctl_int("net.core.somaxconn") == 4096
    assert h.sysctl_ints("net.ipv4.ip_local_port_range") == (32768, 60999)
    assert h.sysctl_int("net.ipv4.ip_local_port_range") is None  # two values, not one
    assert h.sysctl("net.netfilter.nf_conntrack_max") is None
    assert h.capable(CAP_NET_ADMIN) and not h.capable(CAP_NET_BIND_SERVICE)
    (h.proc / "self" / "status").unlink()
    assert h.capabilities() is None and not h.capable(CAP_NET_ADMIN)


def test_host_local_is_this_process():
    here = Host.local()
    assert here.euid == os.geteuid()
    assert here.cpus == len(os.sched_getaffinity(0))
    assert here.sysctl_int("net.core.somaxconn") == int(
        Path("/proc/sys/net/core/somaxconn").read_text()
    )


# --- limits ---------------------------------------------------------------------------------


def test_descriptors_count_listeners_two_per_connection_and_haproxys_own(tmp_path):
    demand = limits.Demand(listeners=40, maxconn=10_000, threads=2)
    need = 40 + 2 * 10_000 + demand.overhead
    assert demand.overhead == limits.FD_RESERVED + 2 * limits.FD_PER_THREAD + limits.FD_SOCKETS
    enough = host(tmp_path, nofile=(need, need), fs__nr_open=1_048_576)
    check = limits.file_descriptors(enough, demand, whose="ours:")
    assert check.status is Status.OK, check
    assert f"needs {need:,} descriptors (40 listeners" in check.detail

    short = replace(enough, nofile=(need - 1, need - 1))
    check = limits.file_descriptors(short, demand, whose="ours:")
    assert check.status is Status.FAIL
    assert "Cannot raise FD limit" in check.detail
    most = (need - 1 - 40 - demand.overhead) // 2
    assert check.fix == f"{limits.NOFILE_FIX.format(n=need)}; or --maxconn {most}"


def test_descriptors_beyond_the_hard_limit_up_to_nr_open_with_cap_sys_resource(tmp_path):
    demand = limits.Demand(listeners=1, maxconn=100_000, threads=1)
    capable = host(tmp_path, nofile=(1024, 4096), caps=bit(CAP_SYS_RESOURCE), fs__nr_open=300_000)
    assert limits.file_descriptors(capable, demand, whose="").status is Status.OK
    # fs.nr_open is the ceiling even then; the fix raises it first.
    low = host(tmp_path, nofile=(1024, 4096), caps=bit(CAP_SYS_RESOURCE), fs__nr_open=150_000)
    check = limits.file_descriptors(low, demand, whose="")
    assert check.status is Status.FAIL
    assert check.fix is not None
    assert check.fix.startswith(f"sysctl -w fs.nr_open={demand.fds(100_000)}; ulimit -n ")


def test_descriptors_without_maxconn_warn_below_what_kube_proxy_provisions_for(tmp_path):
    demand = limits.Demand(listeners=None, maxconn=0, threads=2)
    small = host(tmp_path, nofile=(20_000, 20_000), cpus=2, fs__nr_open=1_048_576)
    check = limits.file_descriptors(small, demand, whose="")
    derived = (20_000 - demand.overhead) // 2
    assert check.status is Status.WARN
    assert f"HAProxy will set maxconn {derived:,}" in check.detail
    assert "listeners not counted: give -f" in check.detail
    assert check.fix == limits.NOFILE_FIX.format(n=demand.fds(131_072))
    # 8 CPUs: kube-proxy's 32768 per core.
    big = replace(small, nofile=(1_048_576, 1_048_576), cpus=8)
    check = limits.file_descriptors(big, demand, whose="")
    assert check.status is Status.OK, check
    tiny = replace(small, nofile=(128, 128))
    assert limits.file_descriptors(tiny, demand, whose="").status is Status.FAIL


def test_somaxconn_against_the_backlog(tmp_path):
    demand = limits.Demand(listeners=3, maxconn=10_000, threads=1)
    check = limits.listen_backlog(host(tmp_path, net__core__somaxconn=4096), demand)
    assert check.status is Status.WARN
    assert check.fix == "sysctl -w net.core.somaxconn=10000"
    assert (
        limits.listen_backlog(host(tmp_path, net__core__somaxconn=10_000), demand).status
        is Status.OK
    )


def test_somaxconn_without_maxconn_offers_to_bound_it(tmp_path):
    h = host(tmp_path, nofile=(65_536, 65_536), net__core__somaxconn=4096)
    demand = limits.Demand(listeners=None, maxconn=0, threads=1)
    check = limits.listen_backlog(h, demand)
    backlog = limits.maxconn_in_effect(h, demand)
    assert backlog == (65_536 - demand.overhead) // 2
    assert (
        check.fix == f"sysctl -w net.core.somaxconn={backlog}; or bound HAProxy with --maxconn 4096"
    )
    (h.proc / "sys" / "net" / "core" / "somaxconn").unlink()
    check = limits.listen_backlog(h, demand)
    assert (check.status, check.detail) == (
        Status.OK,
        "net.core.somaxconn not readable here: not checked",
    )


def test_local_ports_against_connections_to_one_endpoint(tmp_path):
    demand = limits.Demand(listeners=1, maxconn=30_000, threads=1)
    narrow = host(tmp_path, net__ipv4__ip_local_port_range="32768 60999")
    check = limits.local_ports(narrow, demand)
    assert check.status is Status.WARN
    assert "28,232 source ports per endpoint (32768-60999)" in check.detail
    assert check.fix == 'sysctl -w net.ipv4.ip_local_port_range="1024 65535"'
    wide = host(tmp_path, net__ipv4__ip_local_port_range="1024 65535")
    assert limits.local_ports(wide, demand).status is Status.OK
    # Reserved ports are not handed out.
    reserved = host(
        tmp_path,
        net__ipv4__ip_local_port_range="1024 65535",
        net__ipv4__ip_local_reserved_ports="2000-37999,50000",
    )
    check = limits.local_ports(reserved, demand)
    assert check.status is Status.WARN
    assert f"{64_512 - 36_000 - 1:,} source ports per endpoint" in check.detail
    assert check.fix == f"--maxconn {64_512 - 36_000 - 1}"  # the range is as wide as it gets
    # Already as wide as it gets: only a smaller maxconn helps.
    many = limits.Demand(listeners=1, maxconn=100_000, threads=1)
    assert limits.local_ports(wide, many).fix == "--maxconn 64512"


def test_conntrack_only_when_loaded(tmp_path):
    demand = limits.Demand(listeners=1, maxconn=100_000, threads=1)
    check = limits.conntrack(host(tmp_path), demand)
    assert (check.status, check.detail) == (
        Status.OK,
        "nf_conntrack is not loaded: connections are not tracked",
    )
    small = host(
        tmp_path,
        net__netfilter__nf_conntrack_max=131_072,
        net__netfilter__nf_conntrack_count=10,
    )
    check = limits.conntrack(small, demand)
    assert check.status is Status.WARN
    assert check.fix == "sysctl -w net.netfilter.nf_conntrack_max=200000"
    full = host(
        tmp_path,
        net__netfilter__nf_conntrack_max=1_000_000,
        net__netfilter__nf_conntrack_count=950_000,
    )
    check = limits.conntrack(full, demand)
    assert (check.status, check.fix) == (
        Status.WARN,
        "sysctl -w net.netfilter.nf_conntrack_max=2000000",
    )
    roomy = host(
        tmp_path,
        net__netfilter__nf_conntrack_max=1_000_000,
        net__netfilter__nf_conntrack_count=1000,
    )
    assert limits.conntrack(roomy, demand).status is Status.OK


# --- network: real sockets and the kernel's routes -----------------------------------------


def test_privileged_ports_from_the_sysctl_and_the_capability(tmp_path):
    no_caps = host(tmp_path, net__ipv4__ip_unprivileged_port_start=1024)
    check = network.privileged_ports(no_caps, ports=[80, 8080, 443])
    assert check.status is Status.FAIL
    assert "listeners on ports 80, 443 fail" in check.detail
    assert check.fix is not None and check.fix.endswith("ip_unprivileged_port_start=80")
    assert network.privileged_ports(no_caps, ports=[8080]).status is Status.OK
    assert network.privileged_ports(no_caps, ports=None).status is Status.WARN
    opened = host(tmp_path, net__ipv4__ip_unprivileged_port_start=0)
    assert network.privileged_ports(opened, ports=[80]).status is Status.OK
    capable = host(tmp_path, caps=bit(CAP_NET_BIND_SERVICE))
    assert network.privileged_ports(capable, ports=[80]).status is Status.OK


def test_vip_bind_binds_real_sockets(tmp_path):
    ip = loopback_ip()
    free = free_port(ip)
    h = host(tmp_path, caps=bit(CAP_NET_ADMIN), net__ipv4__ip_nonlocal_bind=0)
    check = network.vip_bind(h, wanted=[(ip, free)], sampled=False, transparent=True)
    assert check.status is Status.OK, check
    assert "1 listener bound with transparent binds (IP_TRANSPARENT" in check.detail
    # Something else listens there (without SO_REUSEPORT: not an HAProxy of ours).
    with socket.socket() as taken:
        taken.bind((ip, free))
        taken.listen()
        check = network.vip_bind(h, wanted=[(ip, free)], sampled=False, transparent=False)
    assert check.status is Status.FAIL
    assert f"{ip}:{free} ({os.strerror(98)})" in check.detail
    assert check.fix == f"stop what listens there: ss -ltnp 'sport = :{free}'"


def test_vip_bind_of_an_address_this_host_does_not_hold(tmp_path):
    h = host(tmp_path, net__ipv4__ip_nonlocal_bind=0)
    wanted = [(network.SAMPLE_V4, 0)]
    # transparent: IP_FREEBIND, which needs no capability.
    check = network.vip_bind(h, wanted=wanted, sampled=True, transparent=True)
    assert check.status is Status.OK, check
    assert "IP_FREEBIND: no CAP_NET_ADMIN" in check.detail
    assert "give -f to test every listener" in check.detail
    if Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() != "0":
        pytest.skip("this host sets net.ipv4.ip_nonlocal_bind: every address binds")
    check = network.vip_bind(h, wanted=wanted, sampled=True, transparent=False)
    assert check.status is Status.FAIL
    assert os.strerror(99) in check.detail  # EADDRNOTAVAIL
    assert check.fix is not None and "net.ipv4.ip_nonlocal_bind=1" in check.fix


def test_route_type_asks_the_kernel():
    assert network.route_type("127.0.0.1") == "local"
    assert network.route_type(loopback_ip()) == "local"  # all of 127/8: an AnyIP route
    try:
        kind = network.route_type(network.SAMPLE_V4)
    except OSError:
        kind = "no route"
    assert kind != "local"


def test_vip_routes(tmp_path):
    vip = loopback_ip()
    check = network.vip_routes(
        addresses=[vip], source="the VIPs of the -f manifests", keepalived=False, networks=[]
    )
    assert (check.status, check.detail) == (
        Status.OK,
        "1 of 1 VIPs (the VIPs of the -f manifests) local here (held, or an AnyIP route)",
    )
    check = network.vip_routes(
        addresses=[vip, network.SAMPLE_V4],
        source="samples of --vip-cidr",
        keepalived=False,
        networks=["203.0.113.0/24"],
    )
    assert check.status is Status.WARN
    assert "1 of 2 VIPs" in check.detail and network.SAMPLE_V4 in check.detail
    assert check.fix is not None
    assert check.fix.startswith("ip route add local 203.0.113.0/24 dev lo (AnyIP")
    kept = network.vip_routes(
        addresses=[network.SAMPLE_V4], source="x", keepalived=True, networks=[]
    )
    assert kept.status is Status.OK and "keepalived holds them" in kept.detail
    unknown = network.vip_routes(addresses=[], source="no -f", keepalived=False, networks=[])
    assert unknown.status is Status.OK and unknown.detail.startswith("not checked: no -f")


def test_samples_stand_for_each_network():
    """The first and last address the pool gives out (translate.addresses.usable): IPv6 has no
    broadcast address, so its last is a service's too."""
    networks = ["10.0.0.0/24", "2001:db8::/127", "192.0.2.7/32", "2001:db8:1::/120"]
    assert network.samples(networks) == [
        "10.0.0.1",
        "10.0.0.254",
        "2001:db8::",
        "2001:db8::1",
        "192.0.2.7",
        "2001:db8:1::1",
        "2001:db8:1::ff",
    ]


# --- files ----------------------------------------------------------------------------------


def test_written_files_need_a_directory_a_file_can_be_created_in(tmp_path):
    zone = tmp_path / "dns" / "cluster.zone"
    settings = PublishSettings(dns_zone_file=str(zone), dns_hosts_file=str(tmp_path / "hosts"))
    check = files.dns_files(settings)
    assert check.status is Status.FAIL
    assert check.detail == f"--dns-zone-file {zone.parent}: no such directory"
    zone.parent.mkdir()
    check = files.dns_files(settings)
    assert check.status is Status.OK, check
    assert list(zone.parent.iterdir()) == []  # the test file is gone
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    check = files.dns_files(PublishSettings(dns_hosts_file=str(blocker / "hosts")))
    assert check.detail == f"--dns-hosts-file {blocker}: not a directory"
    zone.mkdir()
    check = files.dns_files(settings)
    assert check.detail == f"--dns-zone-file {zone}: not a regular file"
    assert files.dns_files(PublishSettings()).status is Status.OK


def test_a_run_directory_others_may_write_to_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    paths = doctor_paths(Settings(paths=PathSettings(run_dir=str(run_dir))))
    assert files.haproxy_files(paths, uid=os.geteuid()).status is Status.OK
    run_dir.chmod(0o777)
    check = files.haproxy_files(paths, uid=os.geteuid())
    assert check.status is Status.FAIL
    assert (
        check.fix == f"chown {os.geteuid()} {run_dir} && chmod 700 {run_dir}; or another --run-dir"
    )
    # Not there yet: the controller creates it (and maps/ in it).
    fresh = doctor_paths(Settings(paths=PathSettings(run_dir=str(tmp_path / "a" / "b"))))
    assert files.haproxy_files(fresh, uid=os.geteuid()).status is Status.OK
    assert not (tmp_path / "a").exists()


def test_keepalived_files(tmp_path):
    conf = tmp_path / "keepalived.conf"
    pidfile = tmp_path / "keepalived.pid"
    settings = PublishSettings(
        keepalived_config=str(conf), keepalived_interface="lo", keepalived_pidfile=str(pidfile)
    )
    pidfile.write_text(f"{os.getpid()}\n")
    check = files.keepalived_files(settings)
    assert check.status is Status.OK, check
    assert check.detail.endswith(f"keepalived pid {os.getpid()}")
    # A proc tree where that pid does not run.
    check = files.keepalived_files(settings, proc=proc_tree(tmp_path))
    assert check.status is Status.WARN
    assert "names no running keepalived" in check.detail
    assert (
        files.keepalived_files(
            replace(settings, keepalived_pidfile="none"), proc=proc_tree(tmp_path)
        ).status
        is Status.OK
    )
    check = files.keepalived_files(replace(settings, keepalived_interface="nosuch0"))
    assert (check.status, check.detail) == (
        Status.FAIL,
        "--keepalived-interface nosuch0: no such interface here",
    )
    check = files.keepalived_files(
        replace(settings, keepalived_password_file=str(tmp_path / "missing"))
    )
    assert check.status is Status.FAIL and "missing" in check.detail


# --- HAProxy --------------------------------------------------------------------------------


def fake_haproxy(tmp_path: Path, output: str) -> str:
    """An executable that answers -vv with `output` (a build we do not have)."""
    path = tmp_path / "haproxy"
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\n")
    path.chmod(0o755)
    return str(path)


def binary(path: str | None, **kwargs: object) -> tuple[Check, object]:
    options: dict[str, object] = {
        "transparent": True,
        "supervised": True,
        "root": True,
        "worker_uid": None,
    }
    options.update(kwargs)
    return haproxy.haproxy_binary("haproxy", resolved=path, **options)  # type: ignore[arg-type]


def test_the_haproxy_binary(haproxy_bin):
    check, found = binary(haproxy_bin)
    version = capabilities_of(haproxy_bin).version
    assert found == capabilities_of(haproxy_bin)
    assert check.detail.startswith(f"HAProxy {version} at {haproxy_bin}; capabilities: ")
    assert "transparent binds: IP_TRANSPARENT" in check.detail
    # 3.3 and later warn about root workers.
    expected = Status.WARN if version >= Version(3, 3) else Status.OK
    assert check.status is expected
    assert binary(haproxy_bin, worker_uid=99)[0].status is Status.OK


def test_a_missing_old_or_foreign_haproxy_fails(tmp_path):
    check, found = binary(None)
    assert (check.status, found, check.fix) == (Status.FAIL, None, haproxy.INSTALL)
    old = fake_haproxy(tmp_path, "HAProxy version 2.4.22-0ubuntu0.22.04.3 2023/12/04\n")
    check, _ = binary(old)
    assert check.status is Status.FAIL and "2.4.22" in check.detail
    other = fake_haproxy(tmp_path, "nginx version: nginx/1.22.1\n")
    assert "does not say an HAProxy version" in binary(other)[0].detail


def test_transparent_binds_need_a_build_with_them(tmp_path):
    plain = fake_haproxy(tmp_path, "HAProxy version 3.0.11 2025/06/01\nBuilt with OpenSSL.\n")
    check, _ = binary(plain, worker_uid=99)
    assert check.status is Status.FAIL
    assert "transparent binds: not built in" in check.detail
    assert binary(plain, transparent=False)[0].status is Status.OK


@pytest.fixture
def running(tmp_path, haproxy_bin):
    """A supervised HAProxy (master socket and admin.sock in tmp_path) serving one backend."""
    vip = loopback_ip()
    with fleet("a") as backends:
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(tmp_path, vip, free_port(vip), backends))
        supervisor = Supervisor(
            binary=haproxy_bin, config=str(config), master_socket=str(tmp_path / "master.sock")
        )
        supervisor.start(ready_timeout_s=20)
        try:
            yield supervisor
        finally:
            supervisor.stop(grace_s=2)


def test_the_master_and_runtime_sockets_of_a_running_haproxy(running, haproxy_bin, tmp_path):
    own = capabilities_of(haproxy_bin)
    check, answered = haproxy.master(
        str(tmp_path / "master.sock"), supervised=True, controller=None, binary=own
    )
    assert answered and check.status is Status.OK, check
    assert f"master pid {running.pid}, 1 worker(s), " in check.detail
    assert "; worker " in check.detail and "maxconn " in check.detail
    runtime = haproxy.runtime(str(tmp_path / "admin.sock"), master_answered=True)
    assert runtime.status is Status.OK and "answers (worker pid " in runtime.detail
    # Configs checked by another version than the one running them.
    other = capabilities(Version(3, 4, 0) if own.version < Version(3, 4) else Version(2, 6, 12))
    check, _ = haproxy.master(
        str(tmp_path / "master.sock"), supervised=True, controller=None, binary=other
    )
    assert check.status is Status.WARN and f"--haproxy-bin is {other.version}" in check.detail
    missing = haproxy.runtime(str(tmp_path / "nothing.sock"), master_answered=True)
    assert missing.status is Status.FAIL
    assert missing.fix is not None and "stats socket" in missing.fix


def test_a_silent_master_is_expected_only_when_run_starts_haproxy(tmp_path):
    path = str(tmp_path / "master.sock")
    check, answered = haproxy.master(path, supervised=True, controller=None, binary=None)
    assert (check.status, answered) == (Status.OK, False)
    check, _ = haproxy.master(path, supervised=True, controller=4242, binary=None)
    assert check.status is Status.FAIL
    assert check.detail.startswith("the controller (pid 4242) runs, but ")
    check, _ = haproxy.master(path, supervised=False, controller=None, binary=None)
    assert check.status is Status.FAIL and check.fix is not None and f"-S {path}" in check.fix
    assert haproxy.runtime(path, master_answered=False).status is Status.OK


def test_the_controller_is_found_by_its_lock_and_cmdline(tmp_path):
    proc = proc_tree(tmp_path)
    lock = tmp_path / "lock"
    assert haproxy.controller_pid(lock, proc) is None
    lock.write_text("4242\n")
    assert haproxy.controller_pid(lock, proc) is None
    (proc / "4242").mkdir()
    (proc / "4242" / "cmdline").write_bytes(b"/usr/bin/python3\0/usr/bin/kube2haproxy\0run\0")
    assert haproxy.controller_pid(lock, proc) == 4242
    (proc / "4242" / "cmdline").write_bytes(b"/usr/bin/sleep\0100\0")  # the pid was reused
    assert haproxy.controller_pid(lock, proc) is None


# --- the Kubernetes API ---------------------------------------------------------------------


@pytest.fixture
def api():
    with FakeKubeAPI() as server:
        yield server


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_the_api_answers_and_we_may_list_and_watch(api, tmp_path):
    settings = KubeSettings(kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"))
    api.set_version("v1.29.3")
    found = by_name(kube_checks(settings, environ={}))
    assert found["kube-api"].status is Status.OK
    assert found["kube-api"].detail.endswith("Kubernetes v1.29.3")
    assert found["kube-access"] == Check(
        "kube-access",
        Status.OK,
        "may list and watch services, endpointslices.discovery.k8s.io in all namespaces",
    )
    assert api.access_reviews == [
        {"namespace": "", "verb": verb, "group": group, "resource": resource}
        for group, resource in (("", "services"), ("discovery.k8s.io", "endpointslices"))
        for verb in ("list", "watch")
    ]


def test_access_denied_names_what_and_grants_it(api, tmp_path):
    settings = KubeSettings(
        kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
        namespace="web",
        watch_endpoints=True,
    )
    api.deny("watch", "endpointslices")
    api.deny("list", "endpoints")
    check = by_name(kube_checks(settings, environ={}))["kube-access"]
    assert check.status is Status.FAIL
    assert check.detail.startswith(
        "denied in namespace web: watch endpointslices.discovery.k8s.io (no rule"
    )
    assert "list endpoints (" in check.detail
    assert check.fix is not None
    assert "--resource=services,endpointslices.discovery.k8s.io,endpoints " in check.fix
    assert {r["namespace"] for r in api.access_reviews} == {"web"}


def test_an_api_that_refuses_or_fails(api, tmp_path):
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    settings = KubeSettings(kubeconfig=kubeconfig)
    api.fail_next("version", 401)
    found = by_name(kube_checks(settings, environ={}))
    assert found["kube-api"].status is Status.FAIL
    assert "GET /version: HTTP 401" in found["kube-api"].detail
    assert found["kube-api"].fix == (
        f"credentials the API server accepts ({kubeconfig}: its token or certificate)"
    )
    assert found["kube-access"].status is Status.WARN
    assert api.access_reviews == []
    api.fail_next("selfsubjectaccessreviews", 500, times=4)
    check = by_name(kube_checks(settings, environ={}))["kube-access"]
    assert check.status is Status.WARN
    assert check.detail.count("HTTP 500") == 4
    api.stop()
    check = by_name(kube_checks(settings, environ={}, timeout_s=2))["kube-api"]
    assert check.status is Status.FAIL and "must be reachable from here" in str(check.fix)


def test_no_kubeconfig_at_all(tmp_path):
    settings = KubeSettings(kubeconfig=str(tmp_path / "missing"))
    found = by_name(kube_checks(settings, environ={}))
    assert found["kube-api"].status is Status.FAIL
    assert found["kube-api"].fix is not None and "--kubeconfig" in found["kube-api"].fix


# --- all of them, and the command ------------------------------------------------------------


def doctor_paths(settings: Settings) -> Paths:
    return resolve_paths(settings, uid=os.geteuid(), environ={}, tmp="/tmp")


def manifests(tmp_path: Path, vip: str, *ports: int) -> Path:
    path = tmp_path / "cluster.yaml"
    write_manifests(path, service(cluster_ips=[vip], ports=[("", p) for p in ports]))
    return path


def test_examine_with_manifests_counts_their_listeners(tmp_path, haproxy_bin):
    vip = loopback_ip()
    ports = (free_port(vip), free_port(vip))
    run_dir = tmp_path / "run"
    settings = Settings(
        paths=PathSettings(run_dir=str(run_dir)),
        render=RenderSettings(maxconn=1000, nbthread=1),
        haproxy=replace(Settings().haproxy, binary=haproxy_bin),
    )
    here = Host.local()
    checks = doctor.examine(
        settings,
        manifests=(str(manifests(tmp_path, vip, *ports)),),
        host=here,
        environ={},
        tmp=str(tmp_path),
    )
    found = by_name(checks)
    assert [c.name for c in checks] == list(doctor.CHECKS)
    assert found["vip-bind"].detail.startswith("2 listeners bound with transparent binds")
    assert found["vip-routes"].status is Status.OK
    demand = limits.Demand(listeners=2, maxconn=1000, threads=1)
    assert (
        f"needs {demand.fds(1000):,} descriptors (2 listeners" in found["file-descriptors"].detail
    )
    assert found["kube-api"].detail.startswith("not used: -f follows manifest files")
    skipped = doctor.examine(
        settings,
        manifests=(str(manifests(tmp_path, vip, *ports)),),
        host=here,
        environ={},
        tmp=str(tmp_path),
        skip=frozenset({"haproxy-master", "conntrack"}),
    )
    names = [c.name for c in skipped]
    assert "haproxy-master" not in names and "conntrack" not in names
    assert "haproxy-runtime" in names


def run_doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kube2haproxy.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_prints_one_line_per_check_and_exits_1_on_a_failure(api, tmp_path, haproxy_bin):
    run_dir = tmp_path / "run"
    common = [
        "--kubeconfig",
        api.kubeconfig(tmp_path / "kubeconfig"),
        "--run-dir",
        str(run_dir),
        "--haproxy-bin",
        haproxy_bin,
        "--haproxy-uid",
        "99",
        "--maxconn",
        "100",
    ]
    result = run_doctor(*common)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == list(doctor.CHECKS)
    assert all(line.split()[0] in {"ok", "warn"} for line in lines), result.stdout

    api.deny("list", "services")
    result = run_doctor(*common, "-o", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "fail"
    access = next(c for c in report["checks"] if c["name"] == "kube-access")
    assert access["status"] == "fail" and access["detail"].startswith("denied in all namespaces")
    assert access["fix"].startswith("kubectl create clusterrole kube2haproxy ")
    assert set(report["checks"][0]) == {"name", "status", "detail", "fix"}

    result = run_doctor(*common, "--skip", "kube-access", "--skip", "kube-api")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kube-" not in result.stdout
    result = run_doctor("--skip", "nonsense")
    assert result.returncode == 2
    assert "nonsense: no such check (one of haproxy, haproxy-master," in result.stderr


def test_a_check_that_fails_in_the_command_says_how_to_fix_it(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    vip = loopback_ip()
    result = run_doctor(
        "-f",
        str(manifests(tmp_path, vip, free_port(vip))),
        "--run-dir",
        str(tmp_path / "run"),
        "--dns-zone-file",
        str(blocker / "cluster.zone"),
        "--skip",
        "haproxy",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("fail"))
    assert line.split()[1] == "dns-files"
    assert line.endswith(
        "-- fix: make the directory exist and writable by this user "
        "(a container: a writable volume mounted there)"
    )
    assert stat.S_ISREG(blocker.stat().st_mode)


def test_every_check_is_documented():
    page = (Path(__file__).resolve().parents[1] / "docs" / "troubleshooting-doctor.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \|", page, re.M)
    assert rows == list(doctor.CHECKS)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "(docs/troubleshooting-doctor.md)" in readme


@pytest.mark.parametrize(("layout", "listeners"), [("per-service", 3), ("per-port", 2)])
def test_the_listeners_counted_are_the_layouts(tmp_path, layout, listeners):
    """Two services on one port: their own sockets per service, one shared per port."""
    a, b = loopback_ip(), loopback_ip()
    ports = (free_port(a), free_port(a))
    path = tmp_path / "cluster.yaml"
    write_manifests(
        path,
        service("a", cluster_ips=[a], ports=[("", ports[0]), ("x", ports[1])]),
        service("b", cluster_ips=[b], ports=[("", ports[0])]),
    )
    settings = Settings(
        paths=PathSettings(run_dir=str(tmp_path / "run")),
        render=RenderSettings(maxconn=1000, nbthread=1, frontend_layout=layout),
    )
    found = by_name(
        doctor.examine(
            settings,
            manifests=(str(path),),
            host=Host.local(),
            environ={},
            tmp=str(tmp_path),
            skip=frozenset({"haproxy", "haproxy-master", "haproxy-runtime"}),
        )
    )
    assert found["vip-bind"].detail.startswith(f"{listeners} listeners bound")
    assert f"({listeners} listeners, 2 per connection" in found["file-descriptors"].detail
    assert found["vip-routes"].detail.startswith("2 of 2 VIPs")
