"""supervisor: runs HAProxy in master-worker mode in the foreground and keeps it running.

`haproxy -W -db -S <master>,level,admin,mode,600 -f <config>`: its output goes to our log (at
levels that say what matters), it is restarted with a backoff when it dies, stopped gracefully
(SIGUSR1, then SIGTERM, then SIGKILL), and an HAProxy a previous controller left running on the
same socket with the same command is adopted rather than doubled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kube2haproxy.appliers.master import MasterCLI
from kube2haproxy.errors import ConfigRefused, EnvironmentProblem, HAProxyUnavailable

log = logging.getLogger(__name__)
haproxy_log = logging.getLogger("kube2haproxy.haproxy.output")


# Printed on every reload by the old worker, once per proxy: 10,000 lines at 10,000 services.
# And on every runtime update: each server line added or deleted.
_ROUTINE = re.compile(
    r"Proxy \S+ stopped \(cumulated conns|Stopping (frontend|backend|proxy) |"
    r"Former worker \(\d+\) exited with code 0|haproxy version is|path to executable is|"
    r"CLI : 'server \S+' : (New server registered|Server deleted)\.|"
    # A spare or a deleted service's backend whose lines were all parked: planned.
    r"backend 'spare_\d+' has no server available!"
)
# The master's line once its first worker loaded (2.6 to 3.4).
_LOADED = re.compile(r"\] +\(\d+\) : Loading success\.$")
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
        self._loaded = threading.Event()  # the master printed "Loading success." since spawning

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
            # Listed is not ready (from 3.1 a worker is listed before it parsed its config), and
            # asking a worker that is still loading through the master (`@!<pid>`) can leave a
            # master CLI connection open for good on 3.x (ten such fill it): wait for the
            # master's "Loading success." (every version prints it), then ask the worker.
            if self._loaded.is_set():
                with contextlib.suppress(HAProxyUnavailable):
                    worker = self.master.processes().current_worker
                    if worker is not None and self.master.worker_ready(worker):
                        return
            self._loaded.wait(0.05)
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
        self._loaded.set()  # it runs a worker already
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
        self._loaded.clear()
        threading.Thread(
            target=self._forward, args=(child,), name="haproxy-output", daemon=True
        ).start()
        log.info("started haproxy (pid %d): %s", child.pid, " ".join(self.command))

    def _forward(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        with child.stdout as output:  # closed at end of file: when every process let go of it
            for raw in output:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                self.last_output = [*self.last_output[-99:], line]
                if _LOADED.search(line):
                    self._loaded.set()
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
