"""The cold path (issue 15): `kube2haproxy render -f cluster.json -o out.cfg` end to end (a real
process: interpreter start, imports, JSON decoding, translate, render, the file written) against
`haproxy -c` of the config it wrote, in one run, alternating, so both see the same machine load.

    python bench/cold.py --services 10000 50000 --repeat 5
    python bench/cold.py --services 10000 --against /path/to/other/checkout   # before/after

Prints the medians of wall and CPU (user+sys) time of each and their ratios (goal at 10k x 10
and 50k x 10: render <= 1.5 x haproxy -c). On a shared machine the CPU ratio is the steadier
figure. --against runs another checkout's render on the same file in the same run (its own
templates), for a before/after comparison under the same load; both outputs must be
byte-identical. --phases prints where one in-process render spends its time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from cluster import cluster

from kube2haproxy import gc_tuning
from kube2haproxy.render import Renderer
from kube2haproxy.settings import RenderSettings, TranslateSettings
from kube2haproxy.sources import manifests
from kube2haproxy.store import Store
from kube2haproxy.translate import translate

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user+sys of the child) and peak RSS (KB) of one command."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, err = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        sys.exit(f"{argv[:4]} failed ({child.returncode}):\n{err.decode(errors='replace')[-4000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


class Children:
    """CPU time of each child, from the growth of RUSAGE_CHILDREN (which only ever grows)."""

    def __init__(self) -> None:
        self._cpu = 0.0

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
        wall, cpu, _ = timed(argv, env)
        used, self._cpu = cpu - self._cpu, cpu
        return wall, used


def render_argv(source: Path, path: Path, output: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    argv = [sys.executable, "-m", "kube2haproxy.cli", "render", "-f", str(path)]
    return [*argv, "-o", str(output), "-q"], env


def phases(path: Path) -> None:
    """One render in this process, phase by phase (CPU seconds)."""
    clock = time.process_time
    t1 = clock()
    with gc_tuning.loading():
        loaded = manifests.load((str(path),))
        store = Store()
        for (kind, key), obj in loaded.objects.items():
            store.put(kind, key, obj)
    t2 = clock()
    with gc_tuning.paused():
        model = translate(store.snapshot(), TranslateSettings()).model
    t3 = clock()
    renderer = Renderer(RenderSettings())
    with gc_tuning.paused():
        text = renderer.render(model)
    t4 = clock()
    print(
        f"phases (CPU s): load {t2 - t1:.3f}, translate {t3 - t2:.3f}, "
        f"render {t4 - t3:.3f} ({len(text) / 1e6:.1f} MB)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--services", type=int, nargs="+", default=[10000])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--haproxy-bin", default="haproxy")
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--phases", action="store_true", help="also time the phases in-process")
    args = parser.parse_args()

    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs", flush=True)
    print(
        f"{'services':>8} {'checkout':>9} {'render wall':>11} {'cpu':>6} {'haproxy -c wall':>15} "
        f"{'cpu':>6} {'ratio wall':>10} {'cpu':>5} {'cfg MB':>6}",
        flush=True,
    )
    children = Children()
    for services in args.services:
        with tempfile.TemporaryDirectory(prefix="k2h-cold-") as tmp:
            path = Path(tmp) / "cluster.json"
            items = cluster(services, args.endpoints)
            path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
            del items
            sources = {"this": ROOT}
            if args.against is not None:
                sources["against"] = args.against.resolve()
            times: dict[str, dict[str, list[float]]] = {
                name: {"wall": [], "cpu": [], "check wall": [], "check cpu": []} for name in sources
            }
            outputs = {}
            for _ in range(args.repeat):
                for name, source in sources.items():
                    output = Path(tmp) / f"{name}.cfg"
                    argv, env = render_argv(source, path, output)
                    wall, cpu = children.run(argv, env)
                    check_wall, check_cpu = children.run(
                        [args.haproxy_bin, "-c", "-q", "-f", str(output)]
                    )
                    got = times[name]
                    got["wall"].append(wall)
                    got["cpu"].append(cpu)
                    got["check wall"].append(check_wall)
                    got["check cpu"].append(check_cpu)
                    outputs[name] = output.read_bytes()
            if len(set(outputs.values())) != 1:
                sys.exit("the checkouts rendered different configs")
            for name, got in times.items():
                med = {k: statistics.median(v) for k, v in got.items()}
                print(
                    f"{services:>8} {name:>9} {med['wall']:>10.2f}s {med['cpu']:>5.2f}s "
                    f"{med['check wall']:>14.2f}s {med['check cpu']:>5.2f}s "
                    f"{med['wall'] / med['check wall']:>10.2f} "
                    f"{med['cpu'] / med['check cpu']:>5.2f} "
                    f"{len(outputs[name]) / 1e6:>6.1f}",
                    flush=True,
                )
            if args.phases:
                phases(path)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)", flush=True)


if __name__ == "__main__":
    main()
