"""README.md stays true: its annotation, settings and exit-code tables match the code, and its
quick-start commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from kube2haproxy import tuning
from kube2haproxy.errors import ExitCode
from kube2haproxy.options import ValueKind
from kube2haproxy.render import duration
from kube2haproxy.settings import specs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def table_rows(first_cell: str) -> dict[str, list[str]]:
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first_cell, cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_annotation_is_documented_with_its_default():
    rows = table_rows(r"`kube2haproxy\.io/[a-z-]+`")
    assert set(rows) == {a.name for a in tuning.ANNOTATIONS}
    for annotation in tuning.ANNOTATIONS:
        assert rows[annotation.name][0] == annotation.default, annotation.name
        assert rows[annotation.name][1] == annotation.doc, annotation.name


def test_every_setting_is_documented_with_its_variable_and_default():
    rows = table_rows(r"`--(\[no-\])?[a-z-]+`")
    for spec in specs():
        default = spec.default
        flag = spec.flag
        if spec.kind is ValueKind.DURATION:
            default = duration(default)
        elif spec.kind is ValueKind.FLAG:
            default = "on" if default else "off"
            flag = f"--[no-]{flag[2:]}"
        elif default is None:
            default = "unset"
        assert flag in rows, flag
        assert rows[flag][:2] == [f"`{spec.envvar}`", f"`{default}`"], spec.flag


def test_every_metric_is_documented():
    from prometheus_client import generate_latest

    from kube2haproxy.metrics import Metrics

    exposed = {
        line.split()[2]
        for line in generate_latest(Metrics().registry).decode().splitlines()
        if line.startswith("# TYPE")
    }
    documented = set(re.findall(r"`(kube2haproxy_[a-z_]+)", README))
    for name in exposed:
        if name.endswith("_created"):  # prometheus-client's creation time of each series
            continue
        base = name.removesuffix("_total")
        assert name in documented or base in documented or f"{base}_total" in documented, name


def test_every_exit_code_is_documented():
    rows = table_rows(r"[0-9]+")
    assert {int(code) for code in rows} == {int(code) for code in ExitCode}


def test_ci_runs_the_readme_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "scripts/check" in quick_start and "scripts/install" in quick_start
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^scripts/install$", ci, re.M) and re.search(r"^scripts/check$", ci, re.M)
