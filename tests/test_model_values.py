"""The model's value classes (model.value_class) are plain slots at run time, for speed, and
frozen only for the type checker: mypy, strict, as scripts/check runs it. Here, the real mypy
must refuse an assignment to a field of each of them, or the model is no longer immutable."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import kube2haproxy
from kube2haproxy import model

ROOT = Path(__file__).resolve().parents[1]


def value_classes() -> list[tuple[str, str, str]]:
    """(module, class, first field) of each value class of the package (every module imported
    first, so that none is missed)."""
    for module in pkgutil.walk_packages(kube2haproxy.__path__, "kube2haproxy."):
        importlib.import_module(module.name)
    return [
        (cls.__module__, cls.__name__, dataclasses.fields(cls)[0].name)
        for cls in model.VALUE_CLASSES
    ]


def test_the_models_value_classes_are_found():
    names = {cls for _, cls, _ in value_classes()}
    assert {"Backend", "Frontend", "Bind", "ServiceEntry", "Model", "ServiceResult"} <= names


def test_mypy_refuses_an_assignment_to_any_value_class(tmp_path):
    classes = value_classes()
    lines = ["from typing import Any", ""]
    for i, (module, cls, field) in enumerate(classes):
        lines += [
            f"from {module} import {cls} as C{i}",
            f"def assign{i}(value: C{i}, new: Any) -> None:",
            f"    value.{field} = new",
        ]
    snippet = tmp_path / "assign.py"
    snippet.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    refused = re.findall(r'Property "(\w+)" defined in "(\w+)" is read-only', result.stdout)
    assert sorted(refused) == sorted((field, cls) for _, cls, field in classes), result.stdout
