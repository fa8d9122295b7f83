"""master: HAProxy's master CLI: which processes run, which version, reloads confirmed.

A reload is confirmed the way the running version allows (capabilities.py). From 2.7 `reload`
waits for the new worker and answers `Success=1` or `Success=0`, `--`, then the startup log;
from 3.1 a reload sent while another loads answers "Another reload is still in progress." In
2.6 it answers nothing: the outcome is read from `show proc` (the master's reload counter
moves, `[failed: N]` counts failures). On every version a worker counts as ready only once it
answers through the master (`@!<pid> show info`): from 3.1 `show proc` lists a worker before it
parsed its config and bound its listeners.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass

from kube2haproxy.appliers.cli_socket import unix_command
from kube2haproxy.capabilities import Capabilities, Version, parse_version
from kube2haproxy.errors import ConfigRefused, HAProxyUnavailable

ALIVE_GRACE_S = 30.0
READY_POLL_S = 0.02
BUSY = "Another reload is still in progress"


@dataclass(frozen=True, slots=True)
class Processes:
    """The master's `show proc`."""

    master_pid: int
    reloads: int  # reloads the master performed
    failed: int  # failed reloads since the last successful one
    workers: tuple[tuple[int, int], ...]  # (pid, reloads survived) under `# workers`
    old_workers: tuple[tuple[int, int], ...]  # the same, under `# old workers`

    @property
    def current_worker(self) -> int | None:
        """The worker started by the latest successful (re)load: listed under `# workers`
        with no reload survived."""
        fresh = [pid for pid, reloads in self.workers if reloads == 0]
        return fresh[0] if fresh else None

    @property
    def serving_worker(self) -> int | None:
        """The youngest worker: the current one, or after a refused reload (which 3.3 lists
        under `# old workers`) the one that serves on."""
        listed = self.workers or self.old_workers
        return min(listed, key=lambda w: w[1])[0] if listed else None

    @property
    def pids(self) -> frozenset[int]:
        return frozenset(
            [self.master_pid, *(p for p, _ in self.workers), *(p for p, _ in self.old_workers)]
        )


_MASTER = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.M)
_PROCESS = re.compile(r"^(\d+)\s+worker\s+(\d+)", re.M)
_SUCCESS = re.compile(r"Success=([01])\n")


def parse_processes(text: str) -> Processes:
    master = _MASTER.search(text)
    if master is None:
        raise HAProxyUnavailable(f"unexpected answer to 'show proc': {text[:200]!r}")
    sections: dict[str, list[tuple[int, int]]] = {"workers": [], "old workers": []}
    section = ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").lower()
            continue
        match = _PROCESS.match(line)
        if match is not None and section in sections:
            sections[section].append((int(match.group(1)), int(match.group(2))))
    return Processes(
        int(master.group(1)),
        int(master.group(2)),
        int(master.group(3)),
        tuple(sections["workers"]),
        tuple(sections["old workers"]),
    )


class MasterCLI:
    """The master CLI socket of an HAProxy running in master-worker mode."""

    def __init__(self, path: str, *, timeout_s: float = 5.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._answered_at: float | None = None

    def command(self, command: str, *, timeout_s: float | None = None) -> str:
        text = unix_command(
            self.path, command, timeout_s=timeout_s or self.timeout_s, half_close=True
        )
        self._answered_at = time.monotonic()
        return text

    def processes(self) -> Processes:
        return parse_processes(self.command("show proc"))

    def version(self) -> Version:
        text = self.command("show version")
        try:
            return parse_version(text)
        except ValueError as exc:
            raise HAProxyUnavailable(f"unexpected answer to 'show version': {text[:80]!r}") from exc

    def alive(self, *, grace_s: float = ALIVE_GRACE_S) -> bool:
        """The master answers, or answered within `grace_s`: while it re-executes for a reload
        (seconds at 10,000 services) it answers nothing, and that is not a death."""
        try:
            self.processes()
        except HAProxyUnavailable:
            answered = self._answered_at
            return answered is not None and time.monotonic() - answered < grace_s
        return True

    def worker_ready(self, pid: int, *, timeout_s: float = 1.0) -> bool:
        """The worker answers through the master: it parsed its config and runs."""
        try:
            info = self.command(f"@!{pid} show info", timeout_s=timeout_s)
        except HAProxyUnavailable:
            return False
        return f"\nPid: {pid}\n" in f"\n{info}"

    def wait_ready(self, *, deadline: float, known: frozenset[int] = frozenset()) -> int | None:
        """Wait for a worker that is not `known` to answer; its pid, or None at the deadline.
        Only for a worker known to have loaded (a confirmed reload, the master's "Loading
        success."): on 3.x, asking a worker that is still loading through the master can leave
        a master CLI connection open for good, and ten of them fill the master CLI."""
        while time.monotonic() < deadline:
            with contextlib.suppress(HAProxyUnavailable):
                worker = self.processes().current_worker
                if worker is not None and worker not in known and self.worker_ready(worker):
                    return worker
            time.sleep(READY_POLL_S)
        return None

    def reload(self, capabilities: Capabilities, *, timeout_s: float) -> Processes:
        """Reload and wait until a new worker runs the new config and answers. ConfigRefused
        (with HAProxy's startup log when the version gives it) when the reload failed;
        HAProxyUnavailable when no outcome came within `timeout_s`, or another reload is
        still loading (retry later)."""
        deadline = time.monotonic() + timeout_s
        before = self.processes()
        known = before.pids
        if capabilities.reload_reply:
            self._reload_answered(timeout_s=max(0.1, deadline - time.monotonic()))
        else:
            self._reload_polled(before, deadline=deadline)
        worker = self.wait_ready(deadline=deadline, known=known)
        if worker is None:
            raise HAProxyUnavailable(
                f"reload not confirmed within {timeout_s:g}s: no new worker answered"
            )
        return self.processes()

    def _reload_answered(self, *, timeout_s: float) -> None:
        """2.7 and later: the master answers once the new worker loaded, or failed to."""
        reply = self.command("reload", timeout_s=timeout_s)
        match = _SUCCESS.match(reply)
        log = reply.split("--\n", 1)[1].strip() if "--\n" in reply else reply.strip()
        if match is None:
            raise HAProxyUnavailable(f"unexpected answer to 'reload': {reply[:200]!r}")
        if match.group(1) == "1":
            return
        if BUSY in reply:
            raise HAProxyUnavailable("another reload is still loading; trying again later")
        raise ConfigRefused("HAProxy refused the new config; the old worker serves on", output=log)

    def _reload_polled(self, before: Processes, *, deadline: float) -> None:
        """2.6: `reload` answers nothing; the master's counters tell the outcome."""
        self.command("reload")
        while time.monotonic() < deadline:
            time.sleep(READY_POLL_S)
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
            return
        raise HAProxyUnavailable("reload not confirmed: the master's reload counter did not move")
