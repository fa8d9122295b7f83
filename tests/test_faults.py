"""Faults a week in production finds, against the real thing: a `kube2haproxy run` process, its
real HAProxy, real sockets. A stalled HAProxy (SIGSTOP) is waited out, not taken for a refused
config, and never hangs the probes; two controllers never share one HAProxy; another process
listening beside HAProxy is reported; bad flags are usage or environment errors, not bugs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from kube2haproxy.appliers.master import MasterCLI
from testkit.backends import Backend, free_port, loopback_ip, probe, responders, routes
from tests.live import STARTUP_S, wait_for
from tests.test_run import controller, supervised_args, write_cluster


def run_once(*args: str) -> subprocess.CompletedProcess[str]:
    """`kube2haproxy run` expected to exit on its own (a refusal at start)."""
    return subprocess.run(
        [sys.executable, "-m", "kube2haproxy.cli", "run", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def backend():
    made = Backend("a")
    yield made
    made.close()


def test_a_stalled_haproxy_is_waited_out_and_the_probes_answer_meanwhile(
    tmp_path, haproxy_bin, backend
):
    """With the master stopped while a Service is added, the apply times out: that is an
    unavailable HAProxy, retried with a backoff, not a config HAProxy refused (which would
    not be sent again for two minutes). Meanwhile the probes answer at once, from what the
    controller already knows, and a probe that gives up is no error."""
    vip1, vip2, listen = loopback_ip(), loopback_ip(), free_port("127.0.0.1")
    port = free_port(vip1)
    cluster = tmp_path / "cluster.yaml"
    write_cluster(cluster, [("one", vip1, port)], backend)
    run_dir = tmp_path / "run"
    args = supervised_args(cluster, run_dir, listen, haproxy_bin, "--retry-interval", "1s")
    with controller(*args) as process:
        wait_for(lambda: probe(listen, "/readyz") == (200, "ok\n"), timeout=STARTUP_S, what="ready")
        master = MasterCLI(str(run_dir / "master.sock")).processes().master_pid
        os.kill(master, signal.SIGSTOP)
        try:
            write_cluster(cluster, [("one", vip1, port), ("two", vip2, port)], backend)
            stalled = time.monotonic()
            answers = []
            while time.monotonic() - stalled < 7:  # the first apply times out meanwhile
                answers.append(probe(listen, "/healthz", timeout=2))
                answers.append(probe(listen, "/readyz", timeout=2))
                time.sleep(0.3)
            # Within the grace a reload may take, a silent master is still alive and ready.
            assert set(answers) == {(200, "ok\n")}, answers
            metrics = probe(listen, "/metrics", timeout=2)[1]
            assert 'kube2haproxy_reloads_total{result="unavailable"}' in metrics
        finally:
            os.kill(master, signal.SIGCONT)
        wait_for(
            lambda: routes(vip2, port, requests=3) == {"a"},
            timeout=15,
            what="the new service, once HAProxy answers again",
        )
        assert responders(vip1, port, requests=3) == {"a"}
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "apply failed (unavailable)" in output
    assert "refused" not in output
    assert "Traceback" not in output and "BrokenPipe" not in output


def test_a_second_controller_on_the_same_run_dir_refuses_to_start(tmp_path, haproxy_bin, backend):
    vip, listen, other = loopback_ip(), free_port("127.0.0.1"), free_port("127.0.0.1")
    port = free_port(vip)
    cluster = tmp_path / "cluster.yaml"
    write_cluster(cluster, [("one", vip, port)], backend)
    run_dir = tmp_path / "run"
    with controller(*supervised_args(cluster, run_dir, listen, haproxy_bin)) as first:
        wait_for(lambda: probe(listen, "/readyz") == (200, "ok\n"), timeout=STARTUP_S, what="ready")
        cli = MasterCLI(str(run_dir / "master.sock"))
        before = cli.processes()

        second_cluster = tmp_path / "other.yaml"
        write_cluster(second_cluster, [("two", vip, port)], backend)
        second = run_once(*supervised_args(second_cluster, run_dir, other, haproxy_bin))
        assert second.returncode == 7, second.stderr
        lock = run_dir / "kube2haproxy.lock"
        assert second.stderr.splitlines()[-1] == (
            f"error: {lock} is locked by another kube2haproxy (pid {first.pid}): one controller "
            "per HAProxy; stop it, or give this one another --run-dir (or --haproxy-config)"
        )
        # The first one's HAProxy was not touched: same master, no reload, same config.
        after = cli.processes()
        assert (after.master_pid, after.reloads) == (before.master_pid, before.reloads)
        assert "demo_one_http" in (run_dir / "haproxy.cfg").read_text()
        assert responders(vip, port, requests=3) == {"a"}
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0
    # Released with its owner: the next controller starts.
    with controller(*supervised_args(second_cluster, run_dir, other, haproxy_bin)) as again:
        wait_for(lambda: probe(other, "/readyz") == (200, "ok\n"), timeout=STARTUP_S, what="ready")
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=30)


def test_another_listener_on_a_served_address_is_reported_once(tmp_path, haproxy_bin, backend):
    """SO_REUSEPORT lets another process of the same user listen on HAProxy's address; the
    kernel then splits new connections between them, silently."""
    vip, listen = loopback_ip(), free_port("127.0.0.1")
    port = free_port(vip)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    squatter.bind((vip, port))
    squatter.listen()
    cluster = tmp_path / "cluster.yaml"
    write_cluster(cluster, [("one", vip, port)], backend)
    args = supervised_args(
        cluster, tmp_path / "run", listen, haproxy_bin, "--drift-check-interval", "200ms"
    )
    try:
        with controller(*args) as process:
            wait_for(
                lambda: probe(listen, "/readyz") == (200, "ok\n"), timeout=STARTUP_S, what="ready"
            )
            wait_for(
                lambda: "kube2haproxy_shared_listeners 1.0" in probe(listen, "/metrics")[1],
                what="the shared listener counted",
            )
            time.sleep(1)  # several drift checks look again
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
    finally:
        squatter.close()
    warnings = [line for line in output.splitlines() if "another process listens there" in line]
    assert len(warnings) == 1, output
    assert f"{vip}:{port}: another process listens there too (pid {os.getpid()})" in warnings[0]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--listen", "127.0.0.1:99999"], 2, "'127.0.0.1:99999': expected host:port"),
        (["--listen", "nonsense"], 2, "'nonsense': expected host:port"),
        (["--listen", "::1:9333"], 2, "write an IPv6 address in brackets"),
        (["--haproxy-bin", "/nonexistent"], 7, "--haproxy-bin /nonexistent: not found"),
    ],
)
def test_bad_flags_are_one_clear_line(tmp_path, haproxy_bin, args, code, message):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("")
    base = supervised_args(cluster, tmp_path / "run", free_port("127.0.0.1"), haproxy_bin)
    result = run_once(*base, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "rror" in line]) == 1


def test_a_probe_port_in_use_is_an_environment_error(tmp_path, haproxy_bin):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = tmp_path / "cluster.yaml"
        cluster.write_text("")
        result = run_once(*supervised_args(cluster, tmp_path / "run", port, haproxy_bin))
    assert result.returncode == 7, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: --listen 127.0.0.1:{port}: cannot listen: Address already in use"
    )
    assert "Traceback" not in result.stderr
