"""Frontend layouts compared: listening sockets and `haproxy -c` time, per-service vs per-port.

    python bench/layout.py --services 10000 50000 --repeat 3
    python bench/layout.py --services 15000 --start --fd-limit 20000

The synthetic cluster gives services a realistic mix of ports: most use one of 20 common ports
(80, 443, 8080, ...), one in twenty a port of its own among 2,000 high ones, one in five a second
port. Prints, per layout, the sockets HAProxy would listen on, the config size, the median of
translate+render and of `haproxy -c`. --start also starts HAProxy on each config with its
file-descriptor limit capped at --fd-limit (HAProxy needs one per listening socket, plus its own)
and reports whether it starts and how many listening sockets the kernel shows for it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from cluster import endpoint_slice, service
from harness import check_config

from kube2haproxy import gc_tuning
from kube2haproxy.layouts import layout as layout_of
from kube2haproxy.render import Renderer
from kube2haproxy.settings import RenderPaths, RenderSettings, TranslateSettings
from kube2haproxy.store import Store
from kube2haproxy.translate import translate
from testkit.builders import JSON, store_of

COMMON = [80, 443, 8080, 8443, 9090, 3000, 5432, 6379, 27017, 3306, 9200, 5672, 4222, 8000, 8081]
COMMON += [9000, 9100, 11211, 2181, 9092]


def ports_of(index: int) -> list[JSON]:
    first = 30_000 + (index // 20) % 2000 if index % 20 == 0 else COMMON[index % len(COMMON)]
    ports = [{"name": "main", "port": first, "protocol": "TCP", "targetPort": 8080}]
    if index % 5 == 0:
        ports.append({"name": "metrics", "port": 9102, "protocol": "TCP", "targetPort": 9102})
    return ports


def mixed_cluster(services: int, endpoints: int) -> Store:
    objects = []
    for i in range(services):
        svc = service(i)
        svc["spec"]["ports"] = ports_of(i)
        eps = endpoint_slice(i, endpoints)
        eps["ports"] = [
            {"name": p["name"], "port": p["targetPort"], "protocol": "TCP"} for p in ports_of(i)
        ]
        objects += [svc, eps]
    return store_of(objects)


def listening_sockets(pid: int) -> int:
    """Listening TCP sockets held by a process (its fds that are sockets in LISTEN state)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                count += 1
    return count


def start(binary: str, path: Path, fd_limit: int) -> str:
    """Start HAProxy (master-worker, daemon) on the config under an fd limit; report."""
    pidfile = path.with_suffix(".pid")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    result = subprocess.run(
        [binary, "-W", "-D", "-p", str(pidfile), "-f", str(path)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-2:]
        return "does not start: " + " / ".join(line[:120] for line in tail)
    master = int(pidfile.read_text().split()[0])
    try:
        # The master binds every listener, forks the worker (which inherits them) and closes
        # its own copies.
        deadline = time.monotonic() + 300
        while not (workers := Path(f"/proc/{master}/task/{master}/children").read_text().split()):
            if time.monotonic() > deadline:
                return "started, but no worker within 300 s"
            time.sleep(0.1)
        return f"starts; {listening_sockets(int(workers[0]))} listening sockets in the worker"
    finally:
        os.kill(master, signal.SIGTERM)  # a hard stop: there is nothing to finish
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and Path(f"/proc/{master}").exists():
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--haproxy-bin", default=shutil.which("haproxy") or "haproxy")
    parser.add_argument("--start", action="store_true", help="also start HAProxy on each config")
    parser.add_argument("--fd-limit", type=int, default=20_000)
    args = parser.parse_args()

    print(
        f"{'services':>8} {'layout':>11} {'sockets':>8} {'bind lines':>10} {'cfg MB':>7} "
        f"{'t+r':>7} {'haproxy -c':>10}  start",
        flush=True,
    )
    for services in args.services:
        snapshot = mixed_cluster(services, args.endpoints).snapshot()
        gc_tuning.settle()
        for layout in ("per-service", "per-port"):
            with tempfile.TemporaryDirectory() as tmp:
                maps = Path(tmp) / "maps"
                maps.mkdir()
                renderer = Renderer(
                    RenderSettings(frontend_layout=layout),
                    RenderPaths(runtime_socket=f"{tmp}/admin.sock", maps_dir=str(maps)),
                )
                render_s = []
                for _ in range(args.repeat):
                    with gc_tuning.paused():
                        t0 = time.perf_counter()
                        model = translate(snapshot, TranslateSettings()).model
                        text = renderer.render(model)
                        files = renderer.files(model)
                        render_s.append(time.perf_counter() - t0)
                for name, content in files.items():
                    (maps / name).write_text(content)
                path = Path(tmp) / "haproxy.cfg"
                path.write_text(text)
                check_s, _ = check_config(args.haproxy_bin, path, repeat=args.repeat)
                sockets = len(layout_of(layout).listeners(model))
                binds = sum(1 for line in text.splitlines() if line.lstrip().startswith("bind "))
                started = start(args.haproxy_bin, path, args.fd_limit) if args.start else ""
                print(
                    f"{services:>8} {layout:>11} {sockets:>8} {binds:>10} "
                    f"{len(text) / 1e6:>7.1f} {statistics.median(render_s):>6.2f}s "
                    f"{check_s:>9.2f}s  {started}",
                    flush=True,
                )
                del model


if __name__ == "__main__":
    main()
