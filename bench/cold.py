"""The cold path (issue 15): `kube2haproxy render -f cluster.json -o out.cfg` end to end (a real
process: interpreter start, imports, JSON decoding, translate, render, the file written) against
`haproxy -c` of the config it wrote, in one run, alternating, so both see the same machine load.

    python bench/cold.py --services 10000 50000 --repeat 5
    python bench/cold.py --services 10000 --against /path/to/other/checkout   # before/after

Prints the medians of wall and CPU (user+sys) time of each and their ratios (goal at 10k x 10
and 50k x 10: render <= 1.5 x haproxy -c), and the ratio of the least CPU times. On a shared
machine the CPU figures are the steadier ones, and the least the least disturbed (two busy
hyperthreads of one core make every instruction cost more CPU time). --against runs another
checkout's render on the same file in the same run (its own templates), for a before/after
comparison under the same load; both outputs must be byte-identical. --phases prints where one
in-process render spends its time.

--run also starts `kube2haproxy run -f cluster.json` (supervising HAProxy) per checkout and
prints the seconds from its start until it is ready (/readyz: HAProxy serves the first config),
split from its own metrics into `haproxy -c` (validate), HAProxy's start (reload) and the rest
(the controller's own share: goal <= 1 s at 10k x 10), the own share as a multiple of its
`haproxy -c` (the goal on the issue's machine, where `haproxy -c` took 0.61 s: 1.6x), and its
resident memory 15 s after ready (steady) and its peak (goal <= 250 MB and <= 350 MB).

--churn N then runs bench/churn.py at N services (an endpoint change to its first routed
request, p50/p99, goal p99 <= 50 ms at 10,000; and a storm of changes), so that one command
prints every figure of the issue.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for testkit

from cluster import cluster
from harness import raise_fd_limit, rss_mb, stop, wait_ready

from kube2haproxy import dryrun
from kube2haproxy.settings import Settings
from testkit.backends import free_port, probe

ROOT = Path(__file__).resolve().parents[1]


def timed(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user+sys, from the kernel's accounting of this child) of
    one command."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            output = err.read().decode(errors="replace")[-4000:]
            sys.exit(f"{argv[:4]} failed ({child.returncode}):\n{output}")
    return wall, usage.ru_utime + usage.ru_stime


def render_argv(source: Path, path: Path, output: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    argv = [sys.executable, "-m", "kube2haproxy.cli", "render", "-f", str(path)]
    return [*argv, "-o", str(output), "-q"], env


def phases(path: Path) -> None:
    """One render in this process, phase by phase (CPU seconds), through the functions the
    `render` command runs (kube2haproxy.dryrun), the file not written."""
    settings = Settings()
    clock = time.process_time
    t1 = clock()
    _, store = dryrun.stored((str(path),))
    t2 = clock()
    translation = dryrun.translated(store, settings)
    t3 = clock()
    renderer = dryrun.renderer(settings, output=None)
    text = dryrun.render(translation, settings, renderer, output=None, check=False).text
    t4 = clock()
    print(
        f"phases (CPU s): load {t2 - t1:.3f}, translate {t3 - t2:.3f}, "
        f"render {t4 - t3:.3f} ({len(text) / 1e6:.1f} MB)",
        flush=True,
    )


_METRIC = re.compile(r"^(kube2haproxy_\w+_duration_seconds)_sum (\S+)$", re.MULTILINE)


def serve(source: Path, path: Path, workdir: Path, haproxy_bin: str) -> dict[str, float]:
    """`run -f path` from `source`: seconds to ready, metrics' duration sums, RSS and peak."""
    listen = free_port("127.0.0.1")
    argv = [sys.executable, "-m", "kube2haproxy.cli", "run", "-f", str(path)]
    argv += ["--haproxy-bin", haproxy_bin, "--run-dir", str(workdir / "run")]
    argv += ["--listen", f"127.0.0.1:{listen}", "--nbthread", "2"]
    env = {**os.environ, "PYTHONPATH": str(source)}
    with open(workdir / "controller.log", "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            cwd=source,  # `python -m` imports from the working directory first
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=raise_fd_limit,  # noqa: PLW1509 - runs in the child, before its threads
        )
        try:
            wait_ready(process, listen, timeout=900)
            ready = time.monotonic() - started  # from the process start, imports included
            # What follows ready (the first drift check reads HAProxy's state) grows the
            # memory for a few seconds: steady is what is left after that.
            time.sleep(15)
            rss, peak = rss_mb(process.pid)
            sums = {m[0]: float(m[1]) for m in _METRIC.findall(probe(listen, "/metrics")[1])}
        finally:
            stop(process)
    return {"ready": ready, "rss": rss, "peak": peak, **sums}


def serve_report(sources: dict[str, Path], path: Path, tmp: Path, haproxy_bin: str) -> None:
    print(
        f"{'checkout':>9} {'ready':>7} {'validate':>8} {'reload':>7} {'own':>6} "
        f"{'own/-c':>6} {'(translate':>10} {'render)':>7} {'RSS':>7} {'peak':>7}",
        flush=True,
    )
    for name, source in sources.items():
        workdir = tmp / f"run-{name}"
        workdir.mkdir()
        got = serve(source, path, workdir, haproxy_bin)

        def metric(what: str, got: dict[str, float] = got) -> float:
            return got.get(f"kube2haproxy_{what}_duration_seconds", 0.0)

        own = got["ready"] - metric("validate") - metric("reload")
        print(
            f"{name:>9} {got['ready']:>6.2f}s {metric('validate'):>7.2f}s "
            f"{metric('reload'):>6.2f}s {own:>5.2f}s {_ratio(own, metric('validate')):>6} "
            f"{metric('translate'):>9.2f}s "
            f"{metric('render'):>6.2f}s {got['rss']:>4.0f} MB {got['peak']:>4.0f} MB",
            flush=True,
        )


def _ratio(part: float, whole: float) -> str:
    return f"{part / whole:.2f}" if whole else "-"


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
    parser.add_argument("--run", action="store_true", help="also time `run -f` to ready, RSS")
    parser.add_argument(
        "--churn", type=int, metavar="N", help="then run bench/churn.py at N services"
    )
    args = parser.parse_args()

    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs", flush=True)
    print(
        f"{'services':>8} {'checkout':>9} {'render wall':>11} {'cpu':>6} {'haproxy -c wall':>15} "
        f"{'cpu':>6} {'ratio wall':>10} {'cpu':>5} {'least cpu':>9} {'ratio':>5} {'cfg MB':>6}",
        flush=True,
    )
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
                    # In the checkout: `python -m` imports from the working directory first.
                    wall, cpu = timed(argv, env, cwd=source)
                    check_wall, check_cpu = timed([args.haproxy_bin, "-c", "-q", "-f", str(output)])
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
                least, least_check = min(got["cpu"]), min(got["check cpu"])
                print(
                    f"{services:>8} {name:>9} {med['wall']:>10.2f}s {med['cpu']:>5.2f}s "
                    f"{med['check wall']:>14.2f}s {med['check cpu']:>5.2f}s "
                    f"{med['wall'] / med['check wall']:>10.2f} "
                    f"{med['cpu'] / med['check cpu']:>5.2f} "
                    f"{least:>4.2f}/{least_check:.2f}s {least / least_check:>5.2f} "
                    f"{len(outputs[name]) / 1e6:>6.1f}",
                    flush=True,
                )
            if args.phases:
                phases(path)
            if args.run:
                serve_report(sources, path, Path(tmp), args.haproxy_bin)
    if args.churn:
        print(f"bench/churn.py --services {args.churn}:", flush=True)
        churn = [sys.executable, str(ROOT / "bench" / "churn.py"), "--services", str(args.churn)]
        subprocess.run([*churn, "--haproxy-bin", args.haproxy_bin], check=True)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)", flush=True)


if __name__ == "__main__":
    main()
