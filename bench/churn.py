"""Endpoint churn at scale, through the real pipeline (a local API server, `kube2haproxy run`
supervising HAProxy, the official client watching), with N services x 10 endpoints served:

1. latency: an endpoint change -> the first request routed to the new endpoint, with no reload
   (p50, p99 over --changes changes; goal p99 <= 50 ms at 10,000 services);
2. a storm: 1,000 endpoint changes over 10 s across 100 services: how many reloads (goal 0) and
   how long after the last change HAProxy runs the final state (apply lag).

    python bench/churn.py --services 10000 --changes 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from cluster import endpoint_slice as bench_slice
from harness import serving_cluster, worker_rss_mb

from kube2haproxy.appliers.master import MasterCLI
from kube2haproxy.appliers.runtime import RuntimeAPI, parse_servers_state
from testkit.backends import Backend, answer, fleet, free_port
from testkit.builders import service, slice_of
from testkit.fakeapi import FakeKubeAPI


def latency(
    api: FakeKubeAPI,
    vip: str,
    port: int,
    pool: list[Backend],
    changes: int,
    trace: IO[str] | None = None,
) -> list[float]:
    """Each change's latency, waited for, 20 ms apart; `trace` gets each change's start
    (time.monotonic, comparable with the controller's) and latency in ms."""
    samples = []
    current = None
    for i in range(changes):
        target = pool[i % len(pool)]
        if target is current:
            target = pool[(i + 1) % len(pool)]
        started = time.monotonic()
        api.put(slice_of("probe", target, namespace="bench", name="probe-a"))
        while answer(vip, port) != target.name:
            if time.monotonic() - started > 30:
                raise SystemExit(f"change {i}: not routed after 30 s")
        samples.append(time.monotonic() - started)
        if trace is not None:
            print(f"{started:.3f} {samples[-1] * 1000:.1f}", file=trace, flush=True)
        current = target
        time.sleep(0.02)
    return samples


def latency_columns(samples: list[float]) -> str:
    """p50, p99 and max of latency samples, as the tables print them."""
    ordered = sorted(samples)
    p99 = ordered[max(0, round(0.99 * len(ordered)) - 1)]
    return (
        f"{statistics.median(samples) * 1000:>6.1f}ms {p99 * 1000:>6.1f}ms "
        f"{ordered[-1] * 1000:>6.1f}ms"
    )


def storm(
    api: FakeKubeAPI, runtime: RuntimeAPI, services: int, changes: int, seconds: float
) -> float:
    """`changes` endpoint changes spread evenly over `seconds` across `services` services;
    returns the time from the last change until HAProxy runs the final endpoints."""
    final: dict[int, set[str]] = {}
    interval = seconds / changes
    started = time.monotonic()
    for n in range(changes):
        index = n % services
        obj = bench_slice(index, 10, base=1_000_000 + n * 10)
        api.put(obj)
        final[index] = {f"{e['addresses'][0]}:8080" for e in obj["endpoints"]}
        delay = started + (n + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    last = time.monotonic()
    waiting = {f"ns-{i % 50}_svc-{i}_http": want for i, want in final.items()}
    while waiting:
        for backend in list(waiting):
            state = parse_servers_state(runtime.command(f"show servers state {backend}"))
            running = {f"{s.addr}:{s.port}" for s in state.values() if s.addr != "127.0.0.1"}
            if running == waiting[backend]:
                del waiting[backend]
        if time.monotonic() - last > 60:
            raise SystemExit("the storm's final state was not reached within 60 s")
    return time.monotonic() - last


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, nargs="+", default=[10000])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--haproxy-bin", default="haproxy")
    parser.add_argument(
        "--trace",
        type=argparse.FileType("w"),
        help="write each change's start (time.monotonic) and latency in ms to this file",
    )
    args = parser.parse_args()
    with fleet((f"b{i}" for i in range(8)), port=18000) as pool:
        print(
            f"{'services':>8} {'p50':>8} {'p99':>8} {'max':>8} {'storm reloads':>13} "
            f"{'storm lag':>9} {'worker RSS':>10} {'slots':>7}",
            flush=True,
        )
        for count in args.services:
            with serving_cluster(
                count,
                10,
                "--allow-loopback-endpoints",
                "--log-level",
                "warning",
                haproxy_bin=args.haproxy_bin,
                timeout=900,
            ) as (api, workdir, _, _listen, _):
                vip, port = "127.1.0.1", free_port("127.1.0.1")
                api.put(service("probe", "bench", cluster_ips=[vip], ports=[("http", port)]))
                api.put(slice_of("probe", pool[0], namespace="bench", name="probe-a"))
                # The probe service needs one reload: a new frontend.
                while answer(vip, port) != "b0":
                    time.sleep(0.05)
                time.sleep(2)
                master = MasterCLI(str(workdir / "run" / "master.sock"))
                runtime = RuntimeAPI(str(workdir / "run" / "admin.sock"))
                reloads = master.processes().reloads
                samples = latency(api, vip, port, pool, args.changes, args.trace)
                assert master.processes().reloads == reloads, "an endpoint change reloaded"
                lag = storm(api, runtime, services=min(100, count), changes=1000, seconds=10.0)
                storm_reloads = master.processes().reloads - reloads
                worker_rss = worker_rss_mb(workdir)
                slots = len(runtime.servers())  # once, after the measurements
            print(
                f"{count:>8} {latency_columns(samples)} {storm_reloads:>13} {lag * 1000:>7.0f}ms "
                f"{worker_rss:>7.0f} MB {slots:>7}",
                flush=True,
            )


if __name__ == "__main__":
    main()
