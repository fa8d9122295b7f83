"""render: the model becomes haproxy.cfg text through Jinja2 templates. It only formats.

Templates are looked up in the user's directory first (`--templates`), then in the bundled ones, so
a user overrides a single file. The file is the head (haproxy.cfg.j2: global and defaults, from
the settings), then the frontends and the backends, each rendered by runs of consecutive items
(frontends.j2, backends.j2). A run's text is cached on the identity of its items: the model
keeps unchanged frontends and backends as the very same objects, so after an endpoint change
only the run holding that backend is rendered again. Runs end after items whose name hashes to a
multiple of RUN, so an added or removed item changes one run, not all those after it. When only
some items were replaced by others of the same names (endpoint churn), the runs they fall in are
found from the last render's layout and the rest is its text again; where a section's template
prints each item alone (`_itemwise`: one loop over them, nothing before, after or across
items), such a run is kept item by item once touched and only the replaced items are rendered
again. O(changed items) of Python, and one join of the file's parts.

Undefined variables are errors (StrictUndefined), reported with
the template file and line. As a second line of defence behind the model's strict grammars, every
`{{ value }}` must be a number or a string of characters that cannot start a new line, a comment,
a quoted string or a new word in haproxy.cfg; anything else stops the render.
"""

from __future__ import annotations

import importlib.util
import operator
import re
import traceback
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes

from kube2haproxy.deployed import spare_pool
from kube2haproxy.errors import TemplateError, UnsafeValueError
from kube2haproxy.layouts import layout
from kube2haproxy.model import Backend, Model, Server, ServerState
from kube2haproxy.settings import RenderPaths, RenderSettings

MAIN_TEMPLATE = "haproxy.cfg.j2"
SERVER_TEMPLATE = "server.j2"


def _bundled() -> Path:
    """The bundled templates: the package kube2haproxy.templates once installed (wheel or
    editable), else a bare checkout's top-level templates/ folder."""
    spec = importlib.util.find_spec("kube2haproxy.templates")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[1] / "templates"


BUNDLED = _bundled()

_SAFE = r"[A-Za-z0-9_.:/\[\]@%?=&+,~!*-]{1,4096}"
_safe = re.compile(_SAFE).fullmatch
_map_text = re.compile(rf"(?:{_SAFE} {_SAFE}\n)*").fullmatch
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))


def duration(ms: int) -> str:
    """Milliseconds in HAProxy's syntax, in the largest unit that divides them: 90000 -> 90s."""
    if ms == 0:
        return "0"
    for unit, size in _UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


class Lines(str):
    """Config lines the renderer built from guarded values (`server_lines`): printed as they
    are. Only the renderer makes them; any operation on one in a template gives a plain str,
    which the guard checks."""

    __slots__ = ()


def _guard(value: Any) -> Any:
    """Jinja's finalize hook: runs on every `{{ }}` result, so the common cases come first."""
    kind = type(value)
    if kind is str:
        if _safe(value):
            return value
    elif kind is int or kind is Lines:
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

    def __init__(self, settings: RenderSettings, paths: RenderPaths | None = None) -> None:
        """`paths`: what the config names (resolved by the caller: `run` from the master
        socket and the config file, `render` from its output)."""
        self._settings = settings
        self._paths = paths or RenderPaths()
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
        self._env.globals["server_lines"] = self._server_lines
        try:
            # Compile every template now: a syntax error in an included one is reported before
            # any work, not after the cluster was loaded and translated.
            for name in self._env.list_templates(extensions=["j2"]):
                self._env.get_template(name)
            self._template = self._env.get_template(MAIN_TEMPLATE)
            self._server = self._env.get_template(SERVER_TEMPLATE)
            self._stamping = _stampable(self._env, SERVER_TEMPLATE)
        except jinja2.TemplateError as exc:
            raise TemplateError(_describe(exc)) from exc
        self._stamps: dict[object, tuple[str, tuple[int, ...]]] = {}
        self._checked: set[str] = set()  # server names the guard passed
        self._maps_checked: dict[str, str] = {}  # the last config's map files, checked
        self._layout = layout(settings.frontend_layout)
        try:
            self._itemwise = {
                name: _itemwise(self._env, name, variable)
                for name, variable in (
                    (self._layout.template, self._layout.variable),
                    ("backends.j2", "backends"),
                )
            }
        except jinja2.TemplateError as exc:
            raise TemplateError(_describe(exc)) from exc
        # Spare backends: only where a new service can be routed at runtime.
        self.pool = spare_pool(settings.spare_backends) if self._layout.runtime_routes else ()
        self._options: dict[str, tuple[Backend, str]] = {}
        self._head: str | None = None
        self._runs: dict[tuple[int, ...], tuple[tuple[object, ...], str]] = {}
        self._boundaries: dict[str, bool] = {}  # does a run end after this name
        self._laid: dict[str, _Section] = {}  # the last render of each section, by template

    def render(self, model: Model) -> str:
        context = {"settings": self._settings, "paths": self._paths, "layout": self._layout}
        try:
            if self._head is None:
                self._head = self._template.render(context)
            cache: dict[tuple[int, ...], tuple[tuple[object, ...], str]] = {}
            if len(self._stamps) > 4 * len(model.backends) + 64:
                self._stamps.clear()  # a template reading per-backend values: keep them bounded
            parts = [self._head]
            sections = (
                (self._layout.template, self._layout.variable, self._layout.items(model)),
                ("backends.j2", "backends", model.backends + self.pool),
            )
            laid: dict[str, _Section] = {}
            full = False  # a section laid out again: the run cache becomes this model's
            for template_name, name, items in sections:
                template = self._env.get_template(template_name)

                def render_run(
                    run: tuple[Any, ...], name: str = name, template: jinja2.Template = template
                ) -> str:
                    return template.render({**context, name: run})

                section = self._relaid(
                    self._laid.get(template_name),
                    items,
                    render_run,
                    itemwise=self._itemwise[template_name],
                )
                if section is None:
                    full = True
                    starts: list[int] = []
                    texts: list[str] = []
                    start = 0
                    for run in _runs(items, self._boundaries):
                        key = tuple(map(id, run))
                        hit = self._runs.get(key) or cache.get(key)
                        if hit is None:
                            hit = (run, render_run(run))
                        cache[key] = hit
                        starts.append(start)
                        texts.append(hit[1])
                        start += len(run)
                    section = _Section(items, starts, texts, {})
                laid[template_name] = section
                parts.extend(section.texts)
        except Exception as exc:  # a user template can raise anything; report it with its place
            raise TemplateError(_describe(exc)) from exc
        if full:
            for section in laid.values():  # those relaid: their runs are in `_runs`
                ends = [*section.starts[1:], len(section.items)][: len(section.starts)]
                for start, end in zip(section.starts, ends, strict=True):
                    key = tuple(map(id, section.items[start:end]))
                    hit = self._runs.get(key)  # (none after a render that failed half-way)
                    if hit is not None and key not in cache:
                        cache[key] = hit
            self._runs = cache  # what this model used: the rest would only pin dead objects
        self._laid = laid
        text = "".join(parts)
        # Block tags swallow the last newline; a config file ends with one.
        return text if text.endswith("\n") else text + "\n"

    def _relaid(
        self,
        last: _Section | None,
        items: tuple[Any, ...],
        render_run: Callable[[tuple[Any, ...]], str],
        *,
        itemwise: bool,
    ) -> _Section | None:
        """`last` with the runs that hold replaced items rendered again, when `items` are the
        last render's with some replaced by others of the same names (so the runs keep their
        bounds); None otherwise (the runs are then laid out again). `itemwise`: the template
        prints each item alone, so a run is its items' texts joined: those of a run touched
        before are kept, and only the replaced items are rendered. The run cache (`_runs`)
        is kept up to date for a full layout later."""
        if last is None or len(last.items) != len(items):
            return None
        if last.items is items:
            return last
        before = last.items
        changed = list(compress(range(len(items)), map(operator.is_not, before, items)))
        if len(changed) > len(last.starts) // 2:
            return None  # most runs change: as cheap to lay them out again
        if any(items[i].name != before[i].name for i in changed):
            return None
        starts, texts, pieces = last.starts, list(last.texts), dict(last.pieces)
        for index in sorted({bisect_right(starts, i) - 1 for i in changed}):
            start = starts[index]
            end = starts[index + 1] if index + 1 < len(starts) else len(items)
            old, run = before[start:end], items[start:end]
            self._runs.pop(tuple(map(id, old)), None)
            if itemwise:
                kept = pieces.get(index)
                texts_of = list(kept) if kept is not None else [render_run((i,)) for i in old]
                for offset, (was, item) in enumerate(zip(old, run, strict=True)):
                    if was is not item:
                        texts_of[offset] = render_run((item,))
                pieces[index] = texts_of
                texts[index] = "".join(texts_of)
            else:
                texts[index] = render_run(run)
            self._runs[tuple(map(id, run))] = (run, texts[index])
        return _Section(items, starts, texts, pieces)

    def _server_lines(self, backend: object) -> Lines:
        """The server lines of a backend (server.j2, once per line): backends.j2 prints them
        with `{{ server_lines(be) }}`. When server.j2 uses a server only in ways `_stampable`
        allows, it is rendered once per server state and backend settings it reads (a stamp),
        and each line is the stamp filled with the server's own values, each guarded."""
        if not isinstance(backend, Backend):
            raise TypeError("server_lines() takes a backend")
        context = {"settings": self._settings, "paths": self._paths, "layout": self._layout}
        if self._stamping is None:
            render = self._server.render
            return Lines(
                "".join(render({**context, "be": backend, "s": s}) for s in backend.servers)
            )
        reads = self._stamping
        try:
            key: object = tuple(getattr(backend, name) for name in reads)
            hash(key)
            stamps = self._stamps
        except TypeError:  # an attribute without a value to compare: stamps for this backend
            key, stamps = backend, {}
        checked = self._checked
        lines = []
        mine: dict[ServerState, tuple[str, tuple[int, ...]]] = {}  # this backend's, by state
        for server in backend.servers:
            state = server.state
            stamp = mine.get(state)
            if stamp is None:
                stamp = stamps.get((key, state))
                if stamp is None:
                    stamp = stamps[(key, state)] = self._stamp(context, backend, state)
                mine[state] = stamp
            text, fields = stamp
            if fields == _NAME_ADDRESS:  # the bundled template: the hot path
                name, address = server.name, server.address
                if name not in checked:
                    checked.add(_guard(name))
                if not _safe(address):
                    _guard(address)  # raises
                lines.append(text % (name, address))
            else:
                lines.append(text % tuple(_guard(server[i]) for i in fields))
        return Lines("".join(lines))

    def _stamp(
        self, context: dict[str, object], backend: Backend, state: ServerState
    ) -> tuple[str, tuple[int, ...]]:
        """server.j2 for a server of `backend` in `state`, as a %-format and the fields of
        Server it prints, in order."""
        probe = tuple.__new__(Server, (*_MARKS, state))
        parts = _MARKED.split(self._server.render({**context, "be": backend, "s": probe}))
        fields = tuple(_MARKS.index(mark) for mark in parts[1::2])
        return "%s".join(part.replace("%", "%%") for part in parts[0::2]), fields

    def server_options(self, backend: Backend) -> str:
        """The options of `backend`'s server lines as rendered (its first line, without the
        name, the address and the state words `disabled` and `weight 0`): what a line added at
        runtime is given, so that it runs as a reload would load it."""
        known = self._options.get(backend.name)
        if known is not None and known[0] is backend:
            return known[1]
        context = {"settings": self._settings, "paths": self._paths, "layout": self._layout}
        try:
            text = self._env.get_template("backends.j2").render({**context, "backends": (backend,)})
        except Exception as exc:
            raise TemplateError(_describe(exc)) from exc
        line = next((w for w in map(str.split, text.splitlines()) if w[:1] == ["server"]), None)
        if line is None or len(line) < 3:
            raise TemplateError(f"backends.j2 rendered no server line for backend {backend.name}")
        words = line[3:]
        if words[:1] == ["disabled"]:
            words = words[1:]
        elif words[:2] == ["weight", "0"]:
            words = words[2:]
        options = " ".join(words)
        self._options[backend.name] = (backend, options)
        return options

    @property
    def maps_dir(self) -> Path:
        return Path(self._paths.maps_dir)

    def files(self, model: Model) -> dict[str, str]:
        """The files the config refers to (the layout's maps), by name in the maps directory
        (`maps_dir`). Their names carry a hash of their content."""
        files = {}
        for name, (text, lines) in self._layout.maps(model).items():
            # They are HAProxy's input too: every key and value is drawn from the same
            # alphabet as every `{{ value }}` of the templates, and there is one line per
            # entry, so none can add a word or a line (one pass of the regex engine). A text
            # checked for the last config is not checked again (endpoint churn keeps them).
            if self._maps_checked.get(name) != text and (
                not _map_text(text) or text.count("\n") != lines
            ):
                raise TemplateError(
                    f"map {name}: refusing to print a line that is not one `key value` of "
                    "[A-Za-z0-9_.:/[]@%?=&+,~!*-] per entry"
                )
            files[name] = text
        self._maps_checked = files
        return files


RUN = 32  # average items per cached run


@dataclass(frozen=True, slots=True)
class _Section:
    """How a section was last rendered: its items, where each run starts, each run's text, and
    the texts of each item of the runs rendered item by item since it was laid out (by run)."""

    items: tuple[Any, ...]
    starts: list[int]
    texts: list[str]
    pieces: dict[int, list[str]]


# Stand-ins for a server's name, ip, port and address (Server's first fields) while a stamp is
# rendered: strings the guard lets through, found in no template (checked), nor in any model
# value (they have no Kubernetes shape: an IP, a DNS label or a name with `_`).
_MARKS = ("K2H0NAME0MARK", "K2H0IP0MARK", "K2H0PORT0MARK", "K2H0ADDRESS0MARK")
_MARKED = re.compile("(" + "|".join(_MARKS) + ")")
_PRINTED = {"name", "ip", "port", "address"}  # as `{{ s.<attr> }}` only
_NAME_ADDRESS = (0, 3)
_READ = {"state", "parked"}  # anywhere
# Where the server could be used out of sight (another template), or printed text captured and
# changed (a filter block, `set` block, macro or call block; autoescape).
_UNSTAMPABLE = (
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.Extends,
    nodes.Block,
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.AssignBlock,
    nodes.EvalContextModifier,
)


def _stampable(env: jinja2.Environment, name: str) -> tuple[str, ...] | None:
    """Whether the server template can be rendered once and filled in (see `_server_lines`),
    and then the backend attributes it reads. It can when `s` (the server) is used only as
    `s.state` or `s.parked`, whose value the stamp is rendered with, and printed as
    `{{ s.name }}`, `{{ s.address }}`, `{{ s.ip }}` or `{{ s.port }}` alone, which then decide
    nothing but the text in their place; when `be` is used only as `be.<attribute>` (not
    `be.servers`); and when nothing is included, imported or captured (_UNSTAMPABLE). None
    otherwise: the template is rendered once per server."""
    assert env.loader is not None
    source = env.loader.get_source(env, name)[0]
    if any(mark in source for mark in _MARKS):
        return None
    reads: set[str] = set()

    def fine(node: nodes.Node, parent: nodes.Node | None, grand: nodes.Node | None) -> bool:
        if isinstance(node, _UNSTAMPABLE):
            return False
        if isinstance(node, nodes.Name) and node.name == "s":
            if node.ctx != "load" or not isinstance(parent, nodes.Getattr):
                return False
            if parent.attr in _READ:
                return True
            return parent.attr in _PRINTED and isinstance(grand, nodes.Output)
        if isinstance(node, nodes.Name) and node.name == "be":
            if node.ctx != "load" or not isinstance(parent, nodes.Getattr):
                return False
            if parent.attr == "servers":
                return False
            reads.add(parent.attr)
        return all(fine(child, node, parent) for child in node.iter_child_nodes())

    if not fine(env.parse(source), None, None):
        return None
    return tuple(sorted(reads))


def _itemwise(env: jinja2.Environment, name: str, variable: str) -> bool:
    """Whether the section template `name` prints each item of `variable` alone, so that
    rendering a run is rendering each of its items and joining the texts: its whole body is one
    `{% for x in <variable> %}` (no `else`, filter or recursion) whose body, and every template
    it includes (by a constant name), reads neither `loop` nor `<variable>`. A loop body's
    `set` is the iteration's own; a namespace could only be made inside it."""
    assert env.loader is not None
    body = env.parse(env.loader.get_source(env, name)[0]).body
    if len(body) != 1 or not isinstance(body[0], nodes.For):
        return False
    loop = body[0]
    if not (
        isinstance(loop.iter, nodes.Name)
        and loop.iter.name == variable
        and isinstance(loop.target, nodes.Name)
        and not loop.else_
        and loop.test is None
        and not loop.recursive
    ):
        return False
    seen: set[tuple[str, bool]] = set()

    def plain(node: nodes.Node, inner: bool) -> bool:
        """Neither `variable` nor the outer `loop` read in `node` (`inner`: inside a loop of
        the body's own, where `loop` is that loop's)."""
        if isinstance(node, nodes.Name):
            return node.name != variable and (inner or node.name != "loop")
        if isinstance(node, nodes.For):
            outer = [node.target, node.iter, *node.else_, *([node.test] if node.test else [])]
            return all(plain(n, inner) for n in outer) and all(plain(n, True) for n in node.body)
        if isinstance(node, nodes.Include | nodes.Import | nodes.FromImport | nodes.Extends):
            template = node.template
            if not isinstance(template, nodes.Const) or not isinstance(template.value, str):
                return False
            if (template.value, inner) not in seen:
                seen.add((template.value, inner))
                try:
                    source = env.loader.get_source(env, template.value)[0]  # type: ignore[union-attr]
                except jinja2.TemplateNotFound:
                    return False  # `ignore missing`, or an error Jinja reports when rendering
                if not plain(env.parse(source), inner):
                    return False
        return all(plain(child, inner) for child in node.iter_child_nodes())

    return all(plain(node, False) for node in loop.body)


def _runs(items: tuple[Any, ...], boundaries: dict[str, bool]) -> Iterator[tuple[Any, ...]]:
    start = 0
    for i, item in enumerate(items):
        name = item.name
        end = boundaries.get(name)
        if end is None:
            end = boundaries[name] = zlib.crc32(name.encode()) % RUN == 0
        if end:
            yield items[start : i + 1]
            start = i + 1
    if start < len(items):
        yield items[start:]


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
