"""haproxy: the HAProxy executable (found, its version and what it can do), its master CLI
socket and its runtime API socket, as the controller will use them."""

from __future__ import annotations

import re
import subprocess
from dataclasses import fields
from pathlib import Path

from kube2haproxy.appliers.cli_socket import unix_command
from kube2haproxy.appliers.master import MasterCLI
from kube2haproxy.capabilities import Capabilities, capabilities, parse_version
from kube2haproxy.doctor.check import Check, fail, ok, warn
from kube2haproxy.errors import HAProxyUnavailable, UnsupportedVersion

INSTALL = "apt-get install haproxy (or any HAProxy 2.6 to 3.4), or point --haproxy-bin at one"
_TRANSPARENT = re.compile(r"^Built with transparent proxy support using: *(.*)$", re.M)
_INFO = re.compile(r"^(Maxconn|Ulimit-n): *(\d+)$", re.M)


def haproxy_binary(
    binary: str,
    *,
    resolved: str | None,
    transparent: bool,
    supervised: bool,
    root: bool,
    worker_uid: int | None,
    timeout_s: float = 30.0,
) -> tuple[Check, Capabilities | None]:
    """`haproxy -vv` of --haproxy-bin (`resolved`: its path on PATH, None when not found):
    a supported version, and the build's transparent proxy support when binds are transparent.
    Also the capabilities, for the master check to compare."""
    name = "haproxy"
    if resolved is None:
        return fail(name, f"--haproxy-bin {binary}: not found or not executable", INSTALL), None
    try:
        result = subprocess.run(
            [resolved, "-vv"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return fail(name, f"{resolved} -vv: {exc}", INSTALL), None
    output = result.stdout or result.stderr
    try:
        found = capabilities(parse_version(output.splitlines()[0] if output else ""))
    except ValueError:
        return fail(name, f"{resolved} -vv does not say an HAProxy version", INSTALL), None
    except UnsupportedVersion as exc:
        return fail(name, f"{resolved}: {exc}", INSTALL), None
    able = [f.name for f in fields(found) if f.name != "version" and getattr(found, f.name)]
    match = _TRANSPARENT.search(output)
    foreign = match.group(1).split() if match else []
    detail = (
        f"HAProxy {found.version} at {resolved}; capabilities: {', '.join(able) or 'those of 2.6'}"
        f"; transparent binds: {' '.join(foreign) or 'not built in'}"
    )
    if transparent and not {"IP_TRANSPARENT", "IP_FREEBIND"} & set(foreign):
        return fail(
            name,
            f"{detail}: --bind-transparent needs IP_TRANSPARENT or IP_FREEBIND",
            "an HAProxy built with USE_LINUX_TPROXY=1 (every distribution's is); or "
            "--no-bind-transparent with sysctl -w net.ipv4.ip_nonlocal_bind=1",
        ), found
    # 3.3 and later warn at every start and reload of a worker left running as root.
    if supervised and root and worker_uid is None and found.warns_as_root:
        return warn(
            name,
            f"{detail}; its workers would run as root, which HAProxy {found.version} warns "
            "about at every start and reload",
            "--haproxy-uid 99 --haproxy-gid 99 --haproxy-chroot /var/empty (a user and an "
            "empty directory of this host)",
        ), found
    return ok(name, detail), found


def controller_pid(lock: Path, proc: Path = Path("/proc")) -> int | None:
    """The pid of a kube2haproxy controller holding `lock` (it writes its pid there), if one
    runs; reading never takes the lock, so a starting controller is never refused because of
    us."""
    try:
        pid = int(lock.read_text().split()[0])
        command = (proc / str(pid) / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"kube2haproxy" in command else None


def master(
    path: str,
    *,
    supervised: bool,
    controller: int | None,
    binary: Capabilities | None,
    timeout_s: float = 5.0,
) -> tuple[Check, bool]:
    """The master CLI answers `show proc` and `show version` (and the serving worker its
    limits); True as well when it answered. Supervised and no controller running, silence is
    expected: `kube2haproxy run` starts HAProxy."""
    name = "haproxy-master"
    cli = MasterCLI(path, timeout_s=timeout_s)
    try:
        processes = cli.processes()
        version = cli.version()
    except HAProxyUnavailable as exc:
        if supervised and controller is None:
            return ok(
                name,
                f"no HAProxy answers at {path}: `kube2haproxy run` starts one there (supervised)",
            ), False
        runs = f"the controller (pid {controller}) runs, but " if controller else ""
        fix = (
            "see the controller's log (it restarts HAProxy with a backoff)"
            if supervised
            else "start HAProxy in master-worker mode with -S "
            f"{path},level,admin,mode,600 (haproxy/run.sh), or point --master-socket at its "
            "master socket"
        )
        return fail(name, f"{runs}{exc}", fix), False
    detail = (
        f"HAProxy {version} at {path}: master pid {processes.master_pid}, "
        f"{len(processes.workers)} worker(s), {processes.reloads} reload(s)"
    )
    worker = processes.serving_worker
    if worker is not None:
        try:
            info = dict(_INFO.findall(cli.command(f"@!{worker} show info")))
        except HAProxyUnavailable:
            info = {}
        if info:
            detail += (
                f"; worker {worker}: maxconn {info.get('Maxconn', '?')}, "
                f"ulimit-n {info.get('Ulimit-n', '?')}"
            )
    if processes.failed:
        return warn(
            name,
            f"{detail}; the last reload failed ({processes.failed} since the last success)",
            "read the controller's log and <haproxy-config>.rejected (HAProxy's own report)",
        ), True
    if binary is not None and (version.major, version.minor) != (
        binary.version.major,
        binary.version.minor,
    ):
        return warn(
            name,
            f"{detail}; --haproxy-bin is {binary.version}: configs are checked by another "
            "version than the one that loads them",
            "point --haproxy-bin at the same HAProxy version (the controller image copies the "
            "pod's)",
        ), True
    return ok(name, detail), True


def runtime(path: str, *, master_answered: bool, timeout_s: float = 5.0) -> Check:
    """The runtime API (stats socket) answers `show info`: endpoint changes go there without
    a reload; without it every one falls back to a reload."""
    name = "haproxy-runtime"
    try:
        text = unix_command(path, "show info", timeout_s=timeout_s, half_close=False)
    except HAProxyUnavailable as exc:
        if not master_answered:
            return ok(name, f"not checked: no HAProxy runs ({path})")
        return fail(
            name,
            f"{exc}: every endpoint change would reload HAProxy",
            f"the config HAProxy runs must declare `stats socket {path} mode 600 level admin` "
            "(the rendered one does; so does haproxy/bootstrap.cfg); or point --runtime-socket "
            "at the one it declares",
        )
    pid = re.search(r"^Pid: *(\d+)$", text, re.M)
    return ok(name, f"{path} answers (worker pid {pid.group(1) if pid else '?'})")
