"""Convergence: from a Service (with a ready endpoint) created at the API to the first request
HAProxy routes to it, with N services already served, through the real pipeline:
official client watch -> controller -> render -> haproxy -c -> reload -> new worker.

    python bench/converge.py --services 1000 10000 --rounds 7

Prints the median convergence, the median `haproxy -c` time of the resulting config, and their
ratio (goal: <= 2). Run as root or with a high RLIMIT_NOFILE: every service is a listening socket.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from harness import check_config, serving_cluster

from testkit.backends import Backend, answer, probe
from testkit.builders import service, slice_of


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--haproxy-bin", default="haproxy")
    args = parser.parse_args()

    backend = Backend("new")
    print(
        f"{'services':>8} {'ready':>7} {'converge p50':>12} {'min':>6} {'max':>6} "
        f"{'haproxy -c':>10} {'ratio':>6}",
        flush=True,
    )
    for count in args.services:
        with serving_cluster(
            count,
            args.endpoints,
            "--allow-loopback-endpoints",
            haproxy_bin=args.haproxy_bin,
            timeout=600,
        ) as (api, workdir, _, listen, ready):
            samples = []
            for round_ in range(args.rounds):
                vip = f"127.1.{round_ // 250}.{round_ % 250 + 1}"
                port = 18080
                name = f"bench-{round_}"
                started = time.monotonic()
                api.put(service(name, "bench", cluster_ips=[vip], ports=[("http", port)]))
                api.put(slice_of(name, backend, namespace="bench"))
                while answer(vip, port) != "new":
                    if time.monotonic() - started > 120:
                        sys.exit(f"round {round_}: not routed after 120 s")
                    time.sleep(0.005)
                samples.append(time.monotonic() - started)
                time.sleep(0.5)  # let the old worker go before the next round
            assert probe(listen, "/readyz")[0] == 200
            check, _ = check_config(args.haproxy_bin, workdir / "run" / "haproxy.cfg", repeat=3)
        p50 = statistics.median(samples)
        print(
            f"{count:>8} {ready:>6.1f}s {p50:>11.2f}s {min(samples):>5.2f}s "
            f"{max(samples):>5.2f}s {check:>9.2f}s {p50 / check:>6.2f}",
            flush=True,
        )
    backend.close()


if __name__ == "__main__":
    main()
