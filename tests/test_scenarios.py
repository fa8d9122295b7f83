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
MAPS = Path("/tmp/kube2haproxy-scenario-maps")  # the per-port scenario's --maps-dir


def flags(scenario: Path) -> list[str]:
    path = scenario / "flags"
    return path.read_text().splitlines() if path.exists() else []


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
    shutil.rmtree(MAPS, ignore_errors=True)
    monkeypatch.chdir(scenario)  # findings name files relative to the scenario
    output = tmp_path / "haproxy.cfg"
    code = cli.main(["render", "-f", "input", "-v", "-q", "-o", str(output), *flags(scenario)])
    _, err = capsys.readouterr()
    assert code == ExitCode.OK, err
    compare(scenario / "expected.cfg", output.read_text())
    compare(scenario / "findings.txt", err)
    # The files the config refers to (the per-port layout's maps), in the maps directory.
    written = {p.name: p.read_text() for p in MAPS.glob("*.map")}
    if UPDATE:
        for stale in (scenario / "maps").glob("*.map"):
            stale.unlink()
        for name, text in written.items():
            (scenario / "maps").mkdir(exist_ok=True)
            (scenario / "maps" / name).write_text(text)
    assert written == {p.name: p.read_text() for p in (scenario / "maps").glob("*.map")}


@pytest.mark.parametrize("name", SCENARIOS)
def test_expected_config_passes_haproxy_check(name, haproxy_bin):
    expected = ROOT / name / "expected.cfg"
    shutil.rmtree(MAPS, ignore_errors=True)
    if (ROOT / name / "maps").is_dir():  # where the config says its maps are
        shutil.copytree(ROOT / name / "maps", MAPS)
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
