"""manifests: Services, EndpointSlices and Endpoints read from YAML or JSON files.

Reads files, directories (recursively, in sorted order, *.yaml, *.yml and *.json, hidden entries
skipped) and standard input ("-"). Accepts multi-document YAML, `kind: List` and typed lists
(`ServiceList` from the raw API, whose items carry no kind). Other kinds are ignored quietly. A file
that does not parse is an `InputError` naming the file and the line; the live source (serve) keeps
the last good content of such a file.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from kube2haproxy.errors import InputError
from kube2haproxy.findings import Finding, warning
from kube2haproxy.resources import JSON, FieldError, Key, Kind, key_of, kind_of
from kube2haproxy.store import Event, EventType, differences

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")
MAX_LIST_DEPTH = 4

# libyaml's parser is ~10x faster on large dumps; PyYAML without libyaml falls back.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(slots=True)
class Manifests:
    """Objects by kind and key, last definition wins, plus what was wrong with the input."""

    objects: dict[tuple[Kind, Key], JSON] = field(default_factory=dict)
    origins: dict[tuple[Kind, Key], str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add(self, origin: str, documents: Iterable[object]) -> None:
        for obj, where in _objects(documents, origin):
            kind = kind_of(obj)
            if kind is None:
                continue
            try:
                key = key_of(obj)
            except FieldError as exc:
                self.findings.append(warning(where, exc.field, f"{exc.message}; object ignored"))
                continue
            ident = (kind, key)
            if ident in self.objects:
                self.findings.append(
                    warning(
                        where,
                        "",
                        f"{kind.value} {key} also defined in {self.origins[ident]}; "
                        "the later definition is used",
                    )
                )
            self.objects[ident] = obj
            self.origins[ident] = where


def load(paths: Sequence[str], *, stdin: TextIO | None = None) -> Manifests:
    """Every supported object from the given files, directories and "-" (standard input)."""
    manifests = Manifests()
    for path in paths:
        if path == "-":
            stream = stdin if stdin is not None else sys.stdin
            manifests.add("<stdin>", parse_text(stream.read(), origin="<stdin>"))
            continue
        for file in expand(Path(path)):
            manifests.add(str(file), read_file(file))
    return manifests


def expand(path: Path) -> list[Path]:
    """A file as itself; a directory as its manifest files, recursively and sorted."""
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.suffix.lower() in SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if path.is_file():
        return [path]
    raise InputError(f"{path}: no such file or directory")


def read_file(path: Path) -> list[object]:
    """The documents of one file; InputError when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    return parse_text(text, origin=str(path), json_first=path.suffix.lower() == ".json")


def parse_text(text: str, *, origin: str, json_first: bool | None = None) -> list[object]:
    """YAML (multi-document) or JSON text as a list of documents."""
    if json_first is None:
        json_first = text.lstrip()[:1] in ("{", "[")
    json_error: json.JSONDecodeError | None = None
    if json_first:
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            if origin.endswith(".json"):
                raise _json_error(origin, exc) from exc
            json_error = exc  # stdin that looked like JSON may still be YAML ({a: b})
    try:
        return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as exc:
        if json_error is not None:  # it looked like JSON and is neither: JSON's error helps more
            raise _json_error(origin, json_error) from exc
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark is not None else origin
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{where}: invalid YAML: {problem}") from exc


def _json_error(origin: str, exc: json.JSONDecodeError) -> InputError:
    return InputError(f"{origin}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")


def _objects(documents: Iterable[object], origin: str) -> Iterator[tuple[JSON, str]]:
    for index, doc in enumerate(documents, start=1):
        where = origin if index == 1 else f"{origin} (document {index})"
        yield from _flatten(doc, where, depth=0)


def _flatten(doc: object, where: str, depth: int) -> Iterator[tuple[JSON, str]]:
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    items = doc.get("items")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
        if depth >= MAX_LIST_DEPTH:
            return
        item_kind = kind[: -len("List")]
        for item in items:
            if isinstance(item, dict) and item_kind and "kind" not in item:
                # Typed lists from the raw API (ServiceList) leave kind out of their items.
                typed = {**item, "kind": item_kind, "apiVersion": doc.get("apiVersion")}
                yield from _flatten(typed, where, depth + 1)
            else:
                yield from _flatten(item, where, depth + 1)
        return
    yield doc, where


class ManifestSource:
    """The manifests as a live source: loads the paths, then follows them with watchdog.

    After any change under the paths (debounced), every file is read again and the differences
    with what was emitted are sent as events, deletions included. A file that does not parse is
    reported and its last good content kept, so a half-saved edit never empties the cluster."""

    def __init__(self, paths: Sequence[str], *, debounce_s: float = 0.2) -> None:
        self.paths = list(paths)
        self.names: tuple[str, ...] = ("manifests",)
        self._debounce_s = debounce_s
        self._good: dict[Path, list[object]] = {}
        self._emitted: dict[tuple[Kind, Key], JSON] = {}
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self.reloads = 0

    def start(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        # Follow first, then read: a change made while we read is then noticed, not lost.
        self._observer = Observer()
        handler = _Poke(self._changed)
        for directory in sorted({self._watch_root(Path(p)) for p in self.paths}):
            self._observer.schedule(handler, str(directory), recursive=True)
        self._observer.start()
        self._sync()
        emit(Event(EventType.SYNCED, "manifests"))
        self._thread = threading.Thread(target=self._follow, name="manifests", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    @staticmethod
    def _watch_root(path: Path) -> Path:
        return path if path.is_dir() else path.parent

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.is_set():
                return
            # Editors write in several steps: wait for the burst to end.
            while self._changed.is_set():
                self._changed.clear()
                if self._stop.wait(self._debounce_s):
                    return
            try:
                self._sync()
            except Exception:
                log.exception("cannot reload the manifests; keeping the last good state")

    def _sync(self) -> None:
        manifests = Manifests()
        files: list[Path] = []
        for path in self.paths:
            try:
                files.extend(expand(Path(path)))
            except InputError as exc:
                log.warning("%s", exc)
        current: dict[Path, list[object]] = {}
        for file in files:
            try:
                current[file] = read_file(file)
            except InputError as exc:
                if file in self._good:
                    log.warning("%s; keeping its last good content", exc)
                    current[file] = self._good[file]
                else:
                    log.warning("%s; ignored until it parses", exc)
        self._good = current
        for file, documents in current.items():
            manifests.add(str(file), documents)
        for finding in manifests.findings:
            log.warning("%s", finding)
        self.reloads += 1
        for event in differences(
            "manifests", self._emitted, manifests.objects, same=lambda a, b: a == b
        ):
            self._emit(event)
        self._emitted = dict(manifests.objects)


class _Poke(FileSystemEventHandler):
    def __init__(self, changed: threading.Event) -> None:
        self._changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
        if event.is_directory or any(p.lower().endswith(SUFFIXES) for p in paths):
            self._changed.set()
