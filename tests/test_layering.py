"""The layering of DESIGN.md is enforced by import-linter's contracts in pyproject.toml (run by
scripts/check). Here: every module of the package is in one of its layers, so a new module
cannot slip past them unclassified; and bench/, which is no package for import-linter to follow,
imports nothing from tests/ (what it shares with them is in testkit/)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kube2haproxy"


def modules() -> set[str]:
    """Dotted names of the package's modules; a subpackage is its `__init__`."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.add(".".join(parts))
    return found


def layers() -> list[set[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [
        {name.strip() for name in layer.replace("|", ":").split(":")}
        for layer in contract["layers"]
    ]


def test_every_module_is_in_a_layer():
    named = set().union(*layers())
    unplaced = {
        module
        for module in modules() - {"kube2haproxy"}
        if not any(module == name or module.startswith(name + ".") for name in named)
    }
    assert not unplaced, f"place these in a layer of pyproject.toml: {sorted(unplaced)}"


def test_every_layer_names_modules_that_exist():
    for layer in layers():
        for name in layer:
            assert name in modules(), name


def test_the_core_is_what_the_purity_contract_covers():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (pure,) = [c for c in config["contracts"] if c["name"].startswith("The core does no I/O")]
    assert set(pure["source_modules"]) == layers()[-1]


def test_bench_imports_nothing_from_tests():
    imported = {
        (path.name, name)
        for path in (ROOT / "bench").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and not node.level
            else []
        )
    }
    assert imported, "bench/ has scripts that import"
    assert not {(f, n) for f, n in imported if n == "tests" or n.startswith("tests.")}
