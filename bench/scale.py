"""Scale one Service up and down without reloads (per-port layout): a Service with 3 endpoints,
served beside N others, is scaled in steps (3 -> 23 -> 50 -> 100 -> 250 -> 100 -> 23 -> 3 by
default) through the real pipeline (a local API server, `kube2haproxy run` supervising HAProxy,
the official client watching), with client traffic to it all along. Counts the master's reloads
and the requests that failed, and times each step: from the EndpointSlice written to the API
until HAProxy runs exactly the new set (every listed endpoint a running server, no other server
taking traffic, read from `show servers state` of its backend).

    python bench/scale.py --services 1000 --haproxy-bin /usr/sbin/haproxy
    python bench/scale.py --services 10000 --repeat 3 --steps 3,23,50,100,250,100,23,3

The endpoints are real HTTP servers (testkit/backends.py), each on a loopback address of its
own and all on one port, as the pods of a Service. An endpoint is started before the slice
lists it and stopped once HAProxy no longer runs it, as a pod is: a request HAProxy still sends
to a removed endpoint fails. Requests answered by an endpoint after HAProxy dropped it are
counted as stale. Run as root: the service listens on port 80, as the synthetic cluster's do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from cluster import cluster
from harness import controller, require_unlistened, wait_ready

from kube2haproxy.appliers.master import MasterCLI
from kube2haproxy.appliers.runtime import RuntimeAPI, parse_servers_state
from kube2haproxy.linestate import OP_RUNNING
from testkit.backends import Backend, free_port, get
from testkit.builders import service, slice_of
from testkit.fakeapi import FakeKubeAPI

PORT = 80  # the synthetic cluster's port: the per-port frontend already listens on it
VIP = "127.3.0.1"
NAME, NAMESPACE = "scaled", "bench"


@dataclass
class Traffic:
    """Clients asking the service, each over a new connection, at about `rate` requests/s in
    all: every answer (start time, who answered) and every failure."""

    rate: float
    clients: int = 2
    answers: list[tuple[float, str]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self) -> None:
        interval = self.clients / self.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.answers.append((started, get(VIP, PORT, timeout=5.0)))
            except Exception as exc:  # every failure counts, whatever it is
                self.failures.append((started, f"{type(exc).__name__}: {exc}"))
            next_at = max(next_at + interval, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def serving(runtime: RuntimeAPI, backend: str) -> set[str]:
    """The addresses HAProxy sends new connections to in a backend."""
    state = parse_servers_state(runtime.command(f"show servers state {backend}"))
    return {
        f"{s.addr}:{s.port}"
        for s in state.values()
        if s.op_state == OP_RUNNING and not s.in_maintenance and not s.draining
    }


COUNTERS = ("econ", "eresp", "srv_abrt", "wretr", "wredis")


def connection_errors(runtime: RuntimeAPI, backend: str) -> list[str]:
    """The backend's rows of `show stat` (servers and BACKEND) with failed or aborted
    connections, retries or redispatches: where failed requests went."""
    lines = runtime.command(f"show stat {backend} -1 -1", timeout_s=30.0).splitlines()
    header = lines[0].lstrip("# ").split(",")
    at = {name: header.index(name) for name in ("pxname", "svname", "addr", *COUNTERS)}
    out = []
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) < len(header) or fields[at["pxname"]] != backend:
            continue
        counts = {c: fields[at[c]] for c in COUNTERS if fields[at[c]] not in ("", "0")}
        if counts:
            out.append(f"{fields[at['svname']]} {fields[at['addr']]}: {counts}")
    return out


def backend_of(runtime: RuntimeAPI) -> str:
    state = parse_servers_state(runtime.command("show servers state", timeout_s=30.0))
    names = {be for be, _ in state if NAME in be and NAMESPACE in be}
    if len(names) != 1:
        raise SystemExit(f"cannot tell the scaled service's backend among {sorted(names)}")
    return names.pop()


def endpoint(i: int, port: int) -> Backend:
    """The i-th endpoint (pod) of the scaled service: its own loopback address."""
    return Backend(f"e{i}", ip=f"127.4.{i // 250}.{i % 250 + 1}", port=port)


def close_all(backends: list[Backend]) -> None:
    """Stop endpoints together: each takes up to half a second (its poll interval)."""
    threads = [threading.Thread(target=b.close) for b in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass
class Step:
    target: int
    seconds: float
    commands_at: float  # monotonic time the slice was written
    served_at: float  # monotonic time HAProxy ran the new set


def scale(
    api: FakeKubeAPI,
    runtime: RuntimeAPI,
    backend: str,
    running: dict[int, Backend],
    port: int,
    target: int,
    timeout: float,
    keep: bool,
) -> Step:
    for i in range(target):  # the new pods are up before they are listed
        if i not in running:
            running[i] = endpoint(i, port)
    listed = [running[i] for i in range(target)]
    want = {b.address for b in listed}
    started = time.monotonic()
    api.put(slice_of(NAME, *listed, namespace=NAMESPACE, name=f"{NAME}-a"))
    while serving(runtime, backend) != want:
        if time.monotonic() - started > timeout:
            got = serving(runtime, backend)
            raise SystemExit(
                f"step to {target}: HAProxy runs {len(got)} servers ({len(got & want)} of the "
                f"{len(want)} wanted) after {timeout:g} s"
            )
        time.sleep(0.002)
    served = time.monotonic()
    if not keep:  # the removed pods stop once HAProxy no longer sends them anything
        close_all([running.pop(i) for i in sorted(running) if i >= target])
    return Step(target, served - started, started, served)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000, help="other services served")
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints of each other one")
    parser.add_argument(
        "--steps",
        default="3,23,50,100,250,100,23,3",
        help="endpoint counts, comma-separated; the first is where the service starts",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the steps this many times")
    parser.add_argument("--rate", type=float, default=200.0, help="client requests per second")
    parser.add_argument("--spare-backends", type=int, default=500)
    parser.add_argument("--haproxy-bin", default="haproxy")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after ready")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between steps")
    parser.add_argument("--log", help="keep the controller's log there")
    parser.add_argument(
        "--keep-removed",
        action="store_true",
        help="leave removed endpoints running (a request sent to one then succeeds, stale)",
    )
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    require_unlistened(VIP, PORT)

    port = free_port("127.0.0.1")
    running = {i: endpoint(i, port) for i in range(steps[0])}
    objects = [
        *cluster(args.services, args.endpoints),
        service(NAME, NAMESPACE, cluster_ips=[VIP], ports=[("http", PORT)]),
        slice_of(NAME, *running.values(), namespace=NAMESPACE, name=f"{NAME}-a"),
    ]
    with tempfile.TemporaryDirectory(prefix="k2h-bench-") as tmp, FakeKubeAPI() as api:
        workdir = Path(tmp)
        for obj in objects:
            api.put(obj)
        listen = free_port("127.0.0.1")
        extra = [
            "--allow-loopback-endpoints",
            "--frontend-layout",
            "per-port",
            "--spare-backends",
            str(args.spare_backends),
        ]
        with controller(api, workdir, listen, *extra, haproxy_bin=args.haproxy_bin) as process:
            ready = wait_ready(process, listen, timeout=900)
            print(f"{args.services} services + the scaled one ready in {ready:.1f}s", flush=True)
            time.sleep(args.settle)
            master = MasterCLI(str(workdir / "run" / "master.sock"))
            runtime = RuntimeAPI(str(workdir / "run" / "admin.sock"))
            backend = backend_of(runtime)
            reloads_before = master.processes().reloads
            traffic = Traffic(args.rate)
            traffic.start()
            done: list[Step] = []
            try:
                time.sleep(args.pause)
                for _ in range(args.repeat):
                    for target in steps[1:] if not done else steps:
                        if done and target == done[-1].target:
                            continue
                        step = scale(
                            api, runtime, backend, running, port, target, 120, args.keep_removed
                        )
                        print(
                            f"  {done[-1].target if done else steps[0]:>4} -> {target:>4}: "
                            f"{step.seconds * 1000:.0f} ms",
                            flush=True,
                        )
                        done.append(step)
                        time.sleep(args.pause)
            finally:
                traffic.close()
                reloads = master.processes().reloads - reloads_before
                for line in connection_errors(runtime, backend):
                    print(f"  HAProxy: {line}")
                if args.log:
                    (Path(args.log)).write_bytes((workdir / "controller.log").read_bytes())
                close_all(list(running.values()))
    report(args, steps, done, traffic, reloads)


def report(
    args: argparse.Namespace, steps: list[int], done: list[Step], traffic: Traffic, reloads: int
) -> None:
    # Stale: answered by an endpoint HAProxy had already dropped when the request started.
    # Reached: the endpoints that answered between a step served and the next one.
    stale, reached = 0, []
    for i, step in enumerate(done):
        listed = {f"e{j}" for j in range(step.target)}
        until = done[i + 1].commands_at if i + 1 < len(done) else float("inf")
        answered = [who for t, who in traffic.answers if step.served_at < t < until]
        stale += sum(1 for who in answered if who not in listed)
        reached.append(len(set(answered) & listed))
    print(
        f"scale {args.steps} x{args.repeat} beside {args.services} services "
        f"({args.haproxy_bin}): {reloads} reloads, {len(traffic.failures)} failed of "
        f"{len(traffic.answers) + len(traffic.failures)} requests, {stale} stale answers",
        flush=True,
    )
    by_step: dict[tuple[int, int], list[float]] = {}
    previous = steps[0]
    for step, count in zip(done, reached, strict=True):
        by_step.setdefault((previous, step.target), []).append(step.seconds)
        print(
            f"  {previous:>4} -> {step.target:>4}: {step.seconds * 1000:.0f} ms; then answered "
            f"by {count} of the {step.target}"
        )
        previous = step.target
    if args.repeat > 1:
        for (a, b), samples in by_step.items():
            print(
                f"  {a:>4} -> {b:>4}: p50 {statistics.median(samples) * 1000:.0f} ms, "
                f"p99 {percentile(samples, 0.99) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms "
                f"(of {len(samples)})"
            )
    # Each failure placed in its step: while the step was being applied, or after.
    places: dict[str, int] = {}
    previous = steps[0]
    for i, step in enumerate(done):
        until = done[i + 1].commands_at if i + 1 < len(done) else float("inf")
        for t, what in traffic.failures:
            if step.commands_at <= t < until:
                phase = "applying" if t < step.served_at else "after"
                key = f"{previous} -> {step.target} ({phase}): {what}"
                places[key] = places.get(key, 0) + 1
        previous = step.target
    for key, count in places.items():
        print(f"  failed: {count} x {key}")


if __name__ == "__main__":
    main()
