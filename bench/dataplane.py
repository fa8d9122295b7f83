"""Endpoint churn through the Data Plane API applier: `kube2haproxy run --applier dataplane` as a
real subprocess, watching a local Kubernetes API (testkit/fakeapi/) that holds N services x 10
endpoints and a probe service whose endpoint moves, and driving the API emulator of
testkit/dataplane/ (dataplaneapi v3.4.2's wire protocol, in front of a real HAProxy).

Per change: the EndpointSlice written -> the first request routed to the new endpoint, with no
reload (p50, p99, max over --changes changes); of that, the applier's part (the mean of
kube2haproxy_runtime_update_duration_seconds: its PUTs sent and their answers checked); and the
runtime server PUTs it sent. The emulator (a Python HTTP server, in a process of its own) and
HAProxy run on this host: no network between them, but no dataplaneapi either. HAProxy's
"backend ... has no server available" alerts are the gap docs/dataplane.md names: a backend
whose only endpoint is replaced by one that hashes to the same slot (one change in eight here).

    python bench/dataplane.py --services 100 1000 --changes 200
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from churn import latency, latency_columns
from cluster import cluster
from harness import controller, wait_ready

from testkit.backends import answer, fleet, free_port, probe
from testkit.builders import service, slice_of
from testkit.dataplane import DataplaneEmulator
from testkit.fakeapi import FakeKubeAPI

USER, PASSWORD = "bench", "bench-password"
SERVERS_PATH = "/runtime/backends/"
UPDATE_SECONDS = "kube2haproxy_runtime_update_duration_seconds"


def serve_emulator(haproxy_bin: str, workdir: Path, conn: Connection) -> None:
    """The emulator, in a process of its own (a GIL of its own: the bench's backends and its
    Kubernetes API serve from the bench's): its addresses out, then (HAProxy's reloads, the
    runtime server PUTs answered, the emulator's errors) each time it is asked, until "stop"."""
    with DataplaneEmulator(haproxy_bin, workdir, user=USER, password=PASSWORD) as emu:
        conn.send((emu.url, str(emu.stats_socket), str(emu.maps_dir)))
        while conn.recv() != "stop":
            puts = sum(1 for r in emu.requests if r.method == "PUT" and SERVERS_PATH in r.path)
            conn.send((emu.haproxy.processes().reloads, puts, [repr(e) for e in emu.errors]))


@contextmanager
def emulator(haproxy_bin: str, workdir: Path) -> Iterator[tuple[Connection, list[str]]]:
    """The emulator's process: (its connection, [url, stats socket, maps dir])."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=serve_emulator, args=(haproxy_bin, workdir, theirs), daemon=True
    )
    process.start()
    try:
        yield ours, list(ours.recv())
    finally:
        ours.send("stop")
        process.join(timeout=30)


def asked(conn: Connection) -> tuple[int, int, list[str]]:
    conn.send("count")
    reloads, puts, errors = conn.recv()
    return reloads, puts, errors


def updates(listen: int) -> tuple[float, float]:
    """The runtime updates' total seconds and count, from the controller's metrics."""
    found = {}
    for line in probe(listen, "/metrics")[1].splitlines():
        name, _, value = line.partition(" ")
        if name in (f"{UPDATE_SECONDS}_sum", f"{UPDATE_SECONDS}_count"):
            found[name] = float(value)
    return found[f"{UPDATE_SECONDS}_sum"], found[f"{UPDATE_SECONDS}_count"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--haproxy-bin", default="haproxy")
    args = parser.parse_args()

    with fleet(f"b{i}" for i in range(8)) as pool:
        print(
            f"{'services':>8} {'p50':>8} {'p99':>8} {'max':>8} {'applier':>8} {'reloads':>7} "
            f"{'PUTs/change':>11}",
            flush=True,
        )
        for count in args.services:
            with (
                tempfile.TemporaryDirectory(prefix="k2h-bench-dp-") as tmp,
                FakeKubeAPI() as api,
                emulator(args.haproxy_bin, Path(tmp) / "api") as (emu, (url, socket, maps)),
            ):
                workdir = Path(tmp)
                for obj in cluster(count, 10):
                    api.put(obj)
                vip, port = "127.1.0.1", free_port("127.1.0.1")
                api.put(service("probe", "bench", cluster_ips=[vip], ports=[("http", port)]))
                api.put(slice_of("probe", pool[0], namespace="bench", name="probe-a"))
                password = workdir / "password"
                password.write_text(PASSWORD + "\n")
                listen = free_port("127.0.0.1")
                extra = [
                    "--applier", "dataplane", "--dataplane-url", url,
                    "--dataplane-username", USER, "--dataplane-password-file", str(password),
                    "--runtime-socket", socket, "--maps-dir", maps,
                    "--allow-loopback-endpoints", "--log-level", "warning",
                ]  # fmt: skip
                with controller(
                    api, workdir, listen, *extra, haproxy_bin=args.haproxy_bin
                ) as process:
                    wait_ready(process, listen, timeout=900)
                    while answer(vip, port) != "b0":
                        time.sleep(0.05)
                    time.sleep(2)
                    reloads, puts, _ = asked(emu)
                    took, applied = updates(listen)
                    samples = latency(api, vip, port, pool, args.changes)
                    # The last change's PUTs may still be under way: let them land.
                    time.sleep(1)
                    took_after, applied_after = updates(listen)
                    took, applied = took_after - took, applied_after - applied
                    reloads_after, puts_after, errors = asked(emu)
                if errors:
                    raise SystemExit(f"the emulator failed: {errors[:3]}")
            print(
                f"{count:>8} {latency_columns(samples)} {took / applied * 1000:>6.1f}ms "
                f"{reloads_after - reloads:>7} {(puts_after - puts) / len(samples):>11.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
