"""`kube2haproxy status` and `explain` against a real controller: `kube2haproxy run` following
manifests, supervising a real HAProxy whose tcp checks find one endpoint alive and one refusing,
asked by the real commands over HTTP; and its page at `/` in headless Chromium, whose DOM and
screenshot show the same."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube2haproxy.errors import ExitCode
from testkit.backends import Backend, free_port, loopback_ip, probe
from testkit.builders import JSON, endpoint, endpoint_slice, service, write_manifests
from tests.live import STARTUP_S, wait_for
from tests.test_run import controller, supervised_args

CHECKED = {
    "kube2haproxy.io/check": "tcp",
    "kube2haproxy.io/check-interval": "100ms",
    "kube2haproxy.io/check-rise": "1",
    "kube2haproxy.io/check-fall": "1",
}
HOSTILE = "<script>document.title='owned'</script><b>x</b>"


def command(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`kube2haproxy ARGS` as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "kube2haproxy.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def ref(name: str) -> JSON:
    return {"kind": "Pod", "name": name, "namespace": "demo", "uid": f"uid-{name}"}


def cluster_objects(alive: Backend, dead_ip: str, vip: str, port: int) -> list[JSON]:
    """demo/web: one endpoint answering, one refusing (nothing listens there), one not ready;
    demo/db: headless; demo/odd: served, with an annotation whose value is markup."""
    return [
        service(
            "web",
            "demo",
            cluster_ips=[vip],
            ports=[("http", port)],
            annotations=CHECKED,
            labels={"app": "web"},
        ),
        endpoint_slice(
            "web",
            "demo",
            endpoints=[
                {**endpoint(alive.ip), "targetRef": ref("web-a"), "nodeName": "node-1"},
                {**endpoint(dead_ip), "targetRef": ref("web-b"), "nodeName": "node-2"},
                {**endpoint(loopback_ip(), ready=False), "targetRef": ref("web-c")},
            ],
            ports=[("http", alive.port)],
        ),
        service("db", "demo", cluster_ips=["None"], labels={"app": "db"}),
        service(
            "odd",
            "demo",
            cluster_ips=[loopback_ip()],
            ports=[("http", port)],
            annotations={"kube2haproxy.io/check": HOSTILE},
        ),
        endpoint_slice("odd", "demo", endpoints=[alive.ip], ports=[("http", alive.port)]),
    ]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, haproxy_bin: str) -> Iterator[dict[str, Any]]:
    """A controller serving the cluster above, once HAProxy's checks have spoken: one per
    HAProxy version, shared by the tests that only ask it."""
    tmp_path = tmp_path_factory.mktemp("status")
    alive = Backend("a")
    try:
        vip, listen = loopback_ip(), free_port("127.0.0.1")
        port = free_port(vip)
        objects = cluster_objects(alive, loopback_ip(), vip, port)
        manifests = tmp_path / "cluster"
        manifests.mkdir()
        write_manifests(manifests / "cluster.yaml", *objects)
        args = supervised_args(
            manifests, tmp_path / "run", listen, haproxy_bin, "--drift-check-interval", "200ms"
        )
        with controller(*args) as process:
            wait_for(lambda: probe(listen, "/readyz")[0] == 200, timeout=STARTUP_S, what="ready")

            def checked() -> bool:
                found = json.loads(probe(listen, "/status?name=web")[1])
                return bool(found["rows"]) and found["rows"][0]["lines"] == {"UP": 1, "DOWN": 1}

            wait_for(checked, timeout=20, what="HAProxy's checks, seen by a drift check")
            yield {"listen": f"127.0.0.1:{listen}", "vip": vip, "port": port, "alive": alive}
            process.terminate()  # stops HAProxy too
            process.communicate(timeout=30)
    finally:
        alive.close()


def test_status_prints_every_service_port_as_haproxy_sees_it(running):
    listen = running["listen"]
    table = command("status", "--listen", listen).stdout
    lines = {line.split()[0]: line for line in table.splitlines() if line.startswith("demo/")}
    assert lines["demo/web"].split() == [
        "demo/web",
        f"http:{running['port']}",
        running["vip"],
        "demo_web_http",
        "1/2",  # two endpoints served: one answers its checks
        lines["demo/web"].split()[5],  # changed: an age
        "served",
    ]
    assert lines["demo/db"].split()[-2:] == ["skipped", "(headless)"]
    assert "controller ready (per-service layout): 3 services, 2 served" in table

    wide = command("status", "--listen", listen, "-o", "wide").stdout
    assert "2: 1 UP, 1 DOWN" in wide and "fe_demo_web_http" in wide
    (odd,) = [line for line in wide.splitlines() if line.startswith("demo/odd")]
    assert "served: metadata.annotations[kube2haproxy.io/check]: invalid value" in odd

    found = json.loads(command("status", "--listen", listen, "-o", "json").stdout)
    assert found["kind"] == "Status" and found["summary"]["ready"] is True
    assert [(r["name"], r["state"]) for r in found["rows"]] == [
        ("db", "skipped"),
        ("odd", "served"),
        ("web", "served"),
    ]

    # The filters as the command sends them, then each one's meaning (the same query, asked
    # directly: a command costs a Python start).
    chosen = ("-o", "json", "-n", "demo", "-l", "app in (web,db)", "w*")
    rows = json.loads(command("status", "--listen", listen, *chosen).stdout)["rows"]
    assert [r["name"] for r in rows] == ["web"]

    def names(query: str) -> list[str]:
        code, body = probe(int(listen.rpartition(":")[2]), f"/status?{query}")
        assert code == 200, body
        return [r["name"] for r in json.loads(body)["rows"]]

    assert names("selector=app+in+(web,db)") == ["db", "web"]
    assert names("selector=!app") == ["odd"]
    assert names("namespace=elsewhere") == []
    assert names("name=demo/o*") == ["odd"]
    assert names("name=d*&selector=app") == ["db"]
    assert probe(int(listen.rpartition(":")[2]), "/status?selector=a+b")[0] == 400
    assert command("status", "--listen", listen, "-n", "elsewhere").stdout.endswith("no services\n")
    refused = command("status", "--listen", listen, "-l", "app in web", check=False)
    assert refused.returncode == ExitCode.USAGE
    assert "-l/--selector: 'app in web': cannot read a label requirement" in refused.stderr


def test_explain_walks_one_service_to_every_endpoint_and_haproxy_s_check(running):
    listen = running["listen"]
    text = command("explain", "--listen", listen, "demo/web").stdout
    vip, port, alive = running["vip"], running["port"], running["alive"]
    assert f"web.demo.svc.cluster.local             A     {vip}" in text
    assert (
        f"{vip}:{port} (cluster IP) -> frontend fe_demo_web_http -> backend demo_web_http" in text
    )
    rows = {line.split()[1]: line.split() for line in text.splitlines() if "Pod/web-" in line}
    assert rows["Pod/web-a"][0] == f"{alive.ip}:{alive.port}"
    assert rows["Pod/web-a"][2] == "node-1"
    assert rows["Pod/web-a"][-3:] == ["UP", "(L4OK)", "served"]
    assert rows["Pod/web-b"][-3:] == ["DOWN", "(L4CON)", "served"]
    assert " ".join(rows["Pod/web-c"][-4:]) == "left out: not ready"

    found = json.loads(command("explain", "--listen", listen, "demo/web:http", "-o", "json").stdout)
    (path,) = found["ports"]
    checks = [(e["pod"], e["haproxy"], e["check"], e["served"]) for e in path["endpoints"]]
    assert checks == [
        ("Pod/web-a", "UP", "L4OK", True),
        ("Pod/web-b", "DOWN", "L4CON", True),
        ("Pod/web-c", "", "", False),
    ]
    missing = command("explain", "--listen", listen, "demo/nope", check=False)
    assert missing.returncode == ExitCode.INPUT
    assert "Service demo/nope: not known" in missing.stderr
    no_port = command("explain", "--listen", listen, "demo/web:grpc", check=False)
    assert no_port.returncode == ExitCode.INPUT and "has no port 'grpc'" in no_port.stderr


def test_explain_from_manifests_needs_no_controller(tmp_path):
    alive = Backend("a")
    try:
        objects = cluster_objects(alive, "127.0.0.9", "10.96.0.10", 80)
        write_manifests(tmp_path / "cluster.yaml", *objects)
        text = command(
            "explain", "-f", str(tmp_path), "--allow-loopback-endpoints", "demo/web"
        ).stdout
    finally:
        alive.close()
    assert text.startswith("Service demo/web, from manifests: served")
    assert "HAPROXY" not in text  # no HAProxy was asked
    assert "Pod/web-c" in text and "left out: not ready" in text
    unreachable = command("status", "--listen", f"127.0.0.1:{free_port('127.0.0.1')}", check=False)
    assert unreachable.returncode == ExitCode.ENVIRONMENT
    assert "cannot reach the controller" in unreachable.stderr


# --- the page in a browser ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVED_GREEN = (0x13, 0x77, 0x3B)  # statuspage.STYLE: tr.served td.state
DOWN_RED = (0xB4, 0x23, 0x18)  # span.down


def chromium(tmp: Path, *args: str) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            # Niced: its start takes seconds of both cores, which tests beside it that wait on
            # a timer (a probe's first answer) should not pay for.
            "nice",
            "-n",
            "15",
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # as root in a container; the page is ours
            "--disable-gpu",
            "--disable-extensions",
            "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}",
            "--window-size=1280,800",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(tmp)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows (RGB or RGBA bytes) of an 8-bit non-interlaced PNG, as Chromium
    writes its screenshots."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks)
    stride = width * size
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):
            left = line[x - size] if x >= size else 0
            up, corner = previous[x], previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + guess) & 0xFF
        rows.append(
            bytes(line if size == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
        )
        previous = line
    return width, height, rows


def colour_at(rows: list[bytes], colour: tuple[int, int, int]) -> list[tuple[int, int]]:
    """Where a colour is painted (exactly, as text strokes' cores are)."""
    wanted = bytes(colour)
    found = []
    for y, row in enumerate(rows):
        x = row.find(wanted)
        while x != -1:
            if x % 3 == 0:
                found.append((x // 3, y))
            x = row.find(wanted, x + 1)
    return found


class _Dom(html.parser.HTMLParser):
    """The rows of the services table as Chromium's DOM has them: class, service, cell texts;
    and every element's tag."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str, list[str]]] = []
        self.tags: list[str] = []
        self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        got = dict(attrs)
        if tag == "tr" and "data-service" in got:
            self.rows.append((got.get("class") or "", got["data-service"] or "", []))
        elif tag == "td" and self.rows:
            self.rows[-1][2].append("")
            self._cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "tbody"):
            self._cell = False

    def handle_data(self, data: str) -> None:
        if self._cell:
            self.rows[-1][2][-1] += data


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_the_page_in_a_browser_shows_what_status_shows(running, tmp_path):
    url = f"http://{running['listen']}/"
    dom = _Dom()
    dom.feed(chromium(tmp_path, "--dump-dom", url))
    assert "script" not in dom.tags  # the annotation's markup stayed text
    rows = {service: (kind, cells) for kind, service, cells in dom.rows}
    assert set(rows) == {"demo/db", "demo/odd", "demo/web"}
    kind, cells = rows["demo/web"]
    assert kind == "served" and cells[5] == "1/2 (1 UP, 1 DOWN)" and cells[7] == "served"
    assert rows["demo/db"][0] == "skipped"
    assert HOSTILE in rows["demo/odd"][1][7]  # shown as the text it is

    filtered = _Dom()
    filtered.feed(chromium(tmp_path, "--dump-dom", url + "?selector=app%3Dweb"))
    assert [service for _, service, _ in filtered.rows] == ["demo/web"]

    shot = tmp_path / "status.png"
    chromium(tmp_path, f"--screenshot={shot}", url)
    width, height, rows_of_pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 800)
    colours = {row[x : x + 3] for row in rows_of_pixels[::7] for x in range(0, len(row), 21)}
    assert len(colours) > 4  # not a blank page
    green = colour_at(rows_of_pixels, SERVED_GREEN)
    red = colour_at(rows_of_pixels, DOWN_RED)
    assert green and red  # "served" painted green, "1 DOWN" red
    # Both served rows are painted; the DOWN count sits left of the state column.
    assert len({y // 20 for _, y in green}) >= 2
    assert max(x for x, _ in red) < min(x for x, _ in green)
