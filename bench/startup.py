"""Cold start from manifests: `kube2haproxy run -f cluster.json` (a real process, supervising
HAProxy) from the moment it is spawned to the first request HAProxy serves, with N services x M
endpoints in the file plus one probe service served by a real backend, split into phases:

    python bench/startup.py --services 10000 --endpoints 10 --haproxy-bin /usr/sbin/haproxy
    python bench/startup.py --services 10000 --py-spy /tmp/startup.txt   # where Python spends it

Phases, from the controller's JSON log (its timestamps) and its /metrics (durations it measures):
start (interpreter, imports, settings, `haproxy -vv`) up to its first log line; setup up to the
line naming its sources; reading+parsing the manifests up to "synced"; translate, render and
`haproxy -c` (the controller's histograms; the check from its
log line on the initial config); the rest of the first apply (planning, writing the
files) up to "started haproxy (pid"; HAProxy's start up to the master's "Loading success."; and
the first request answered after that (polled every 10 ms). It also prints the CPU time (user+sys)
spent by then by the controller, by the `haproxy -vv` and `-c` it ran, and by the HAProxy it runs:
steadier than wall time on a shared machine. The services get VIPs of their own (--service-cidr)
so that another bench serving the synthetic cluster on this machine stays out of the way.
--py-spy records the controller process (pip install py-spy; a bench tool, not a dependency)
until a little past the first request (the initial-config log line) and prints the functions
holding the most samples (own and cumulative); the raw collapsed stacks stay in
the file. This only measures: the cold path's work is elsewhere.
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from cluster import cluster
from harness import run_command, spawn

from testkit.backends import Backend, answer, free_port, probe
from testkit.builders import service, slice_of

PROBE_VIP = "127.5.0.1"
MARKS: dict[str, Callable[[str], bool]] = {
    "first log line": lambda m: True,
    "sources named": lambda m: m.startswith("kube2haproxy supervised"),
    "synced": lambda m: m.startswith("source ") and " synced " in m,
    "haproxy spawned": lambda m: m.startswith("started haproxy (pid"),
    "haproxy loaded": lambda m: "Loading success." in m,
    "initial config": lambda m: m.startswith("started haproxy: initial config"),
}


def log_marks(path: Path) -> tuple[dict[str, float], float]:
    """The epoch time of the first log record matching each mark, and the seconds `haproxy -c`
    took by the line reporting the initial config."""
    seen: dict[str, float] = {}
    check = 0.0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        message = str(record.get("message", ""))
        for mark, matches in MARKS.items():
            if mark not in seen and matches(message):
                seen[mark] = datetime.fromisoformat(record["time"]).timestamp()
        found = re.search(r"initial config \(.*; check ([0-9.]+)s", message)
        if found:
            check = float(found[1])
    return seen, check


def controller_pids(pid: int, *, spied: bool) -> list[int]:
    """The controller's process: the one started, or under py-spy, py-spy's children."""
    if not spied:
        return [pid]
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user+sys) of a process and of its children it has waited for (here `haproxy
    -vv` and `haproxy -c`): steadier than wall time on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    # After the command: state is field 3, utime..cstime fields 14..17 (man 5 proc).
    utime, stime, cutime, cstime = (int(f) / tick for f in fields[11:15])
    return utime + stime, cutime + cstime


def haproxy_cpu(log: Path) -> float:
    """CPU time (user+sys) of the supervised HAProxy so far: its master (named by the log line
    that started it) and the master's live children (the worker)."""
    found = re.search(r"started haproxy \(pid (\d+)\)", log.read_text())
    if not found:
        return 0.0
    master = int(found[1])
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return sum(cpu_seconds(pid)[0] for pid in [master, *map(int, children)])
    except OSError:
        return 0.0


def metric_sums(listen: int) -> dict[str, float]:
    """The `_sum` of each of the controller's duration histograms (seconds) and, as
    `<name>_count`, how many times each was observed."""
    status, text = probe(listen, "/metrics")
    if status != 200:
        return {}
    sums = {}
    for line in text.splitlines():
        found = re.match(r"kube2haproxy_(\w+)_duration_seconds_(sum|count) (\S+)$", line)
        if found:
            key = found[1] if found[2] == "sum" else f"{found[1]}_count"
            sums[key] = float(found[3])
    return sums


def top_functions(raw: Path, count: int = 25) -> None:
    """From py-spy's collapsed stacks ("a;b;c N" per line): the functions with the most own
    samples and with the most samples anywhere on the stack."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            anywhere[frame] += samples
    if not total:
        print("py-spy recorded nothing")
        return
    for title, counter in (("own", own), ("cumulative", anywhere)):
        print(f"py-spy, {title} samples of {total}:")
        for frame, samples in counter.most_common(count):
            print(f"  {100 * samples / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--haproxy-bin", default="haproxy")
    parser.add_argument(
        "--frontend-layout", choices=["per-service", "per-port"], help="unset: the default"
    )
    parser.add_argument("--service-cidr", default="10.116.0.0/16", help="the services' VIPs")
    parser.add_argument("--py-spy", metavar="FILE", help="record the controller with py-spy")
    parser.add_argument("--log", help="keep the controller's log there")
    args = parser.parse_args()

    backend = Backend("probe")
    port = free_port(PROBE_VIP)
    objects = cluster(args.services, args.endpoints)
    # Other benches on this machine serve the same synthetic cluster (10.96.0.0/12): addresses
    # of our own keep their listeners out of the way (a VIP:port another process holds is
    # left out of the config, and the kernel shares the rest's connections with it).
    vips = ipaddress.ip_network(args.service_cidr)
    for index, obj in enumerate(o for o in objects if o["kind"] == "Service"):
        obj["spec"]["clusterIP"] = str(vips[index + 10])
        obj["spec"]["clusterIPs"] = [obj["spec"]["clusterIP"]]
    objects += [
        service("probe", "bench", cluster_ips=[PROBE_VIP], ports=[("http", port)]),
        slice_of("probe", backend, namespace="bench"),
    ]
    with tempfile.TemporaryDirectory(prefix="k2h-bench-") as tmp:
        workdir = Path(tmp)
        manifest = workdir / "cluster.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        listen = free_port("127.0.0.1")
        command = run_command(workdir, listen, "-f", str(manifest), haproxy_bin=args.haproxy_bin)
        command.append("--allow-loopback-endpoints")
        if args.frontend_layout:
            command += ["--frontend-layout", args.frontend_layout]
        if args.py_spy:
            spy = shutil.which("py-spy")
            if spy is None:
                sys.exit("py-spy is not installed (pip install py-spy)")
            command = [
                spy,
                "record",
                "--format",
                "raw",
                "-r",
                "200",
                "--gil",
                "-o",
                args.py_spy,
                "--",
                *command,
            ]
        log = open(workdir / "controller.log", "wb")  # noqa: SIM115
        started = time.time()
        process = spawn(command, log)
        try:
            while answer(PROBE_VIP, port, timeout=0.5) != "probe":
                if process.poll() is not None:
                    sys.exit(f"the controller exited with {process.returncode}")
                if time.time() - started > 900:
                    sys.exit("no request served within 900 s")
                time.sleep(0.01)
            served = time.time()
            pids = controller_pids(process.pid, spied=bool(args.py_spy))
            own = cpu_seconds(pids[0]) if pids else (0.0, 0.0)
            cpu = (*own, haproxy_cpu(workdir / "controller.log"))
            # The controller logs the initial config once the master confirms the load.
            while "initial config" not in log_marks(workdir / "controller.log")[0]:
                if time.time() - served > 60:
                    break
                time.sleep(0.05)
            sums = metric_sums(listen)
        finally:
            # Under py-spy, the controller is py-spy's child: stopped as usual (SIGTERM), it
            # stops its HAProxy, and py-spy writes its file once it exits.
            for pid in controller_pids(process.pid, spied=bool(args.py_spy)):
                os.kill(pid, signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
        marks, check = log_marks(workdir / "controller.log")
        if args.log:
            shutil.copy(workdir / "controller.log", args.log)
    backend.close()
    report(args, started, served, marks, {**sums, "check": check}, cpu)
    if args.py_spy:
        top_functions(Path(args.py_spy))


def report(
    args: argparse.Namespace,
    started: float,
    served: float,
    marks: dict[str, float],
    sums: dict[str, float],
    cpu: tuple[float, float, float],
) -> None:
    missing = [m for m in MARKS if m not in marks]
    if missing:
        sys.exit(f"the log lacks {missing}")
    translate, render = sums.get("translate", 0.0), sums.get("render", 0.0)
    check = sums["check"]
    phases = [
        ("start: interpreter, imports, haproxy -vv", marks["first log line"] - started),
        ("setup", marks["sources named"] - marks["first log line"]),
        ("reading+parsing the manifests", marks["synced"] - marks["sources named"]),
        (f"translate (x{sums.get('translate_count', 0):.0f})", translate),
        (f"render (x{sums.get('render_count', 0):.0f})", render),
        ("haproxy -c", check),
        (
            "rest of the first apply (plan, files)",
            marks["haproxy spawned"] - marks["synced"] - translate - render - check,
        ),
        ("HAProxy start to listening", marks["haproxy loaded"] - marks["haproxy spawned"]),
        ("then the first request served", served - marks["haproxy loaded"]),
    ]
    total = served - started
    print(
        f"cold start, {args.services} services x {args.endpoints} endpoints + 1 from a manifest "
        f"({args.frontend_layout or 'default layout'}, {args.haproxy_bin}"
        f"{', under py-spy' if args.py_spy else ''}): first request served after {total:.1f}s"
    )
    for name, seconds in phases:
        print(f"  {name:<42} {seconds:>6.2f}s {100 * seconds / total:>5.1f}%")
    print(
        f"  CPU by then (user+sys): controller {cpu[0]:.2f}s, its haproxy -vv and -c "
        f"{cpu[1]:.2f}s, the HAProxy it runs {cpu[2]:.2f}s"
    )


if __name__ == "__main__":
    main()
