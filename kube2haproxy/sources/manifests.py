"""manifests: Services, EndpointSlices and Endpoints read from YAML or JSON files.

Reads files, directories (recursively, in sorted order, *.yaml, *.yml and *.json, hidden entries
skipped) and standard input ("-"). Accepts multi-document YAML, `kind: List` and typed lists
(`ServiceList` from the raw API, whose items carry no kind). Other kinds are ignored quietly. A file
that does not parse is an `InputError` naming the file and the line; the live source (serve) keeps
the last good content of such a file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from kube2haproxy import gc_tuning
from kube2haproxy.errors import FieldError, InputError
from kube2haproxy.events import Event, EventType, differences
from kube2haproxy.findings import Finding, warning
from kube2haproxy.resources import JSON, Key, Kind, cut, key_of, kind_of

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")
MAX_LIST_DEPTH = 4

# Aliases let a 1 KB document stand for billions of nodes (nine levels of nine aliases): every
# later walk (comparison, pruning) would pay for the expansion. Kubernetes never writes aliases
# (kubectl, the API and JSON cannot); a hand-written file may share a few labels through them.
MAX_ALIASES = 10_000  # alias references per document
MAX_ALIAS_EXPANSION = 1_000_000  # nodes that aliases add to a document once expanded

# libyaml's parser is ~10x faster on large dumps; PyYAML without libyaml falls back.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader, refusing documents whose aliases expand them past the limits above
    before anything is built from them (the composed node graph shares aliased nodes)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_aliases(node)
        return super().construct_document(node)


def _check_aliases(root: yaml.Node) -> None:
    """Count the alias references of a composed document and the nodes they add once
    expanded, without expanding anything (each node is sized once). yaml.YAMLError when a
    limit is passed or an alias refers to a node containing it (a recursive document)."""
    sizes: dict[int, int | None] = {}  # id(node) -> its expanded size; None while open
    aliases = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: documents may nest deeper than Python recursion
        node, closing = stack.pop()
        ident = id(node)
        if closing:
            sizes[ident] = 1 + sum(sizes[id(child)] or 0 for child in _children(node))
            continue
        if ident in sizes:
            if sizes[ident] is None:
                raise _alias_error(node, "an alias refers to a node that contains it")
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _alias_error(node, f"more than {MAX_ALIASES:,} aliases")
            continue
        sizes[ident] = None
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(_children(node)))
    added = (sizes[id(root)] or 0) - len(sizes)
    if added > MAX_ALIAS_EXPANSION:
        raise _alias_error(
            root,
            f"aliases expand the document by {added:,} nodes (at most {MAX_ALIAS_EXPANSION:,})",
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


class AliasLimitError(yaml.MarkedYAMLError):
    """A document's aliases pass MAX_ALIASES or MAX_ALIAS_EXPANSION, or recurse."""


def _alias_error(node: yaml.Node, problem: str) -> AliasLimitError:
    return AliasLimitError(problem=problem, problem_mark=node.start_mark)


@dataclass(slots=True)
class Manifests:
    """Objects by kind and key, last definition wins, plus what was wrong with the input."""

    objects: dict[tuple[Kind, Key], JSON] = field(default_factory=dict)
    origins: dict[tuple[Kind, Key], str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add(self, origin: str, documents: Iterable[object]) -> None:
        self.add_objects(supported(documents, origin))

    def add_objects(self, objects: Iterable[tuple[Kind, JSON, str]]) -> None:
        """Objects from `supported`, each with where it was read."""
        for kind, obj, where in objects:
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


def supported(
    documents: Iterable[object], origin: str, *, live: bool = False, done: Container[int] = ()
) -> Iterator[tuple[Kind, JSON, str]]:
    """The objects of the supported kinds in a file's documents, with their kind and where they
    were read (other kinds are ignored quietly). `live`: each cut down in place to what is read
    (resources.cut), and the documents consumed as they are read (a live source keeps the
    objects only, not twice the memory), but for those whose id is in `done` (cut already)."""
    for obj, where in _objects(documents, origin, consume=live):
        kind = kind_of(obj)
        if kind is None:
            continue
        if live and id(obj) not in done:
            cut(kind, obj, intern=sys.intern)
        _normalize_created(obj)
        yield kind, obj, where


def _normalize_created(obj: JSON) -> None:
    """metadata.creationTimestamp in the one form the API writes (RFC 3339, UTC, "Z", whole
    seconds): a hand-written manifest may carry an offset, or an unquoted value that YAML reads
    as a datetime. Older services win address conflicts, so the texts must compare as the
    times do. Anything else is left for translate to ignore."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return
    value = meta.get("creationTimestamp")
    if isinstance(value, str) and not value.endswith("Z"):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # YAML's timestamps without an offset are UTC
            value = value.replace(tzinfo=datetime.UTC)
        meta["creationTimestamp"] = value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    return parse_bytes(data, origin=str(path), json_first=_is_json(path))


def _is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def parse_bytes(data: bytes, *, origin: str, json_first: bool | None = None) -> list[object]:
    """The documents of a file's bytes (UTF-8, with or without a byte order mark)."""
    return parse_text(decode(data, origin=origin), origin=origin, json_first=json_first)


def decode(data: bytes, *, origin: str) -> str:
    """A file's bytes as text (UTF-8, with or without a byte order mark)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{origin}: cannot read: {exc}") from exc


def parse_text(
    text: str,
    *,
    origin: str,
    json_first: bool | None = None,
    object_hook: Callable[[JSON], object] | None = None,
) -> list[object]:
    """YAML (multi-document) or JSON text as a list of documents. `object_hook`: json's, for
    JSON text."""
    if json_first is None:
        json_first = text.lstrip()[:1] in ("{", "[")
    json_error: json.JSONDecodeError | None = None
    if json_first:
        try:
            return [json.loads(text, object_hook=object_hook)]
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
        if isinstance(exc, AliasLimitError):
            raise InputError(f"{where}: YAML aliases refused: {problem}") from exc
        raise InputError(f"{where}: invalid YAML: {problem}") from exc


def _json_error(origin: str, exc: json.JSONDecodeError) -> InputError:
    return InputError(f"{origin}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")


def _objects(
    documents: Iterable[object], origin: str, *, consume: bool = False
) -> Iterator[tuple[JSON, str]]:
    listed = documents if consume and isinstance(documents, list) else None
    for index, doc in enumerate(documents, start=1):
        if listed is not None:
            listed[index - 1] = None
        where = origin if index == 1 else f"{origin} (document {index})"
        yield from _flatten(doc, where, depth=0, consume=consume)


def _flatten(doc: object, where: str, depth: int, consume: bool) -> Iterator[tuple[JSON, str]]:
    """The objects of a document, lists opened. `consume`: a list's items are dropped from it
    as they are yielded (its caller keeps what it needs of each)."""
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    items = doc.get("items")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
        if depth >= MAX_LIST_DEPTH:
            return
        item_kind = kind[: -len("List")]
        for index, item in enumerate(items):
            if consume:
                items[index] = None
            if isinstance(item, dict) and item_kind and "kind" not in item:
                # Typed lists from the raw API (ServiceList) leave kind out of their items.
                typed = {**item, "kind": item_kind, "apiVersion": doc.get("apiVersion")}
                yield from _flatten(typed, where, depth + 1, consume)
            else:
                yield from _flatten(item, where, depth + 1, consume)
        return
    yield doc, where


class _Cutter:
    """json's object_hook for a live source: each supported object cut down (resources.cut) as
    soon as it is decoded, while the rest of its file is decoded. What the cut drops is freed
    then and its memory taken again by the next objects; cut once all is decoded, it would
    stay resident as holes in the heap (at 10,000 services: 47 of the 54 MB cut). A hook sees
    no nesting: `matches` says afterwards whether every dict it cut is one of the file's
    objects, as `supported` finds them (not a dict of that shape inside another)."""

    def __init__(self) -> None:
        self.cut: list[JSON] = []  # held, so that their ids stay theirs
        self.hook = self._hook(self.cut.append)

    @staticmethod
    def _hook(keep: Callable[[JSON], None]) -> Callable[[JSON], JSON]:
        """A function, not a method: json calls it for every dict (0.06 s less at 10k)."""
        intern = sys.intern

        def hook(obj: JSON) -> JSON:
            # 390,000 dicts at 10,000 services: all but the objects pass at once (a targetRef
            # has a kind, no apiVersion; an ownerReference, which every EndpointSlice the API
            # makes has, has both and no metadata).
            if "apiVersion" in obj and "metadata" in obj:
                kind = kind_of(obj)
                if kind is not None:
                    cut(kind, obj, intern=intern)
                    keep(obj)
            return obj

        return hook

    @property
    def ids(self) -> set[int]:
        return {id(obj) for obj in self.cut}

    def matches(self, objects: list[tuple[Kind, JSON, str]]) -> bool:
        return self.ids <= {id(obj) for _, obj, _ in objects}


@dataclass(slots=True)
class _File:
    """What the live source knows of one file: how it looked on disk when last read (its stat
    signature and a digest of its bytes), the objects of its last good content (cut down to
    what is read: not the documents, twice the memory), and the content whose error was
    reported (once per content, not once per look)."""

    signature: tuple[int, ...] = ()
    digest: bytes = b""
    objects: list[tuple[Kind, JSON, str]] | None = None
    reported: bytes | None = None


class ManifestSource:
    """The manifests as a live source: loads the paths, then follows them with watchdog.

    Only writes, creations, deletions and moves under the paths count as changes (watchdog also
    reports files opened and closed unwritten: our own reads among them). After a change,
    debounced (`debounce_s` of quiet, never longer than `max_delay_s` after the first change),
    the files are looked at again: a file whose stat and then bytes are unchanged is not parsed
    again, and when no file changed nothing is compared or emitted. The differences with what
    was emitted go out as events, deletions included. A file that does not parse is reported
    once per content and its last good content kept, so a half-saved edit never empties the
    cluster."""

    def __init__(
        self, paths: Sequence[str], *, debounce_s: float = 0.2, max_delay_s: float = 1.0
    ) -> None:
        self.paths = list(paths)
        self.names: tuple[str, ...] = ("manifests",)
        self._debounce_s = debounce_s
        self._max_delay_s = max_delay_s
        self._files: dict[Path, _File] = {}
        self._emitted: dict[tuple[Kind, Key], JSON] = {}
        self._reported: set[str] = set()  # messages about the file set and duplicate objects
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self.parses = 0  # files parsed (a changed content), for tests and benchmarks
        self.redecodes = 0  # files decoded again without cutting (a dict like an object inside)
        self.syncs = 0  # times the objects were compared with what was emitted

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
            # Editors write in several steps: wait for the burst to end, but a file rewritten
            # without pause must not hold every change back.
            deadline = time.monotonic() + self._max_delay_s
            while self._changed.is_set():
                self._changed.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self._stop.wait(min(self._debounce_s, left)):
                    return
            try:
                self._sync()
            except Exception:
                log.exception("cannot reload the manifests; keeping the last good state")

    def _sync(self) -> None:
        # Without the cyclic collector: it would rescan the growing heap on every burst of new
        # dicts (reading a 10,000-service file took twice as long); what is built stays frozen.
        with gc_tuning.loading():
            self._read_all()

    def _read_all(self) -> None:
        files: list[Path] = []
        messages: list[str] = []
        for path in self.paths:
            try:
                files.extend(expand(Path(path)))
            except InputError as exc:
                messages.append(str(exc))
        changed = set(self._files) != set(files)
        known: dict[Path, _File] = {}
        for file in files:
            state = self._files.get(file) or _File()
            changed |= self._look(file, state)
            known[file] = state
        self._files = known
        if not changed and self.syncs:
            self._log_once(messages)
            return
        manifests = Manifests()
        for state in known.values():
            if state.objects is not None:
                manifests.add_objects(state.objects)
        self._log_once(messages + [finding.text for finding in manifests.findings])
        self.syncs += 1
        for event in differences(
            "manifests", self._emitted, manifests.objects, same=lambda a, b: a == b
        ):
            self._emit(event)
        self._emitted = dict(manifests.objects)

    def _look(self, file: Path, state: _File) -> bool:
        """Bring one file's state up to date; True when its documents changed."""
        try:
            info = file.stat()
            signature = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            if signature == state.signature:
                return False
            state.signature = signature
            data = file.read_bytes()
        except OSError as exc:
            state.signature = ()
            return self._broken(file, state, b"", InputError(f"{file}: cannot read: {exc}"))
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest == state.digest:
            return False  # touched, or rewritten with the same bytes
        state.digest = digest
        origin, json_first = str(file), _is_json(file)
        try:
            # The bytes of a large file are not kept while it is decoded: at 10,000 services
            # they are 24 MB beside its text and objects.
            text = decode(data, origin=origin)
            del data
            cutter = _Cutter()
            documents = parse_text(
                text, origin=origin, json_first=json_first, object_hook=cutter.hook
            )
            objects = list(supported(documents, origin, live=True, done=cutter.ids))
            if not cutter.matches(objects):  # it cut a dict inside another: read it all again
                del objects, documents, cutter  # not held beside the second reading
                self.redecodes += 1
                documents = parse_text(text, origin=origin, json_first=json_first)
                objects = list(supported(documents, origin, live=True))
        except InputError as exc:
            return self._broken(file, state, digest, exc)
        self.parses += 1
        state.reported = None
        state.objects = objects
        return True

    @staticmethod
    def _broken(file: Path, state: _File, digest: bytes, problem: InputError) -> bool:
        """A file that cannot be used: reported once per content; its last good content stays."""
        if state.reported != digest:
            state.reported = digest
            kept = (
                "keeping its last good content"
                if state.objects is not None
                else "ignored until it parses"
            )
            log.warning("%s; %s", problem, kept)
        state.digest = digest
        return False

    def _log_once(self, messages: list[str]) -> None:
        """Log what is new among the messages about the file set (each once while it lasts)."""
        for message in messages:
            if message not in self._reported:
                log.warning("%s", message)
        self._reported = set(messages)


# What changes a file's content or the set of files. Not opened, closed-without-write or
# attribute events: reading a file (we do, on every change) would report it changed again.
_CHANGES = frozenset(
    {
        EVENT_TYPE_CREATED,
        EVENT_TYPE_DELETED,
        EVENT_TYPE_MODIFIED,
        EVENT_TYPE_MOVED,
        EVENT_TYPE_CLOSED,
    }
)


class _Poke(FileSystemEventHandler):
    def __init__(self, changed: threading.Event) -> None:
        self._changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        if event.is_directory:
            # A directory's own "modified" follows every change of its entries, which have
            # their own events; a directory created, deleted or moved may carry files.
            if event.event_type != EVENT_TYPE_MODIFIED:
                self._changed.set()
            return
        paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
        if any(p.lower().endswith(SUFFIXES) for p in paths):
            self._changed.set()
