"""render: the model becomes haproxy.cfg text through Jinja2 templates. It only formats.

Templates are looked up in the user's directory first (`--templates`), then in the bundled ones, so
a user overrides a single file. Undefined variables are errors (StrictUndefined), reported with
the template file and line. As a second line of defence behind the model's strict grammars, every
`{{ value }}` must be a number or a string of characters that cannot start a new line, a comment,
a quoted string or a new word in haproxy.cfg; anything else stops the render.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2

from kube2haproxy.errors import TemplateError
from kube2haproxy.model import Model
from kube2haproxy.settings import RENDER_RUNTIME_SOCKET, RenderSettings

MAIN_TEMPLATE = "haproxy.cfg.j2"
BUNDLED = Path(__file__).parent / "templates"

_safe = re.compile(r"[A-Za-z0-9_.:/\[\]@%?=&+,~!*-]{1,4096}").fullmatch
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))


class UnsafeValueError(ValueError):
    pass


def duration(ms: int) -> str:
    """Milliseconds in HAProxy's syntax, in the largest unit that divides them: 90000 -> 90s."""
    for unit, size in _UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _guard(value: Any) -> Any:
    """Jinja's finalize hook: runs on every `{{ }}` result, so the common cases come first."""
    kind = type(value)
    if kind is str:
        if _safe(value):
            return value
    elif kind is int:
        return value
    elif isinstance(value, jinja2.Undefined):
        return value  # printing it raises StrictUndefined's own, clearer error
    elif (isinstance(value, str) and _safe(value)) or (  # enumerations (StrEnum)
        isinstance(value, int) and not isinstance(value, bool)
    ):
        return value
    raise UnsafeValueError(
        f"refusing to print {ascii(value)[:80]} into haproxy.cfg: only numbers and strings of "
        "[A-Za-z0-9_.:/[]@%?=&+,~!*-] may be substituted"
    )


class Renderer:
    """A Jinja2 environment built once, rendering models to config text."""

    def __init__(self, settings: RenderSettings) -> None:
        if settings.runtime_socket is None:  # `run` derives it from the master socket
            settings = replace(settings, runtime_socket=RENDER_RUNTIME_SOCKET)
        self._settings = settings
        loaders: list[jinja2.BaseLoader] = []
        if settings.templates:
            directory = Path(settings.templates)
            if not directory.is_dir():
                raise TemplateError(f"--templates {directory}: not a directory")
            loaders.append(jinja2.FileSystemLoader(directory))
        loaders.append(jinja2.FileSystemLoader(BUNDLED))
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - haproxy.cfg, not HTML; values are checked by _guard
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            finalize=_guard,
            auto_reload=False,
        )
        self._env.filters["duration"] = duration
        try:
            # Compile every template now: a syntax error in an included one is reported before
            # any work, not after the cluster was loaded and translated.
            for name in self._env.list_templates(extensions=["j2"]):
                self._env.get_template(name)
            self._template = self._env.get_template(MAIN_TEMPLATE)
        except jinja2.TemplateError as exc:
            raise TemplateError(_describe(exc)) from exc

    def render(self, model: Model) -> str:
        try:
            text = self._template.render(model=model, settings=self._settings)
        except Exception as exc:  # a user template can raise anything; report it with its place
            raise TemplateError(_describe(exc)) from exc
        # Block tags swallow the last newline; a config file ends with one.
        return text if text.endswith("\n") else text + "\n"


def _describe(exc: BaseException) -> str:
    """`<template file>:<line>: <what went wrong>`, from Jinja's error or its traceback."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = exc.filename or exc.name or "<template>"
        return f"{where}:{exc.lineno}: syntax error: {exc.message}"
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"template not found: {exc.name}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    what = (
        f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, jinja2.UndefinedError)
        else (f"undefined variable: {exc.message}")
    )
    if frames:
        return f"{frames[-1].filename}:{frames[-1].lineno}: {what}"
    return what
