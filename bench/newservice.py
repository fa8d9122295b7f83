"""New services without reloads (per-port layout): from a Service (with a ready endpoint)
created at the API to the first request HAProxy routes to it, with N services already served,
through the real pipeline: official client watch -> controller -> runtime API (a spare backend,
its server lines, a map entry) -> first request. Counts the master's reloads meanwhile.

    python bench/newservice.py --services 10000 --new 100
    python bench/newservice.py --services 10000 --burst 1000 --over 60

The first form creates one service at a time and waits until it answers: p50/p99 of that.
The burst form creates N services evenly over S seconds without waiting, then deletes them the
same way; it reports the reloads and the apply lag (creation -> the controller's log line that
applied it, from its JSON log) of each phase. Run as root: every service listens on port 80.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from harness import require_unlistened, serving_cluster

from kube2haproxy.appliers.master import MasterCLI
from testkit.backends import Backend, answer
from testkit.builders import service, slice_of
from testkit.fakeapi import FakeKubeAPI

PORT = 80  # the port of every service of the synthetic cluster: already listened on


def reloads(workdir: Path) -> int:
    return MasterCLI(str(workdir / "run" / "master.sock")).processes().reloads


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_by_one(api: FakeKubeAPI, backend: Backend, count: int, *, verbose: bool) -> list[float]:
    samples = []
    for i in range(count):
        vip, name = f"127.1.{i // 250}.{i % 250 + 1}", f"new-{i}"
        started = time.monotonic()
        api.put(service(name, "bench", cluster_ips=[vip], ports=[("http", PORT)]))
        api.put(slice_of(name, backend, namespace="bench"))
        while answer(vip, PORT) != "new":
            if time.monotonic() - started > 60:
                raise SystemExit(f"{name}: not routed after 60 s (--log keeps the log)")
            time.sleep(0.001)
        samples.append(time.monotonic() - started)
        if verbose:
            print(f"  {name}: {samples[-1] * 1000:.0f} ms", flush=True)
    return samples


def applied_at(workdir: Path, verb: str) -> dict[str, float]:
    """When the controller's log says each bench service was added or removed (epoch s)."""
    seen: dict[str, float] = {}
    for line in (workdir / "controller.log").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        message = record.get("message", "")
        if f"services {verb}:" not in message:
            continue
        when = datetime.fromisoformat(record["time"]).timestamp()
        listed = message.split(f"services {verb}: ", 1)[1].split(";")[0]
        for name in listed.split(", "):
            seen.setdefault(name.split(" (+")[0], when)
        if "more)" in listed:  # "(+N more)": the rest of that batch, unnamed
            seen.setdefault(f"batch@{when}", when)
    return seen


def burst(api: FakeKubeAPI, workdir: Path, backend: Backend, count: int, over: float) -> None:
    for verb in ("added", "removed"):
        before = reloads(workdir)
        created: dict[str, float] = {}
        started = time.monotonic()
        for i in range(count):
            while time.monotonic() - started < i * over / count:
                time.sleep(0.001)
            vip, name = f"127.2.{i // 250}.{i % 250 + 1}", f"burst-{i}"
            created[f"bench/{name}"] = time.time()
            if verb == "added":
                api.put(service(name, "bench", cluster_ips=[vip], ports=[("http", PORT)]))
                api.put(slice_of(name, backend, namespace="bench"))
            else:
                api.delete("Service", "bench", name)
        time.sleep(5)  # the last ones
        applied = applied_at(workdir, verb)
        lags = [applied[n] - t for n, t in created.items() if n in applied]
        print(
            f"burst {verb}: {count} services over {over:g}s: {reloads(workdir) - before} reloads; "
            f"apply lag p50 {statistics.median(lags) * 1000:.0f} ms, "
            f"p99 {percentile(lags, 0.99) * 1000:.0f} ms (of {len(lags)} named in the log)",
            flush=True,
        )


def measure(args: argparse.Namespace, api: FakeKubeAPI, workdir: Path, backend: Backend) -> None:
    # Steady state: the watches opened after the lists, the first drift check done.
    time.sleep(args.settle)
    if args.new:
        before = reloads(workdir)
        samples = one_by_one(api, backend, args.new, verbose=args.v)
        print(
            f"one by one: {len(samples)} new services at {args.services}: first request "
            f"routed p50 {statistics.median(samples) * 1000:.0f} ms, "
            f"p99 {percentile(samples, 0.99) * 1000:.0f} ms, "
            f"max {max(samples) * 1000:.0f} ms; {reloads(workdir) - before} reloads",
            flush=True,
        )
    if args.burst:
        burst(api, workdir, backend, args.burst, args.over)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--new", type=int, default=100, help="services created one by one")
    parser.add_argument("--burst", type=int, default=0, help="services created in a burst")
    parser.add_argument("--over", type=float, default=60.0, help="seconds the burst lasts")
    parser.add_argument("--spare-backends", type=int, default=500)
    parser.add_argument("--haproxy-bin", default="haproxy")
    parser.add_argument("-v", action="store_true", help="print every sample")
    parser.add_argument("--log", help="keep the controller's log there")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after ready")
    args = parser.parse_args()

    require_unlistened("127.1.0.1", PORT)
    backend = Backend("new")
    with serving_cluster(
        args.services,
        args.endpoints,
        "--allow-loopback-endpoints",
        "--frontend-layout",
        "per-port",
        "--spare-backends",
        str(max(args.spare_backends, args.new + args.burst)),
        haproxy_bin=args.haproxy_bin,
        timeout=900,
    ) as (api, workdir, _, _, ready):
        print(f"{args.services} services ready in {ready:.1f}s", flush=True)
        try:
            measure(args, api, workdir, backend)
        finally:
            if args.log:
                shutil.copy(workdir / "controller.log", args.log)
    backend.close()


if __name__ == "__main__":
    main()
