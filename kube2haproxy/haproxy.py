"""haproxy: talking to HAProxy (master CLI, runtime API) and running it (supervision).

The master CLI of 2.6 keeps a connection open until the client half-closes its write side, and
`reload` answers nothing (a status reply exists only from 2.7): a reload is confirmed by polling
`show proc` until the master's reload counter moves, then reading `[failed: N]` and looking for the
new worker. The supervisor runs `haproxy -W -db -S <master>` in the foreground, forwards its output
to the log, restarts it with a backoff when it dies, and stops it gracefully.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kube2haproxy.errors import ConfigRefused, EnvironmentProblem, HAProxyUnavailable

log = logging.getLogger(__name__)
haproxy_log = logging.getLogger("kube2haproxy.haproxy.output")

READ_CHUNK = 65536
ALIVE_GRACE_S = 30.0


def unix_command(path: str, command: str, *, timeout_s: float, half_close: bool) -> str:
    """Send one command line to a UNIX stream socket and read the answer until the peer closes.

    `half_close` shuts our write side down after the command: the 2.6 master CLI waits for it
    before it answers and closes; the worker's stats socket closes on its own."""
    deadline = time.monotonic() + timeout_s
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                data = sock.recv(READ_CHUNK)
                if not data:
                    break
                chunks.append(data)
    except (OSError, TimeoutError) as exc:
        raise HAProxyUnavailable(f"{path}: {command.split(maxsplit=1)[0]!r}: {exc}") from exc
    return b"".join(chunks).decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Processes:
    """The master's `show proc`."""

    master_pid: int
    reloads: int  # reloads the master performed
    failed: int  # failed reloads since the last successful one
    workers: tuple[tuple[int, int], ...]  # (pid, reloads survived) of current workers
    old_workers: tuple[int, ...]

    @property
    def current_worker(self) -> int | None:
        """The worker started by the latest successful (re)load."""
        fresh = [pid for pid, reloads in self.workers if reloads == 0]
        return fresh[0] if fresh else None


_MASTER = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.M)
_PROCESS = re.compile(r"^(\d+)\s+worker\s+(\d+)", re.M)


def parse_processes(text: str) -> Processes:
    master = _MASTER.search(text)
    if master is None:
        raise HAProxyUnavailable(f"unexpected answer to 'show proc': {text[:200]!r}")
    workers: list[tuple[int, int]] = []
    old: list[int] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").lower()
            continue
        match = _PROCESS.match(line)
        if match is None:
            continue
        if section == "workers":
            workers.append((int(match.group(1)), int(match.group(2))))
        elif section == "old workers":
            old.append(int(match.group(1)))
    return Processes(
        int(master.group(1)),
        int(master.group(2)),
        int(master.group(3)),
        tuple(workers),
        tuple(old),
    )


# Printed on every reload by the old worker, once per proxy: 10,000 lines at 10,000 services.
_ROUTINE = re.compile(
    r"Proxy \S+ stopped \(cumulated conns|Stopping (frontend|backend|proxy) |"
    r"Former worker \(\d+\) exited with code 0|haproxy version is|path to executable is"
)
# What HAProxy prints at WARNING for what we asked for: the slot changes of a runtime update
# (a planned endpoint removal is "going DOWN for maintenance") and a normal stop.
_PLANNED = re.compile(
    r"Server \S+ is going DOWN for maintenance\.|Server \S+ is UP/(READY|DRAIN) \(leaving "
    r"forced maintenance\)|Server \S+ (remains in forced drain mode|is UP \(leaving forced "
    r"drain\)|enters drain state)|Exiting Master process|Current worker \(\d+\) exited with code "
    r"0|All workers exited\. Exiting\.\.\. \(0\)"
)


def output_level(line: str) -> int:
    """The log level of a line HAProxy printed."""
    if _ROUTINE.search(line):
        return logging.DEBUG
    if "[ALERT]" in line:
        return logging.ERROR
    if "[WARNING]" in line and not _PLANNED.search(line):
        return logging.WARNING
    return logging.INFO


class MasterCLI:
    """The master CLI socket of an HAProxy running in master-worker mode."""

    def __init__(self, path: str, *, timeout_s: float = 5.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._answered_at: float | None = None

    def command(self, command: str) -> str:
        text = unix_command(self.path, command, timeout_s=self.timeout_s, half_close=True)
        self._answered_at = time.monotonic()
        return text

    def processes(self) -> Processes:
        return parse_processes(self.command("show proc"))

    def alive(self, *, grace_s: float = ALIVE_GRACE_S) -> bool:
        """The master answers, or answered within `grace_s`: while it re-executes for a reload
        (seconds at 10,000 services) it answers nothing, and that is not a death."""
        try:
            self.processes()
        except HAProxyUnavailable:
            answered = self._answered_at
            return answered is not None and time.monotonic() - answered < grace_s
        return True

    def reload(self, *, timeout_s: float, poll_s: float = 0.01) -> Processes:
        """Reload and wait until the master reports the outcome: ConfigRefused when the reload
        failed, HAProxyUnavailable when no outcome came within `timeout_s`."""
        before = self.processes()
        known = {pid for pid, _ in before.workers} | set(before.old_workers)
        self.command("reload")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(poll_s)
            try:
                after = self.processes()  # unreachable while the master re-executes itself
            except HAProxyUnavailable:
                continue
            if after.reloads <= before.reloads:
                continue
            if after.failed:
                raise ConfigRefused(
                    f"HAProxy refused the new config: reload {after.reloads} failed "
                    f"({after.failed} failed since the last success); the old worker serves on"
                )
            worker = after.current_worker
            if worker is not None and worker not in known:
                return after
        raise HAProxyUnavailable(f"reload not confirmed within {timeout_s:g}s")


class RuntimeAPI:
    """The stats socket of the current worker (the runtime API)."""

    def __init__(self, path: str, *, timeout_s: float = 5.0, batch: int = 64) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.batch = batch

    def execute(self, commands: Sequence[str]) -> list[str]:
        """Run commands in batches (`a; b; c` on one line, one connection per batch) and return
        one reply per command (its text without the terminating empty line)."""
        replies: list[str] = []
        for start in range(0, len(commands), self.batch):
            chunk = commands[start : start + self.batch]
            if any(";" in c or "\n" in c for c in chunk):
                raise ValueError("a runtime command may not contain ';' or a newline")
            text = unix_command(
                self.path, "; ".join(chunk), timeout_s=self.timeout_s, half_close=False
            )
            got = split_replies(text)
            if len(got) != len(chunk):
                raise HAProxyUnavailable(
                    f"{self.path}: {len(got)} replies to {len(chunk)} commands: {text[:300]!r}"
                )
            replies.extend(got)
        return replies

    def execute_raw(self, command: str, *, timeout_s: float | None = None) -> str:
        """One command, its whole answer (for dumps such as `show servers state`)."""
        return unix_command(
            self.path, command, timeout_s=timeout_s or self.timeout_s, half_close=False
        )

    def servers_state(self) -> dict[tuple[str, str], ServerStatus]:
        return parse_servers_state(
            self.execute_raw("show servers state", timeout_s=max(self.timeout_s, 30.0))
        )


def split_replies(text: str) -> list[str]:
    """The replies of a batch: each is its text followed by an empty line (an empty reply is
    the empty line alone)."""
    if not text.endswith("\n"):
        return [text] if text else []
    replies, current = [], []
    for line in text[:-1].split("\n"):
        if line:
            current.append(line)
        else:
            replies.append("\n".join(current))
            current = []
    if current:
        replies.append("\n".join(current))
    return replies


# srv_admin_state bits (HAProxy's SRV_ADMF_*) and srv_op_state values (SRV_ST_*).
ADMIN_FORCED_MAINT, ADMIN_INHERITED_MAINT, ADMIN_CONFIG_MAINT = 0x01, 0x02, 0x04
ADMIN_FORCED_DRAIN, ADMIN_INHERITED_DRAIN = 0x08, 0x10
ADMIN_RESOLVE_MAINT, ADMIN_HOSTNAME_MAINT = 0x20, 0x40
OP_STOPPED, OP_RUNNING = 0, 2


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One line of `show servers state`."""

    addr: str
    port: int
    op_state: int
    admin: int
    weight: int

    @property
    def in_maintenance(self) -> bool:
        """Forced or inherited maintenance; `disabled` in the config (CMAINT) counts only while
        the server is stopped: `set server state ready` makes it run but leaves the bit set."""
        forced = (
            ADMIN_FORCED_MAINT | ADMIN_INHERITED_MAINT | ADMIN_RESOLVE_MAINT | ADMIN_HOSTNAME_MAINT
        )
        return bool(self.admin & forced) or bool(
            self.admin & ADMIN_CONFIG_MAINT and self.op_state == OP_STOPPED
        )

    @property
    def draining(self) -> bool:
        return bool(self.admin & (ADMIN_FORCED_DRAIN | ADMIN_INHERITED_DRAIN)) or self.weight == 0


def parse_servers_state(text: str) -> dict[tuple[str, str], ServerStatus]:
    """(backend, server) -> status, from `show servers state` (format version 1)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "1":
        raise HAProxyUnavailable(f"unexpected 'show servers state' format: {text[:200]!r}")
    header: list[str] = []
    out: dict[tuple[str, str], ServerStatus] = {}
    for line in lines[1:]:
        if line.startswith("#"):
            header = line.lstrip("# ").split()
            continue
        if not line.strip():
            continue
        fields = dict(zip(header, line.split(), strict=False))
        try:
            out[(fields["be_name"], fields["srv_name"])] = ServerStatus(
                addr=fields["srv_addr"],
                port=int(fields["srv_port"]),
                op_state=int(fields["srv_op_state"]),
                admin=int(fields["srv_admin_state"]),
                weight=int(fields["srv_uweight"]),
            )
        except (KeyError, ValueError) as exc:
            raise HAProxyUnavailable(f"cannot read 'show servers state' line {line!r}") from exc
    return out


class _Process:
    """The HAProxy master we supervise: our child, or one adopted from a previous controller."""

    def __init__(self, pid: int, child: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid
        self.child = child

    def alive(self) -> bool:
        if self.child is not None:
            return self.child.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, as another user's
        return True

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (-1 when adopted: not ours to reap); TimeoutError when still alive."""
        if self.child is not None:
            try:
                return self.child.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise TimeoutError from exc
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.2)
        return -1

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)


class Supervisor:
    """Runs HAProxy in master-worker mode in the foreground and keeps it running.

    If an HAProxy started with the same command already answers on the master socket (left
    running by a controller that was killed), it is adopted rather than doubled: two masters
    on the same ports would split the traffic between two configs."""

    def __init__(
        self,
        *,
        binary: str,
        config: str,
        master_socket: str,
        on_exit: Callable[[int], None] | None = None,
        restart_backoff_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.binary = binary
        self.config = config
        self.master = MasterCLI(master_socket)
        self._on_exit = on_exit
        self._backoff = restart_backoff_s
        self._process: _Process | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0
        self.adopted = False
        self.last_output: list[str] = []

    @property
    def command(self) -> list[str]:
        return [
            self.binary,
            "-W",
            "-db",
            "-S",
            f"{self.master.path},level,admin,mode,600",
            "-f",
            self.config,
        ]

    @property
    def running(self) -> bool:
        with self._lock:
            return self._process is not None and self._process.alive()

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    def start(self, *, ready_timeout_s: float = 60.0) -> None:
        """Start (or adopt) HAProxy unless ours already runs, and wait until its master answers
        with a worker: ConfigRefused (with HAProxy's output) when it exits, HAProxyUnavailable
        when it does not come up in time, EnvironmentProblem when it cannot run; and then
        nothing is left running or about to restart."""
        with self._lock:
            self._stopping.clear()
            idle = self._process is None or not self._process.alive()
            if idle and not self._adopt_locked():
                self._spawn_locked()
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(
                    target=self._watch, name="haproxy-supervisor", daemon=True
                )
                self._watcher.start()
        try:
            self.wait_ready(ready_timeout_s)
        except (ConfigRefused, EnvironmentProblem):
            self.stop(grace_s=1.0)  # no crash loop on a config that cannot start
            raise

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                process = self._process
            if process is None or not process.alive():
                code = process.wait(0) if process is not None else None
                raise ConfigRefused(
                    f"haproxy exited with code {code} while starting",
                    output="\n".join(self.last_output[-20:]),
                )
            with contextlib.suppress(HAProxyUnavailable):
                if self.master.processes().current_worker is not None:
                    return
            time.sleep(0.05)
        raise HAProxyUnavailable(f"haproxy did not come up within {timeout_s:g}s")

    def stop(self, *, grace_s: float = 10.0) -> None:
        """Soft-stop (SIGUSR1: finish open connections), then SIGTERM, then SIGKILL."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None or not process.alive():
            return
        for sig, wait in ((signal.SIGUSR1, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            process.signal(sig)
            try:
                process.wait(timeout=wait)
                break
            except TimeoutError:
                continue
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def _adopt_locked(self) -> bool:
        try:
            running = self.master.processes()
        except HAProxyUnavailable:
            return False
        try:
            argv = Path(f"/proc/{running.master_pid}/cmdline").read_bytes()
        except OSError:
            argv = b""
        # Ours if it was started with our arguments (the binary's path may be spelled otherwise).
        ours = b"\0".join(a.encode() for a in self.command[1:])
        if b"\0" + ours + b"\0" not in b"\0" + argv:
            raise EnvironmentProblem(
                f"an HAProxy (pid {running.master_pid}) already answers on {self.master.path} "
                "with another command line; stop it or use another --run-dir"
            )
        self._process = _Process(running.master_pid, None)
        self.adopted = True
        log.warning(
            "adopted the haproxy (pid %d) a previous controller left running; the "
            "next config reloads it",
            running.master_pid,
        )
        return True

    def _spawn_locked(self) -> None:
        Path(self.master.path).unlink(missing_ok=True)  # a stale socket from a previous run
        try:
            # A session of its own: a terminal's Ctrl-C or a signal to our process group must
            # not kill HAProxy behind our back; stop() ends it gracefully.
            child = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise EnvironmentProblem(f"cannot run {self.binary}: {exc}") from exc
        self._process = _Process(child.pid, child)
        self.adopted = False
        self.last_output = []
        threading.Thread(
            target=self._forward, args=(child,), name="haproxy-output", daemon=True
        ).start()
        log.info("started haproxy (pid %d): %s", child.pid, " ".join(self.command))

    def _forward(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.last_output = [*self.last_output[-99:], line]
            haproxy_log.log(output_level(line), "%s", line)

    def _watch(self) -> None:
        """Restart the master we watch when it dies, after a backoff; if someone else (start())
        replaced it meanwhile, watch that one instead: never two masters."""
        delay = self._backoff[0]
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            with self._lock:
                replaced = self._process is not process and self._process is not None
            if replaced:
                continue
            log.error(
                "haproxy (pid %d) exited with code %d; restarting in %.1fs",
                process.pid,
                code,
                delay,
            )
            if self._on_exit is not None:
                self._on_exit(code)
            if self._stopping.wait(delay):
                return
            delay = (
                self._backoff[0]
                if time.monotonic() - started > 60  # not a crash loop
                else min(delay * 2, self._backoff[1])
            )
            with self._lock:
                if self._stopping.is_set() or self._process is not process:
                    continue  # stopped, or start() already replaced it while we waited
                try:
                    self._spawn_locked()
                    self.restarts += 1
                except EnvironmentProblem as exc:
                    log.error("%s", exc)
