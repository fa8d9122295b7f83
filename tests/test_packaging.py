"""The bundled templates live in the checkout's top-level templates/ folder and install as the
package kube2haproxy.templates: a wheel and an editable install both find them, from any
directory, without the checkout on the path. Real builds (pip, setuptools) in a fresh venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted(p.name for p in (ROOT / "templates").glob("*.j2"))
EXAMPLE = ROOT / "examples" / "cluster.yaml"

# What an installed kube2haproxy says about its templates, and a render through them.
PROBE = """
import sys
from kube2haproxy.render import BUNDLED
from kube2haproxy.cli import main
print(BUNDLED)
sys.argv = ["kube2haproxy", "render", "-q", "-f", sys.argv[1]]
main()
"""


def source_tree(tmp: Path) -> Path:
    """A copy of what the build reads, so building writes nothing into the checkout."""
    tree = tmp / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    # testkit/ too: it sits beside the package in the checkout, and must stay out of the wheel.
    for name in ("kube2haproxy", "templates", "testkit"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def environment(tmp: Path) -> Path:
    """A venv that sees this interpreter's packages (the dependencies) but not the checkout's
    kube2haproxy: the one installed into it shadows the editable one."""
    venv.create(tmp / "venv", system_site_packages=True, with_pip=False)
    return tmp / "venv" / "bin" / "python"


def pip(python: Path, *args: str, cwd: Path) -> None:
    # The venv borrows pip from this interpreter; the build uses its setuptools (no download).
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check",
         "--quiet", *args, "--no-deps", "--no-build-isolation"],
        cwd=cwd, check=True, capture_output=True, text=True,
    )  # fmt: skip


def probe(python: Path, cwd: Path) -> tuple[Path, str]:
    done = subprocess.run(
        [str(python), "-c", PROBE, str(EXAMPLE)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    first, _, config = done.stdout.partition("\n")
    return Path(first), config


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp / "dist"), str(source_tree(tmp))],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = (tmp / "dist").glob("kube2haproxy-*.whl")
    return wheel


def test_the_wheel_ships_every_template_inside_the_package(built: Path) -> None:
    with zipfile.ZipFile(built) as wheel:
        names = set(wheel.namelist())
    assert {f"kube2haproxy/templates/{name}" for name in TEMPLATES} <= names
    assert not any(name.startswith("templates/") for name in names)  # no top-level package
    assert not any(name.startswith("testkit/") for name in names)  # what tests and bench share


def test_a_wheel_install_renders_with_its_own_templates(built: Path, tmp_path: Path) -> None:
    python = environment(tmp_path)
    pip(python, "install", str(built), cwd=tmp_path)
    bundled, config = probe(python, cwd=tmp_path)
    assert bundled.is_relative_to(tmp_path / "venv")
    assert sorted(p.name for p in bundled.glob("*.j2")) == TEMPLATES
    assert "frontend fe_" in config


def test_an_editable_install_renders_with_the_checkouts_templates(tmp_path: Path) -> None:
    tree = source_tree(tmp_path)
    python = environment(tmp_path)
    pip(python, "install", "--editable", str(tree), cwd=tmp_path)
    bundled, _ = probe(python, cwd=tmp_path)
    assert bundled == tree / "templates"
    # An edit to the checkout's template is what renders next, with no reinstall.
    defaults = tree / "templates" / "defaults.j2"
    defaults.write_text(defaults.read_text().replace("defaults", "defaults # edited", 1))
    assert "defaults # edited" in probe(python, cwd=tmp_path)[1]
