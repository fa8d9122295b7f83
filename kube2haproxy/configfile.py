"""configfile: stage a config next to its destination, check it with `haproxy -c`, install it.

A staged file is written to a temporary name in the destination's directory and fsynced; `commit`
renames it over the destination (atomic on POSIX) and fsyncs the directory, `discard` removes it.
Nothing here decides *whether* to install: the caller checks first and commits only on success, so
the file at the destination is always the last config that passed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kube2haproxy.capabilities import Version, parse_version
from kube2haproxy.errors import CheckError, EnvironmentProblem, Kube2HAProxyError

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644


class Staged:
    """A config written beside its destination under a temporary name."""

    def __init__(self, destination: Path, text: str, *, mode: int | None = None) -> None:
        """`mode`: the new file's permissions; None keeps the destination's (DEFAULT_MODE for a
        new file)."""
        self.destination = destination
        directory = destination.parent
        if mode is None:
            try:
                mode = destination.stat().st_mode & 0o777
            except FileNotFoundError:
                mode = DEFAULT_MODE
        try:
            fd, name = tempfile.mkstemp(
                prefix=f".{destination.name}.", suffix=".tmp", dir=directory
            )
        except OSError as exc:
            raise EnvironmentProblem(
                f"{destination}: cannot create a file beside it: {exc}"
            ) from exc
        self.path = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
        except OSError as exc:
            self.discard()
            raise EnvironmentProblem(f"{self.path}: cannot write: {exc}") from exc

    def commit(self) -> None:
        try:
            os.replace(self.path, self.destination)
            _fsync_directory(self.destination.parent)
        except OSError as exc:
            self.discard()
            raise EnvironmentProblem(f"{self.destination}: cannot install: {exc}") from exc

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def check(self, *, binary: str, timeout_s: float) -> str:
        """`haproxy -c` on the staged file; its output (warnings) when it passes. When it
        fails, the file is kept as `<destination>.rejected` (replacing an older one) and the
        CheckError's output names that file and its lines, not the temporary name."""
        try:
            return check(self.path, binary=binary, timeout_s=timeout_s)
        except CheckError as exc:
            rejected = rejected_path(self.destination)
            try:
                os.replace(self.path, rejected)
            except OSError:
                self.discard()
                raise
            raise CheckError(
                f"{exc}; the config is kept in {rejected}",
                output=exc.output.replace(str(self.path), str(rejected)),
            ) from exc
        except BaseException:
            self.discard()
            raise


def rejected_path(destination: Path) -> Path:
    """Where the last config HAProxy refused for `destination` is kept."""
    return destination.with_name(destination.name + ".rejected")


def keep_rejected(destination: Path, text: str) -> Path:
    """Keep a config HAProxy refused beside its destination, for the operator to read."""
    path = rejected_path(destination)
    try:
        write_atomic(path, text)
    except EnvironmentProblem as exc:
        log.error("%s", exc)
    return path


@dataclass(frozen=True, slots=True)
class Installed:
    check_output: str  # warnings `haproxy -c` printed for the config it accepted
    check_s: float  # how long the check took


def install(
    destination: Path,
    text: str,
    *,
    files: Mapping[str, str],
    maps_dir: Path,
    binary: str | None,
    timeout_s: float,
) -> Installed:
    """The one order a config is put in place, for the dry run (`render -o`) and the appliers
    alike: the files it refers to first (content-addressed: a running config's never change),
    then the config staged beside its destination, checked with `haproxy -c` (unless `binary`
    is None: no check asked), renamed into place. A CheckError (the refused config kept as
    `.rejected`) leaves the destination as it was."""
    write_files(maps_dir, files)
    staged = Staged(destination, text)
    started = time.monotonic()
    output = staged.check(binary=binary, timeout_s=timeout_s) if binary is not None else ""
    check_s = time.monotonic() - started
    staged.commit()
    return Installed(output, check_s)


def write_atomic(destination: Path, text: str, *, mode: int | None = None) -> None:
    """Replace destination with text, all or nothing (`mode`: see Staged)."""
    Staged(destination, text, mode=mode).commit()


def check(path: Path, *, binary: str, timeout_s: float) -> str:
    """Run `haproxy -c -f path`; return its output (warnings) or raise CheckError with it."""
    try:
        result = subprocess.run(
            [binary, "-c", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"cannot run {binary}: not found") from exc
    except PermissionError as exc:
        raise EnvironmentProblem(f"cannot run {binary}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CheckError(
            f"haproxy -c did not finish within {timeout_s:g}s",
            output=_text(exc.stdout) + _text(exc.stderr),
        ) from exc
    output = (result.stdout + result.stderr).strip()
    if result.returncode == 0 and output == "Configuration file is valid":
        return ""  # nothing worth repeating; warnings, if any, are returned
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        hint = " (out of memory? it parses the whole config)" if name == "SIGKILL" else ""
        raise CheckError(f"haproxy -c was killed by {name}{hint}", output=output)
    if result.returncode != 0:
        raise CheckError(
            f"haproxy -c rejected the config (exit {result.returncode})", output=output
        )
    return output


def binary_version(binary: str, *, timeout_s: float = 30.0) -> Version:
    """The version of an haproxy executable, from the first line of `haproxy -vv`;
    EnvironmentProblem when it cannot run or says something else."""
    try:
        result = subprocess.run(
            [binary, "-vv"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"cannot run {binary} -vv: {exc}") from exc
    first = (result.stdout or result.stderr).splitlines()[:1]
    try:
        return parse_version(first[0] if first else "")
    except ValueError as exc:
        raise EnvironmentProblem(f"{binary} -vv: {exc}") from exc


def check_text(
    text: str,
    *,
    binary: str,
    timeout_s: float,
    name: str = "<rendered>",
    files: Mapping[str, str] | None = None,
    maps_dir: str = "",
) -> str:
    """Check a config that has no destination here (render --check without -o, a config for
    another host); HAProxy's output calls it `name`, not the temporary file it was checked in.
    `files`: the map files it names in `maps_dir`, checked beside it in the temporary
    directory instead (only those very paths are redirected)."""
    with tempfile.TemporaryDirectory(prefix="kube2haproxy-") as tmp:
        path = Path(tmp) / "haproxy.cfg"
        local = Path(tmp) / "maps"
        if files:
            write_files(local, files)
            prefix = maps_dir.rstrip("/") + "/"
            text = re.sub(
                re.escape(prefix) + r"([^\s()]+)",
                lambda m: f"{local}/{m[1]}" if m[1] in files else m[0],
                text,
            )
        path.write_text(text, encoding="utf-8")

        def named(output: str) -> str:
            return output.replace(str(path), name).replace(f"{local}/", f"{maps_dir}/")

        try:
            return named(check(path, binary=binary, timeout_s=timeout_s))
        except CheckError as exc:
            raise CheckError(str(exc), output=named(exc.output)) from exc


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """The files a config refers to (by name in `directory`), each written atomically.
    Their names carry a hash of their content: one that exists already is left as it is, so a
    running config's files are never changed under it."""
    for relative, text in files.items():
        path = directory / relative
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EnvironmentProblem(f"{path.parent}: cannot create: {exc}") from exc
        write_atomic(path, text)


def prune_files(directory: Path, keep: Mapping[str, str], *, pattern: str) -> None:
    """Remove the files matching `pattern` (relative glob) that `keep` does not name."""
    for path in directory.glob(pattern):
        if str(path.relative_to(directory)) not in keep:
            with contextlib.suppress(OSError):
                path.unlink()


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Background:
    """Hands texts to `write` on a thread of its own, so that the caller need not wait for them
    (10 MB to a disk, a config to a remote API). The newest text wins (one handed over before the
    previous was written replaces it); `flush` waits until everything handed over is written,
    and must come before anything else writes the same place, so that an older text never lands
    last. A write that fails is logged (its error says what and where) and remembered in
    `failed` until one succeeds."""

    def __init__(self, write: Callable[[str], None], *, what: str, name: str) -> None:
        """`what` names the destination in the error of a `flush` that times out."""
        self._write = write
        self._what = what
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._busy = False
        self._closed = False
        self.failed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def behind(self) -> bool:
        """What was handed over may not be written: a write is pending, or the last failed."""
        with self._cond:
            return self._pending is not None or self._busy or self.failed

    def submit(self, text: str) -> None:
        with self._cond:
            self._pending = text
            self._cond.notify_all()

    def flush(self, timeout_s: float = 60.0) -> None:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._pending is None and not self._busy, timeout=timeout_s
            ):
                raise EnvironmentProblem(f"{self._what}: a write did not finish in {timeout_s:g}s")

    def close(self, timeout_s: float = 60.0) -> None:
        """Write what is pending, then end the thread."""
        try:
            self.flush(timeout_s)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                text, self._pending, self._busy = self._pending, None, True
            failed = True
            try:
                self._write(text)
                failed = False
            except Kube2HAProxyError as exc:
                log.error("%s", exc)
            finally:
                with self._cond:
                    self._busy, self.failed = False, failed
                    self._cond.notify_all()


class Writer(Background):
    """Writes texts to one path atomically, in the background: a runtime update need not wait
    for 10 MB to reach the disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            lambda text: write_atomic(path, text), what=str(path), name="config-writer"
        )
