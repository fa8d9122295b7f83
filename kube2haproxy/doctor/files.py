"""files: the files the controller writes can be written. Each is replaced atomically (a
temporary file beside it, then a rename), so what must be writable is its directory: a file
is created there and removed again, which is the only test a read-only mount, a full disk or
another owner cannot fool."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kube2haproxy.doctor.check import Check, Status, fail, ok, warn
from kube2haproxy.errors import EnvironmentProblem
from kube2haproxy.publish import Publisher
from kube2haproxy.settings import Paths, PublishSettings


def unwritable(directory: Path) -> str | None:
    """Why no file can be created in `directory`, or None when one can."""
    if not directory.is_dir():
        return "no such directory" if not directory.exists() else "not a directory"
    try:
        fd, name = tempfile.mkstemp(prefix=".kube2haproxy-doctor-", dir=directory)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


def _creatable(directory: Path) -> str | None:
    """Why `directory` can neither be written nor created (the controller makes it), or None."""
    if directory.exists():
        return unwritable(directory)
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    why = unwritable(parent)
    return None if why is None else f"cannot be created: {parent}: {why}"


def _files(
    name: str, wanted: Sequence[tuple[str, Path, bool]], *, maps: Path | None = None
) -> Check:
    """`wanted`: (flag, file, whether the controller creates its directory); `maps`: a
    directory the controller creates (and writes files in). A file must be one, or not exist
    yet."""
    problems = []
    for what, path, creates in wanted:
        if path.exists() and not path.is_file():
            problems.append(f"{what} {path}: not a regular file")
            continue
        why = _creatable(path.parent) if creates else unwritable(path.parent)
        if why:
            problems.append(f"{what} {path.parent}: {why}")
    if maps is not None and (why := _creatable(maps)):
        problems.append(f"--maps-dir {maps}: {why}")
    if problems:
        return fail(
            name,
            "; ".join(problems),
            "make the directory exist and writable by this user (a container: a writable "
            "volume mounted there)",
        )
    written = [str(path) for _what, path, _creates in wanted] + ([str(maps)] if maps else [])
    return ok(name, "writable: " + ", ".join(written))


def haproxy_files(paths: Paths, *, uid: int) -> Check:
    """The config (and its maps) the controller installs; supervised, its run directory, which
    the controller makes and refuses when another user owns it or others may write to it."""
    name = "haproxy-files"
    if paths.run_dir is not None:
        run_dir = Path(paths.run_dir)
        if run_dir.is_dir():
            info = run_dir.stat()
            if info.st_uid != uid or info.st_mode & 0o022:
                return fail(
                    name,
                    f"--run-dir {run_dir}: owner {info.st_uid}, mode {oct(info.st_mode & 0o777)}: "
                    f"the controller refuses a run directory not uid {uid}'s alone",
                    f"chown {uid} {run_dir} && chmod 700 {run_dir}; or another --run-dir",
                )
    config = Path(paths.config)
    in_run_dir = paths.run_dir is not None and config.parent == Path(paths.run_dir)
    return _files(
        name,
        [("--haproxy-config", config, in_run_dir)],
        maps=Path(paths.maps_dir),
    )


def dns_files(settings: PublishSettings) -> Check:
    name = "dns-files"
    wanted = [
        (flag, Path(path), False)
        for flag, path in (
            ("--dns-zone-file", settings.dns_zone_file),
            ("--dns-hosts-file", settings.dns_hosts_file),
        )
        if path
    ]
    if not wanted:
        return ok(name, "not used (--dns-zone-file and --dns-hosts-file unset)")
    return _files(name, wanted)


def keepalived_files(settings: PublishSettings, *, proc: Path = Path("/proc")) -> Check:
    """keepalived's config can be written; its interface exists here; its password file
    reads; and, unless `none`, its pidfile names a running keepalived to SIGHUP."""
    name = "keepalived-files"
    if not settings.keepalived_config:
        return ok(name, "not used (--keepalived-config unset)")
    try:
        Publisher(settings)  # the password file and the interface's name, as `run` reads them
    except EnvironmentProblem as exc:
        return fail(name, str(exc), "see --keepalived-password-file and --keepalived-interface")
    interface = settings.keepalived_interface or ""
    try:
        socket.if_nametoindex(interface)
    except OSError:
        return fail(
            name,
            f"--keepalived-interface {interface}: no such interface here",
            "ip -br link (and give one of those)",
        )
    written = _files(name, [("--keepalived-config", Path(settings.keepalived_config), False)])
    if written.status is not Status.OK or settings.keepalived_pidfile in ("", "none"):
        return written
    pidfile = Path(settings.keepalived_pidfile)
    try:
        pid = int(pidfile.read_text().split()[0])
        alive = (proc / str(pid)).is_dir()
    except (OSError, ValueError, IndexError):
        pid, alive = None, False
    if not alive:
        return warn(
            name,
            f"{written.detail}; --keepalived-pidfile {pidfile} names no running keepalived "
            f"({'pid ' + str(pid) if pid else 'missing or unreadable'}): changes would not be "
            "signalled",
            "start keepalived (keepalived -p PIDFILE); or --keepalived-pidfile none when "
            "whoever runs keepalived reloads it on a change of the file",
        )
    return ok(name, f"{written.detail}; keepalived pid {pid}")
