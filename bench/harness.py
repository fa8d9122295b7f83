"""Shared parts of the serve benchmarks: a local Kubernetes API (testkit/fakeapi/) filled with a
synthetic cluster, and `kube2haproxy run` as a real subprocess against it, supervising HAProxy."""

from __future__ import annotations

import errno
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cluster import cluster

from kube2haproxy.appliers.master import MasterCLI
from testkit.backends import free_port, probe
from testkit.fakeapi import FakeKubeAPI

ROOT = Path(__file__).resolve().parents[1]


def raise_fd_limit(wanted: int = 262_144) -> None:
    """10,000 listening sockets need more than the usual 1,024 or 20,000 descriptors."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def require_unlistened(ip: str, port: int) -> None:
    """Exit when something on this machine already listens where the bench's clients connect
    (that address, or every address, on `port`): HAProxy binds with SO_REUSEPORT, so a second
    HAProxy there (another bench's per-port frontend) would take a share of the connections and
    close the ones it has no route for, as failed requests of this bench."""
    with socket.socket() as sock:
        # Connections of an earlier run waiting out TIME_WAIT are no listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            sys.exit(f"{ip}:{port} is already listened on (ss -ltnp sport = :{port}): stop that")


def run_command(
    workdir: Path, listen: int, *source: str, haproxy_bin: str = "haproxy"
) -> list[str]:
    """`kube2haproxy run` as the benches start it: its run directory in `workdir`, probes on
    127.0.0.1:`listen`, a JSON log; `source` says what it follows (--kubeconfig or -f)."""
    return [
        sys.executable,
        "-m",
        "kube2haproxy.cli",
        "run",
        *source,
        "--haproxy-bin",
        haproxy_bin,
        "--run-dir",
        str(workdir / "run"),
        "--listen",
        f"127.0.0.1:{listen}",
        "--log-format",
        "json",
        # bench/README.md's figures are for two threads; HAProxy's default is one per CPU.
        "--nbthread",
        "2",
    ]


def spawn(command: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """A process of the checkout's code, its output to `log`, allowed many descriptors."""
    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=raise_fd_limit,  # noqa: PLW1509 - runs in the child, before its threads
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@contextmanager
def controller(
    api: FakeKubeAPI, workdir: Path, listen: int, *extra: str, haproxy_bin: str = "haproxy"
) -> Iterator[subprocess.Popen[bytes]]:
    kubeconfig = api.kubeconfig(workdir / "kubeconfig")
    log = open(workdir / "controller.log", "wb")  # noqa: SIM115
    command = run_command(workdir, listen, "--kubeconfig", kubeconfig, haproxy_bin=haproxy_bin)
    process = spawn([*command, *extra], log)
    try:
        yield process
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ask a controller to stop (it stops the HAProxy it runs); kill it after a minute."""
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_ready(process: subprocess.Popen[bytes], listen: int, timeout: float) -> float:
    started = time.monotonic()
    while probe(listen, "/readyz")[0] != 200:
        if process.poll() is not None:
            sys.exit(f"the controller exited with {process.returncode}")
        if time.monotonic() - started > timeout:
            sys.exit("the controller did not become ready")
        time.sleep(0.1)
    return time.monotonic() - started


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def worker_rss_mb(workdir: Path) -> float:
    """Resident memory of the current HAProxy worker of a controller's run directory, MB."""
    worker = MasterCLI(str(workdir / "run" / "master.sock")).processes().current_worker
    return rss_mb(worker)[0] if worker else 0.0


def check_config(binary: str, path: Path, repeat: int = 1) -> tuple[float, float]:
    """`haproxy -c` of a config file: the median seconds over `repeat` runs and the peak
    resident memory of the check (MB, from the kernel's accounting of the child). Exits with
    HAProxy's output when the config fails."""
    times, peak_kb = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        child = subprocess.Popen(
            [binary, "-c", "-f", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert child.stdout is not None
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        times.append(time.perf_counter() - started)
        peak_kb = max(peak_kb, usage.ru_maxrss)
        if child.returncode != 0:
            sys.exit(f"haproxy -c failed:\n{output.decode(errors='replace')[-4000:]}")
    return statistics.median(times), peak_kb / 1024


@contextmanager
def serving_cluster(
    services: int, endpoints: int, *extra: str, haproxy_bin: str, timeout: float
) -> Iterator[tuple[FakeKubeAPI, Path, subprocess.Popen[bytes], int, float]]:
    """A local API holding the synthetic cluster and a ready controller watching it:
    (api, workdir, controller process, probe port, seconds until ready)."""
    with tempfile.TemporaryDirectory(prefix="k2h-bench-") as tmp, FakeKubeAPI() as api:
        workdir = Path(tmp)
        for obj in cluster(services, endpoints):
            api.put(obj)
        listen = free_port("127.0.0.1")
        with controller(api, workdir, listen, *extra, haproxy_bin=haproxy_bin) as process:
            ready = wait_ready(process, listen, timeout=timeout)
            yield api, workdir, process, listen, ready
