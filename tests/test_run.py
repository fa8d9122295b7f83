"""`kube2haproxy run` end to end, as a user starts it: a real process, real HAProxy, real HTTP.

Supervised: the controller runs HAProxy, follows manifest files, serves its probes, and stops
HAProxy on SIGTERM. Attached: HAProxy belongs to someone else; the controller leaves its file
alone until synced and leaves HAProxy serving when it exits."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from kube2haproxy.appliers.master import MasterCLI
from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.errors import HAProxyUnavailable
from testkit.backends import (
    Backend,
    fleet,
    free_port,
    get,
    loopback_ip,
    probe,
    responders,
    routes,
    serves,
)
from testkit.builders import JSON, service, slice_of, write_manifests
from tests.live import STARTUP_S, haproxy_config, wait_for

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def controller(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kube2haproxy.cli", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield process
    except BaseException:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(ValueError, subprocess.TimeoutExpired):  # output read already
            print(process.communicate(timeout=10)[0])  # pytest shows it with the failure
        raise
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        # A killed controller leaves its supervised HAProxy running (by design: the next one
        # adopts it); a test must not leave it behind.
        if "--run-dir" in args:
            master = MasterCLI(args[args.index("--run-dir") + 1] + "/master.sock")
            with contextlib.suppress(HAProxyUnavailable, ProcessLookupError):
                os.kill(master.processes().master_pid, signal.SIGKILL)


def supervised_args(
    cluster: Path, run_dir: Path, listen: int, haproxy_bin: str, *extra: str
) -> list[str]:
    """A supervised controller following `cluster`, its probes on 127.0.0.1:`listen`."""
    return [
        "-f",
        str(cluster),
        "--haproxy-bin",
        haproxy_bin,
        "--run-dir",
        str(run_dir),
        "--listen",
        f"127.0.0.1:{listen}",
        "--allow-loopback-endpoints",
        "--debounce",
        "20ms",
        *extra,
    ]


def write_cluster(path: Path, services: list[tuple[str, str, int]], *backends: Backend) -> None:
    """A manifest of Services in namespace demo, (name, VIP, port), served by the backends."""
    objects: list[JSON] = []
    for name, vip, port in services:
        objects += [
            service(name, "demo", cluster_ips=[vip], ports=[("http", port)]),
            slice_of(name, *backends, namespace="demo"),
        ]
    write_manifests(path, *objects)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    with fleet("abc") as made:
        yield made


def test_supervised_with_manifests(tmp_path, haproxy_bin, backends):
    a, b, c = backends
    vip, listen = loopback_ip(), free_port("127.0.0.1")
    port = free_port(vip)
    cluster = tmp_path / "cluster" / "web.yaml"
    cluster.parent.mkdir()
    write_cluster(cluster, [("web", vip, port)], a, b)
    run_dir = tmp_path / "run"
    args = supervised_args(cluster.parent, run_dir, listen, haproxy_bin, "--log-format", "json")
    with controller(*args) as process:
        wait_for(
            lambda: probe(listen, "/readyz") == (200, "ok\n"), timeout=STARTUP_S, what="readiness"
        )
        assert probe(listen, "/healthz") == (200, "ok\n")
        assert serves(vip, port, {"a", "b"}) == {"a", "b"}
        assert oct((run_dir / "master.sock").stat().st_mode & 0o777) == "0o600"
        assert f"stats socket {run_dir}/admin.sock" in (run_dir / "haproxy.cfg").read_text()

        write_cluster(cluster, [("web", vip, port)], c)
        wait_for(lambda: responders(vip, port, requests=10) == {"c"}, what="the edit")
        wait_for(
            lambda: 'runtime_updates_total{result="success"} 1.0' in probe(listen, "/metrics")[1],
            what="the runtime update counted",
        )  # counted right after HAProxy confirmed it
        status, metrics = probe(listen, "/metrics")
        assert status == 200
        assert 'kube2haproxy_reloads_total{result="success"} 1.0' in metrics  # the start only
        assert "kube2haproxy_services 1.0" in metrics
        assert 'kube2haproxy_source_synced{source="manifests"} 1.0' in metrics

        master = Supervisor(
            binary=haproxy_bin, config="", master_socket=str(run_dir / "master.sock")
        )
        haproxy_pid = master.master.processes().master_pid
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    with pytest.raises(ProcessLookupError):
        os.kill(haproxy_pid, 0)
    records = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    messages = [r["message"] for r in records]
    assert any(m.startswith("started haproxy: initial config") for m in messages)
    assert any(
        m.startswith("updated haproxy without a reload: endpoints changed: 1") for m in messages
    )
    assert {"time", "level", "logger", "message"} <= set(records[0])


def attached(tmp: Path, cfg: Path, haproxy_bin: str, listen: int) -> list[str]:
    """The controller's arguments beside the sidecar's HAProxy (master socket in tmp)."""
    return [
        "--master-socket",
        str(tmp / "master.sock"),
        "--haproxy-config",
        str(cfg),
        "--haproxy-bin",
        haproxy_bin,
        "--listen",
        f"127.0.0.1:{listen}",
        "--allow-loopback-endpoints",
        "--debounce",
        "20ms",
    ]


@pytest.fixture
def sidecar(tmp_path: Path, haproxy_bin: str) -> Iterator[Supervisor]:
    """An HAProxy started by someone else, as the sidecar container does."""
    sup = Supervisor(
        binary=haproxy_bin,
        config=str(tmp_path / "haproxy.cfg"),
        master_socket=str(tmp_path / "master.sock"),
    )
    yield sup
    sup.stop(grace_s=2)


def test_attached_leaves_the_file_until_synced_and_haproxy_running_on_exit(
    tmp_path, haproxy_bin, backends, sidecar
):
    a, b, _ = backends
    vip, listen = loopback_ip(), free_port("127.0.0.1")
    port = free_port(vip)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(tmp_path, vip, port, [a]))
    sidecar.start(ready_timeout_s=10)
    assert get(vip, port) == "a"

    # An API server that never answers: nothing is synced, so nothing may be written.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dead",
                "clusters": [{"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    common = attached(tmp_path, cfg, haproxy_bin, listen)
    with controller("--kubeconfig", str(kubeconfig), *common) as process:
        wait_for(lambda: probe(listen, "/healthz")[0] == 200, timeout=STARTUP_S, what="liveness")
        assert probe(listen, "/readyz") == (503, "waiting for the initial sync\n")
        assert cfg.read_text() == haproxy_config(tmp_path, vip, port, [a])
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output

    cluster = tmp_path / "cluster.yaml"
    write_cluster(cluster, [("web", vip, port)], b)
    with controller("--manifests", str(cluster), *common) as process:
        wait_for(lambda: probe(listen, "/readyz")[0] == 200, timeout=STARTUP_S, what="readiness")
        assert responders(vip, port) == {"b"}
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert sidecar.running
    assert responders(vip, port) == {"b"}  # HAProxy keeps serving the last config
    assert "frontend fe_demo_web_http" in cfg.read_text()


def test_liveness_fails_when_the_attached_haproxy_is_gone(tmp_path, haproxy_bin):
    listen = free_port("127.0.0.1")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("")
    with controller(
        "--manifests",
        str(cluster),
        "--master-socket",
        str(tmp_path / "none.sock"),
        "--config",
        str(tmp_path / "haproxy.cfg"),
        "--haproxy-bin",
        haproxy_bin,
        "--listen",
        f"127.0.0.1:{listen}",
    ) as process:
        wait_for(lambda: probe(listen, "/healthz")[0] == 503, what="a failing liveness")
        assert "does not answer" in probe(listen, "/healthz")[1]
        wait_for(
            lambda: 'result="unavailable"} 1.0' in probe(listen, "/metrics")[1],
            what="the failed apply",
        )
        assert probe(listen, "/readyz") == (503, "no config applied yet\n")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # Said as it is: nothing was ever applied, so no "last good config" serves.
    said = "apply failed (unavailable); nothing has been applied yet (HAProxy serves what it"
    assert said in output
    assert "keeps serving" not in output


def test_readiness_follows_the_attached_haproxy(tmp_path, haproxy_bin, backends, sidecar):
    a, _, _ = backends
    vip, listen = loopback_ip(), free_port("127.0.0.1")
    port = free_port(vip)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(tmp_path, vip, port, [a]))
    sidecar.start(ready_timeout_s=10)
    cluster = tmp_path / "cluster.yaml"
    write_cluster(cluster, [("web", vip, port)], a)
    with controller(
        "--manifests", str(cluster), *attached(tmp_path, cfg, haproxy_bin, listen)
    ) as process:
        wait_for(lambda: probe(listen, "/readyz")[0] == 200, timeout=STARTUP_S, what="readiness")
        sidecar.stop(grace_s=2)
        wait_for(lambda: probe(listen, "/readyz")[0] == 503, timeout=45, what="unready")
        assert "does not answer" in probe(listen, "/readyz")[1]
        assert "does not answer" in probe(listen, "/healthz")[1]
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_a_run_dir_others_can_write_is_refused(tmp_path, haproxy_bin):
    """It holds the config HAProxy loads and the sockets a controller adopts."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kube2haproxy.cli",
            "run",
            "--manifests",
            str(cluster),
            "--haproxy-bin",
            haproxy_bin,
            "--run-dir",
            str(shared),
            "--listen",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 7, result.stderr
    assert "writable by it alone" in result.stderr
    assert list(shared.iterdir()) == []


def test_run_keeps_the_dns_files_up_to_date(tmp_path, haproxy_bin, backends):
    import dns.zone

    a, _, _ = backends
    pool = "127.78.0.0/24"
    port = free_port("127.0.0.1")
    cluster = tmp_path / "cluster" / "web.yaml"
    cluster.parent.mkdir()
    write_cluster(cluster, [("web", loopback_ip(), port)], a)
    zone_file, hosts_file = tmp_path / "dns" / "cluster.local.zone", tmp_path / "dns" / "hosts"
    zone_file.parent.mkdir()
    with controller(
        "--manifests",
        str(cluster.parent),
        "--haproxy-bin",
        haproxy_bin,
        "--run-dir",
        str(tmp_path / "run"),
        "--listen",
        "",
        "--allow-loopback-endpoints",
        "--debounce",
        "20ms",
        "--vip-mode",
        "pool",
        "--vip-cidr",
        pool,
        "--dns-zone-file",
        str(zone_file),
        "--dns-hosts-file",
        str(hosts_file),
    ) as process:
        wait_for(hosts_file.exists, timeout=20, what="the hosts file")
        (line,) = hosts_file.read_text().splitlines()[1:]
        address, name = line.split()
        assert name == "web.demo.svc.cluster.local"
        assert ipaddress.ip_address(address) in ipaddress.ip_network(pool)
        assert responders(address, port, requests=5) == {"a"}  # DNS names what is served
        zone = dns.zone.from_text(zone_file.read_text(), origin="cluster.local")
        first = zone.find_rdataset("@", "SOA")[0].serial

        # A second service: both files follow, and the serial goes up.
        more = yaml.safe_dump(service("api", "demo", cluster_ips=[loopback_ip()]))
        (cluster.parent / "api.yaml").write_text(more)
        wait_for(lambda: "api.demo.svc" in hosts_file.read_text(), timeout=20, what="api")
        wait_for(lambda: "api.demo.svc" in zone_file.read_text(), timeout=5, what="zone")
        zone = dns.zone.from_text(zone_file.read_text(), origin="cluster.local")
        assert zone.find_rdataset("@", "SOA")[0].serial > first
        assert zone.find_rdataset("web.demo.svc", "A")[0].to_text() == address  # never moves
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "published 2 DNS records" in output


def test_the_readme_demo_serves_and_follows_an_edit(tmp_path, haproxy_bin):
    """README.md's first serve commands, as a newcomer runs them: two HTTP servers, `run -f
    demo/`, a request to the service, `status` and `explain`, then an edit of
    demo/cluster.yaml. The demo's fixed addresses are swapped for fresh ones (other tests run
    beside this one); that the README and the manifest agree on them is checked first."""
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in readme.split("```sh\n")[1:] if "run -f demo/" in b).split("```")[0]
    servers = re.findall(r"http\.server --bind ([\d.]+) (\d+)", block)
    command = re.search(r"^kube2haproxy run (.*)$", block, re.M)
    url = re.search(r"curl http://([\d.]+):(\d+)/", block)
    assert servers and command and url, block
    manifest = (ROOT / "demo" / "cluster.yaml").read_text()
    service, endpoints = yaml.safe_load_all(manifest)
    assert [url[1], int(url[2])] == [
        service["spec"]["clusterIP"],
        service["spec"]["ports"][0]["port"],
    ]
    assert [ip for ip, _ in servers] == [e["addresses"][0] for e in endpoints["endpoints"]]
    assert {int(port) for _, port in servers} == {p["port"] for p in endpoints["ports"]}
    args = command[1].split()
    assert args[:2] == ["-f", "demo/"], args

    with fleet("ab") as (a, b):
        vip = loopback_ip()
        port = free_port(vip)
        ours = {url[1]: vip, servers[0][0]: a.ip, servers[1][0]: b.ip}
        ours |= {url[2]: str(port), servers[0][1]: str(a.port)}
        demo = tmp_path / "demo"
        demo.mkdir()
        cluster = demo / "cluster.yaml"
        cluster.write_text(re.sub("|".join(map(re.escape, ours)), lambda m: ours[m[0]], manifest))
        listen = free_port("127.0.0.1")
        args = [str(demo), *args[2:], "--run-dir", str(tmp_path / "run")]
        args += ["--listen", f"127.0.0.1:{listen}"]
        args[args.index("--haproxy-bin") + 1] = haproxy_bin
        with controller("-f", *args) as process:
            wait_for(lambda: routes(vip, port) != set(), timeout=20, what="the demo served")
            assert serves(vip, port, {"a", "b"}) == {"a", "b"}
            # "When something is wrong": status and explain, as the README gives them, ask it.
            asks = re.findall(r"^kube2haproxy ((?:status|explain)\b.*?)\s*(?:#|$)", readme, re.M)
            assert [ask.split()[0] for ask in asks] == ["status", "explain"], asks
            for asked in asks:
                cli = [sys.executable, "-m", "kube2haproxy.cli", *asked.split()]
                answer = subprocess.run(
                    [*cli, "--listen", f"127.0.0.1:{listen}"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert answer.returncode == 0, answer.stderr
                assert "demo/hello" in answer.stdout, answer.stdout
                if asked.startswith("status"):
                    assert "served" in answer.stdout, answer.stdout
                else:
                    assert a.ip in answer.stdout and b.ip in answer.stdout, answer.stdout
            # "edit demo/cluster.yaml: HAProxy follows": one endpoint fewer
            gone = f"- addresses: [{b.ip}]\n  conditions: {{ready: true}}\n"
            assert gone in cluster.read_text()
            cluster.write_text(cluster.read_text().replace(gone, ""))
            wait_for(lambda: responders(vip, port, requests=10) == {"a"}, what="the edit")
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
