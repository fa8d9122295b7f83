"""Golden scenarios: tests/scenarios/<name>/ holds input manifests (input/), optional extra flags
(flags, one argument per line), the expected haproxy.cfg and the expected findings (as `render
-v` prints them). Every expected config must pass the real `haproxy -c`.

Regenerate on purpose only, then read the diff:
    KUBE2HAPROXY_UPDATE_GOLDEN=1 python -m pytest tests/test_scenarios.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kube2haproxy import cli
from kube2haproxy.errors import ExitCode

ROOT = Path(__file__).parent / "scenarios"
SCENARIOS = sorted(p.name for p in ROOT.iterdir() if (p / "input").exists())
UPDATE = os.environ.get("KUBE2HAPROXY_UPDATE_GOLDEN") == "1"
# Where the golden configs say their map files are (flags: `--maps-dir @MAPS@`): a path no
# test writes to. Each test writes them to a temporary directory and puts that in the text.
MAPS = "/etc/kube2haproxy-scenario/maps"


def flags(scenario: Path, maps: Path) -> list[str]:
    path = scenario / "flags"
    lines = path.read_text().splitlines() if path.exists() else []
    return [str(maps) if line == "@MAPS@" else line for line in lines]


def compare(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with KUBE2HAPROXY_UPDATE_GOLDEN=1 and review"
    assert actual == path.read_text(), f"{path} differs"


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KUBE2HAPROXY_") and name != "KUBE2HAPROXY_UPDATE_GOLDEN":
            monkeypatch.delenv(name)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_renders_its_expected_config_and_findings(name, capsys, monkeypatch, tmp_path):
    scenario = ROOT / name
    maps = tmp_path / "maps"
    monkeypatch.chdir(scenario)  # findings name files relative to the scenario
    output = tmp_path / "haproxy.cfg"
    code = cli.main(
        ["render", "-f", "input", "-v", "-q", "-o", str(output), *flags(scenario, maps)]
    )
    _, err = capsys.readouterr()
    assert code == ExitCode.OK, err
    compare(scenario / "expected.cfg", output.read_text().replace(str(maps), MAPS))
    compare(scenario / "findings.txt", err)
    # The files the config refers to (the per-port layout's maps), in the maps directory.
    written = {p.name: p.read_text() for p in maps.glob("*.map")}
    if UPDATE:
        for stale in (scenario / "maps").glob("*.map"):
            stale.unlink()
        for name, text in written.items():
            (scenario / "maps").mkdir(exist_ok=True)
            (scenario / "maps" / name).write_text(text)
    assert written == {p.name: p.read_text() for p in (scenario / "maps").glob("*.map")}


@pytest.mark.parametrize("name", SCENARIOS)
def test_expected_config_passes_haproxy_check(name, haproxy_bin, tmp_path):
    maps = tmp_path / "maps"
    if (ROOT / name / "maps").is_dir():
        shutil.copytree(ROOT / name / "maps", maps)
    expected = tmp_path / "haproxy.cfg"
    expected.write_text((ROOT / name / "expected.cfg").read_text().replace(MAPS, str(maps)))
    result = subprocess.run(
        [haproxy_bin, "-c", "-f", str(expected)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout + result.stderr


def test_every_scenario_has_its_golden_files():
    for name in SCENARIOS:
        for golden in ("expected.cfg", "findings.txt"):
            assert (ROOT / name / golden).exists() or UPDATE, f"{name}/{golden}"
    assert len(SCENARIOS) >= 10


@pytest.mark.parametrize("name", SCENARIOS)
def test_names_are_valid_on_every_version(name):
    """HAProxy 3.3 refuses a frontend and a backend of one name (3.1 and 3.2 warn about each)
    and two servers of one name in a backend: every golden config keeps them apart."""
    frontends: set[str] = set()
    backends: set[str] = set()
    servers: dict[str, list[str]] = {}
    section = None
    for line in (ROOT / name / "expected.cfg").read_text().splitlines():
        words = line.split()
        if line[:1].isalpha() and words[0] in ("frontend", "backend", "listen"):
            section = (words[0], words[1])
            (frontends if words[0] == "frontend" else backends).add(words[1])
            assert words[0] != "listen"
            servers[words[1]] = []
        elif words[:1] == ["server"] and section is not None:
            servers[section[1]].append(words[1])
    assert not frontends & backends
    for backend, names in servers.items():
        assert len(names) == len(set(names)), backend
