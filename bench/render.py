"""Render benchmark: translate+render time against `haproxy -c` time of the same config.

    python bench/render.py --services 10000 --endpoints 10 --repeat 5

Prints the median of each and their ratio (goal at 10k x 10: translate+render <= 0.25 x haproxy -c).
--profile prints where translate+render spend their time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from cluster import cluster
from harness import check_config

from kube2haproxy import gc_tuning
from kube2haproxy.render import Renderer
from kube2haproxy.settings import RenderSettings, TranslateSettings
from kube2haproxy.translate import translate
from testkit.builders import store_of


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--haproxy-bin", default="haproxy")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    print(
        f"{'services':>8} {'endpoints':>9} {'translate':>10} {'render':>8} {'t+r':>8} "
        f"{'haproxy -c':>10} {'ratio':>6} {'cfg MB':>7} {'-c peak RSS':>11}"
    )
    for services in args.services:
        snapshot = store_of(cluster(services, args.endpoints)).snapshot()
        renderer = Renderer(RenderSettings())
        settings = TranslateSettings()
        gc_tuning.settle()  # as the CLI and the controller do after loading

        translate_s, render_s, total_s = [], [], []
        text = ""
        for _ in range(args.repeat):
            with gc_tuning.paused():
                t0 = time.perf_counter()
                model = translate(snapshot, settings).model
                t1 = time.perf_counter()
                text = renderer.render(model)
                t2 = time.perf_counter()
            del model
            gc.collect()
            translate_s.append(t1 - t0)
            render_s.append(t2 - t1)
            total_s.append(t2 - t0)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            renderer.render(translate(snapshot, settings).model)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "haproxy.cfg"
            path.write_text(text)
            check_s, check_mb = check_config(args.haproxy_bin, path, repeat=args.repeat)
        med = statistics.median
        print(
            f"{services:>8} {args.endpoints:>9} {med(translate_s):>9.3f}s {med(render_s):>7.3f}s "
            f"{med(total_s):>7.3f}s {check_s:>9.3f}s {med(total_s) / check_s:>6.2f} "
            f"{len(text) / 1e6:>7.1f} {check_mb:>8.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
