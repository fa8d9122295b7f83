"""Controller memory after the initial sync: `kube2haproxy run` (a real process, supervising
HAProxy) lists N services x M endpoints from a local API server and applies them; then its
resident memory is read from /proc (goal at 10,000 x 10: <= 250 MB). HAProxy's own memory is
reported beside it.

    python bench/memory.py --services 10000 --endpoints 10
    python bench/memory.py --services 10000 --slots-free 0 --slots-block 1   # no spare lines
    python bench/memory.py --services 10000 --frontend-layout per-port --spare-backends 2000

--frontend-layout and --spare-backends go to the controller as they are (the spares only count
with per-port); unset, the controller's defaults apply (per-service; 500 spares).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from harness import rss_mb, serving_cluster, worker_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, nargs="+", default=[10000])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--haproxy-bin", default="haproxy")
    parser.add_argument(
        "--slots-free",
        default="4",
        help="the controller's --slots-free (0, with --slots-block 1: no spare server lines)",
    )
    parser.add_argument("--slots-block", default="8", help="the controller's --slots-block")
    parser.add_argument(
        "--frontend-layout",
        choices=["per-service", "per-port"],
        help="the controller's --frontend-layout (unset: its default)",
    )
    parser.add_argument(
        "--spare-backends", type=int, help="the controller's --spare-backends (unset: its default)"
    )
    args = parser.parse_args()
    extra = ["--slots-free", args.slots_free, "--slots-block", args.slots_block]
    if args.frontend_layout:
        extra += ["--frontend-layout", args.frontend_layout]
    if args.spare_backends is not None:
        extra += ["--spare-backends", str(args.spare_backends)]
    print(f"controller: {' '.join(extra)}; {args.haproxy_bin}", flush=True)
    print(
        f"{'services':>8} {'endpoints':>9} {'sync+apply':>10} {'controller RSS':>14} "
        f"{'peak':>8} {'haproxy worker RSS':>18}",
        flush=True,
    )
    for count in args.services:
        cluster = serving_cluster(
            count,
            args.endpoints,
            *extra,
            haproxy_bin=args.haproxy_bin,
            timeout=900,
        )
        with cluster as (_, workdir, process, _, ready):
            time.sleep(2)  # let the first apply's garbage go
            rss, peak = rss_mb(process.pid)
            worker_rss = worker_rss_mb(workdir)
        print(
            f"{count:>8} {args.endpoints:>9} {ready:>9.1f}s {rss:>11.0f} MB {peak:>5.0f} MB "
            f"{worker_rss:>15.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
