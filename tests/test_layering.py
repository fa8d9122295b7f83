"""The layering of DESIGN.md, enforced: a pure core that does no I/O, and one importer per
heavy dependency. Every module must be classified here, so a new one cannot slip past."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kube2haproxy"

# Pure modules: values and functions of values (settings and errors are plain declarations).
CORE = {
    "capabilities",
    "dns",
    "errors",
    "findings",
    "grammar",
    "keepalived",
    "layouts",
    "layouts.per_port",
    "layouts.per_service",
    "model",
    "names",
    "plan",
    "resources",
    "schedule",
    "settings",
    "slots",
    "store",
    "translate",
    "tuning",
    "unbindable",
    "vips",
}
EDGE = {
    "__init__",
    "appliers",
    "appliers.cli_socket",
    "appliers.master",
    "appliers.master_cli",
    "appliers.recording",
    "appliers.runtime",
    "appliers.supervisor",
    "cli",
    "configfile",
    "controller",
    "health",
    "heap",
    "kube",
    "lock",
    "logs",
    "manifests",
    "metrics",
    "probes",
    "publish",
    "render",
    "runner",
    "sockets",
}

# No I/O, no clock, no processes, no threads, no randomness, no logging in the core.
IMPURE = {
    "asyncio",
    "jinja2",
    "kubernetes",
    "logging",
    "os",
    "pathlib",
    "prometheus_client",
    "random",
    "requests",
    "shutil",
    "socket",
    "subprocess",
    "sys",
    "tempfile",
    "threading",
    "time",
    "watchdog",
    "yaml",
    "datetime",
    "urllib",
    "http",
    "io",
    "gc",
}
ONLY = {
    "kubernetes": {"kube"},
    "jinja2": {"render"},
    "watchdog": {"manifests"},
    "prometheus_client": {"metrics", "probes"},
}


def source(module: str) -> Path:
    path = PACKAGE / f"{module.replace('.', '/')}.py"
    return path if path.exists() else PACKAGE / module.replace(".", "/") / "__init__.py"


def imports(module: str) -> set[str]:
    tree = ast.parse(source(module).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "kube2haproxy":
                found |= {f"kube2haproxy.{alias.name}" for alias in node.names}
    return found


def modules() -> set[str]:
    """Dotted names below the package; a subpackage is its `__init__`."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found.add(".".join(parts))
    return found


def test_every_module_is_classified():
    assert modules() == CORE | EDGE | (modules() & set().union(*ONLY.values())), (
        f"classify: {sorted(modules() - CORE - EDGE)}"
    )


def test_core_imports_nothing_impure_and_no_edge_module():
    for module in CORE:
        for name in imports(module):
            top = name.split(".")[0]
            assert top not in IMPURE, f"{module} imports {name}"
            if name.startswith("kube2haproxy."):
                assert name.removeprefix("kube2haproxy.") in CORE, f"{module} imports {name}"


def test_heavy_dependencies_have_one_importer():
    for dependency, allowed in ONLY.items():
        importers = {m for m in modules() if any(n.split(".")[0] == dependency for n in imports(m))}
        assert importers <= allowed, f"{dependency} imported by {sorted(importers - allowed)}"


def test_the_checker_sees_imports():
    """The rules above would notice a violation: render does import jinja2."""
    assert "jinja2" in imports("render")
    assert "kube2haproxy.tuning" in imports("translate")
