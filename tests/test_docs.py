"""The documentation stays true: the annotation, settings, metrics and exit-code tables of docs/
match the code, the docs build strictly (no broken link or anchor, no page left out), every
link between the markdown files of the repository resolves, and README.md's quick start is what
CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kube2haproxy import tuning
from kube2haproxy.errors import ExitCode
from kube2haproxy.options import ValueKind
from kube2haproxy.render import duration
from kube2haproxy.settings import specs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()


def table_rows(page: str, first_cell: str) -> dict[str, list[str]]:
    """The rows of the tables of docs/<page> whose first cell matches, by that cell."""
    rows = {}
    for line in (DOCS / page).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first_cell, cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_annotation_is_documented_with_its_default():
    rows = table_rows("annotations.md", r"`kube2haproxy\.io/[a-z-]+`")
    assert set(rows) == {a.name for a in tuning.ANNOTATIONS}
    for annotation in tuning.ANNOTATIONS:
        assert rows[annotation.name][0] == annotation.default, annotation.name
        assert rows[annotation.name][1] == annotation.doc, annotation.name


def test_every_setting_is_documented_with_its_variable_and_default():
    rows = table_rows("settings.md", r"`--(\[no-\])?[a-z-]+`")
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
    documented = set(re.findall(r"`(kube2haproxy_[a-z_]+)", (DOCS / "monitoring.md").read_text()))
    for name in exposed:
        if name.endswith("_created"):  # prometheus-client's creation time of each series
            continue
        base = name.removesuffix("_total")
        assert name in documented or base in documented or f"{base}_total" in documented, name


def test_every_exit_code_is_documented():
    rows = table_rows("dry-run.md", r"[0-9]+")
    assert {int(code) for code in rows} == {int(code) for code in ExitCode}


def test_ci_runs_the_readme_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "scripts/check" in quick_start and "scripts/install" in quick_start
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^scripts/install$", ci, re.M) and re.search(r"^scripts/check$", ci, re.M)


def test_the_readme_is_read_in_five_minutes():
    assert len(README.splitlines()) <= 250


def test_the_docs_build_strictly(tmp_path):
    """mkdocs.yml turns a broken link or anchor and a page missing from the nav into warnings,
    and --strict makes a warning fail the build."""
    site = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    pages = {p.stem for p in DOCS.glob("*.md")} - {"index"}
    assert {p.parent.name for p in site.glob("*/index.html")} >= pages


# The markdown files read on GitHub, outside the MkDocs build, and what links them together.
MARKDOWN = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "bench/README.md", "deploy/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A path of the repository named in prose or code: a top-level directory, then a file in it
# (demo/ and examples/ are left out: `demo/hello` is also how a Service is named).
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:kube2haproxy|tests|testkit|bench|deploy|haproxy|templates|scripts|docs)/"
    r"[\w./-]*\w)"
)


CODE = re.compile(r"^```.*?^```|`[^`]*`", re.M | re.S)


@pytest.mark.parametrize("name", MARKDOWN)
def test_every_relative_link_resolves(name):
    path = ROOT / name
    for target in LINK.findall(CODE.sub("", path.read_text())):  # links, not code about links
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        assert (path.parent / target.split("#", 1)[0]).exists(), f"{name}: {target}"


@pytest.mark.parametrize(
    "path",
    [ROOT / name for name in MARKDOWN] + sorted(DOCS.glob("*.md")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_file_the_docs_name_exists(path):
    for named in REPO_PATH.findall(path.read_text()):
        assert (ROOT / named).exists(), f"{path.relative_to(ROOT)}: {named}"
