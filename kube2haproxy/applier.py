"""applier: put a rendered config into service: stage, `haproxy -c`, install, reload, confirm.

The file at the config path is always a config HAProxy accepted: a config that fails the check
is discarded before it is installed, and one that passes the check but that HAProxy then refuses
(a failed reload, a supervised start that dies) is replaced by the last good one again. The
`Applier` protocol lets the controller run against a recording applier in tests and dry runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kube2haproxy import configfile, sockets
from kube2haproxy.errors import (
    ConfigRefused,
    EnvironmentProblem,
    HAProxyUnavailable,
    RuntimeUpdateError,
)
from kube2haproxy.haproxy import MasterCLI, RuntimeAPI, Supervisor
from kube2haproxy.model import MAP_FILES
from kube2haproxy.plan import Observed
from kube2haproxy.settings import maps_dir_beside

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApplyReport:
    outcome: str  # "reloaded", "started", "unchanged"
    check_s: float = 0.0
    reload_s: float = 0.0
    check_output: str = ""


class Applier(Protocol):
    def apply(
        self, text: str, *, force: bool = False, files: Mapping[str, str] | None = None
    ) -> ApplyReport:
        """Make HAProxy run this config, with the files it refers to (by name in the maps
        directory); reload even if unchanged when `force`. Kube2HAProxyError saying why not."""
        ...

    def apply_runtime(
        self, commands: Sequence[str], render: Callable[[], str] | None
    ) -> ApplyReport:
        """Apply runtime API commands, then keep the config they amount to (render() is called
        after the commands, off the latency path) on disk; None: the file is already right.
        RuntimeUpdateError when anything does not go exactly as planned."""
        ...

    def observe(self) -> dict[tuple[str, str], Observed] | None:
        """Every server line as HAProxy reports it, or None when there is nothing to observe."""
        ...

    def unbindable(
        self, binds: Iterable[tuple[str, int]], *, transparent: bool
    ) -> dict[tuple[str, int], str]:
        """The address:port pairs this host cannot listen on, with why (none for appliers
        without an HAProxy)."""
        ...

    def healthy(self) -> bool:
        """HAProxy answers (always true for appliers without an HAProxy)."""
        ...

    def serving_before_us(self) -> bool:
        """HAProxy serves a config someone else gave it, before we applied any."""
        ...

    def shared_listeners(
        self, listening: Mapping[tuple[str, int], Sequence[tuple[str, int]]]
    ) -> dict[tuple[str, int], str]:
        """Of HAProxy's sockets (model.listeners) and the VIPs they serve, those where another
        process listens too, with who (none for appliers without an HAProxy)."""
        ...


class RecordingApplier:
    """Keeps every config and runtime command it is given; for dry runs and controller tests."""

    def __init__(self) -> None:
        self.configs: list[str] = []
        self.commands: list[list[str]] = []
        self.reloads = 0

    def apply(
        self, text: str, *, force: bool = False, files: Mapping[str, str] | None = None
    ) -> ApplyReport:
        self.configs.append(text)
        self.files = dict(files or {})
        self.reloads += 1
        return ApplyReport("recorded")

    def apply_runtime(
        self, commands: Sequence[str], render: Callable[[], str] | None
    ) -> ApplyReport:
        self.commands.append(list(commands))
        if render is not None:
            self.configs.append(render())
        return ApplyReport("updated")

    def observe(self) -> dict[tuple[str, str], Observed] | None:
        return None

    def unbindable(
        self, binds: Iterable[tuple[str, int]], *, transparent: bool
    ) -> dict[tuple[str, int], str]:
        return {}

    def healthy(self) -> bool:
        return True

    def serving_before_us(self) -> bool:
        return False

    def shared_listeners(
        self, listening: Mapping[tuple[str, int], Sequence[tuple[str, int]]]
    ) -> dict[tuple[str, int], str]:
        return {}


class HAProxyApplier:
    """Drives a real HAProxy: attached (someone else runs it; we have its master socket) or
    supervised (`supervisor` runs it; started on the first valid config)."""

    def __init__(
        self,
        *,
        config: Path,
        binary: str,
        check_timeout_s: float,
        reload_timeout_s: float,
        master: MasterCLI,
        runtime: RuntimeAPI | None = None,
        supervisor: Supervisor | None = None,
        maps_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.maps_dir = maps_dir if maps_dir is not None else Path(maps_dir_beside(str(config)))
        self.runtime = runtime
        self.binary = binary
        self.check_timeout_s = check_timeout_s
        self.reload_timeout_s = reload_timeout_s
        self.master = master
        self.supervisor = supervisor
        # What HAProxy runs now, as far as we know: attached, the file someone else started it
        # with (left alone until we have something better); supervised, nothing yet.
        self._running_text: str | None = None
        if supervisor is None and config.exists():
            self._running_text = config.read_text(encoding="utf-8", errors="replace")
        self._refused: tuple[str, float] | None = None  # a config HAProxy refused, and when
        self._writer = configfile.Writer(config)  # the file after runtime updates

    def healthy(self) -> bool:
        return self.master.alive()

    def serving_before_us(self) -> bool:
        # Attached: HAProxy is someone else's, started with the file we found.
        return self.supervisor is None and self._running_text is not None

    def shared_listeners(
        self, listening: Mapping[tuple[str, int], Sequence[tuple[str, int]]]
    ) -> dict[tuple[str, int], str]:
        return sockets.shared(sockets.addresses_of(listening), own_pids=self._own_pids())

    def _own_pids(self) -> set[int] | None:
        """HAProxy's master and workers as this host's /proc shows them; None when they are
        not visible (another pid namespace: a pid there may be another process here)."""
        try:
            master = self.master.processes().master_pid
        except HAProxyUnavailable:
            return None
        if self.supervisor is None:
            try:
                if Path(f"/proc/{master}/comm").read_text().strip() != "haproxy":
                    return None
            except OSError:
                return None
        return sockets.process_tree(master)

    def apply(
        self, text: str, *, force: bool = False, files: Mapping[str, str] | None = None
    ) -> ApplyReport:
        running = self.supervisor.running if self.supervisor is not None else True
        if running and text == self._running_text and not force:
            # The files it refers to must exist all the same: a restarted HAProxy loads them.
            configfile.write_files(self.maps_dir, files or {})
            return ApplyReport("unchanged")
        self._writer.flush()  # a runtime update's file must not land after this one
        if (
            not force
            and self._refused is not None
            and self._refused[0] == text
            and time.monotonic() - self._refused[1] < RESEND_REFUSED_AFTER_S
        ):
            # A refused reload pauses every listener for seconds: do not send the same config
            # again before something changes (or a long while passed).
            raise ConfigRefused(
                "HAProxy refused this exact config already; waiting for a change "
                f"(it is kept in {configfile.rejected_path(self.config)})"
            )
        configfile.write_files(self.maps_dir, files or {})
        staged = configfile.Staged(self.config, text)
        started = time.monotonic()
        output = staged.check(binary=self.binary, timeout_s=self.check_timeout_s)
        check_s = time.monotonic() - started
        staged.commit()
        started = time.monotonic()
        try:
            if self.supervisor is not None and not self.supervisor.running:
                self.supervisor.start(ready_timeout_s=self.reload_timeout_s)
                outcome = "started"
                if self.supervisor.adopted:  # it runs what a previous controller gave it
                    self.master.reload(timeout_s=self.reload_timeout_s)
                    outcome = "adopted and reloaded"
            else:
                self.master.reload(timeout_s=self.reload_timeout_s)
                outcome = "reloaded"
        except ConfigRefused as exc:
            # Refused by HAProxy itself: remembered, and kept for the operator to read.
            self._refused = (text, time.monotonic())
            rejected = configfile.keep_rejected(self.config, text)
            self._restore()
            raise ConfigRefused(
                f"{exc} (the config is kept in {rejected})", output=exc.output
            ) from exc
        except EnvironmentProblem:
            # Unavailable or stalled: what it runs is unknown; the same config is tried again.
            self._restore()
            raise
        self._running_text = text
        # Files of older configs (content-addressed maps) are not needed once this one runs.
        configfile.prune_files(self.maps_dir, files or {}, pattern=MAP_FILES)
        return ApplyReport(outcome, check_s, time.monotonic() - started, output)

    def apply_runtime(
        self, commands: Sequence[str], render: Callable[[], str] | None
    ) -> ApplyReport:
        if self.runtime is None:
            raise RuntimeUpdateError("no runtime socket configured")
        if self.supervisor is not None and not self.supervisor.running:
            raise RuntimeUpdateError("haproxy is not running")
        if self._running_text is None:
            raise RuntimeUpdateError("the running config is unknown: a reload sets it")
        started = time.monotonic()
        try:
            replies = self.runtime.execute(commands)
        except (HAProxyUnavailable, ValueError) as exc:
            raise RuntimeUpdateError(str(exc)) from exc
        for command, reply in zip(commands, replies, strict=True):
            problem = unexpected_reply(command, reply)
            if problem is not None:
                raise RuntimeUpdateError(problem)
        elapsed = time.monotonic() - started
        if render is not None:
            text = render()
            # HAProxy runs exactly this text now: no `haproxy -c` (only slots changed). It is
            # written in the background; a reload flushes it first.
            self._writer.submit(text)
            self._running_text = text
        return ApplyReport("updated", reload_s=elapsed)

    def unbindable(
        self, binds: Iterable[tuple[str, int]], *, transparent: bool
    ) -> dict[tuple[str, int], str]:
        return {key: why for key in binds if (why := bind_problem(*key, transparent=transparent))}

    def observe(self) -> dict[tuple[str, str], Observed] | None:
        if self.runtime is None:
            return None
        return {
            key: Observed(s.addr, s.port, s.in_maintenance, s.draining)
            for key, s in self.runtime.servers_state().items()
        }

    def flush(self) -> None:
        """Wait until the config HAProxy runs is on disk (a runtime update's write is async)."""
        self._writer.flush()

    def _restore(self) -> None:
        """Put the config HAProxy runs back on disk, so a restart loads what is known to work;
        with none (a first start that failed), leave no file HAProxy refused."""
        if self._running_text is None:
            with contextlib.suppress(FileNotFoundError):
                self.config.unlink()
            return
        try:
            configfile.write_atomic(self.config, self._running_text)
        except EnvironmentProblem as exc:
            log.error("cannot restore the last good config: %s", exc)


_ADDR_REPLY = re.compile(
    r"(?:IP changed from '[^']*' to '(?P<ip>[^']*)'|no need to change the addr), "
    r"(?:port changed from '[^']*' to '(?P<port>[^']*)'|no need to change the port) "
    r"by 'stats socket command'"
)


def unexpected_reply(command: str, reply: str) -> str | None:
    """None when HAProxy answered `command` exactly as a success looks, else what is wrong.
    `set server ... state X` answers nothing; `set server ... addr A port P` says what it
    changed (or that nothing needed to), naming the new address and port."""
    words = command.split()
    if words[3:4] == ["state"]:
        return None if reply == "" else f"{command!r}: {reply!r}"
    if words[3:4] == ["addr"] and len(words) == 7:
        match = _ADDR_REPLY.fullmatch(reply)
        if match is None:
            return f"{command!r}: {reply!r}"
        if match["ip"] is not None and not _same_ip(match["ip"], words[4]):
            return f"{command!r}: HAProxy set the address {match['ip']!r}"
        if match["port"] is not None and match["port"] != words[6]:
            return f"{command!r}: HAProxy set the port {match['port']!r}"
        return None
    return f"{command!r}: not a command this applier sends"


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


RESEND_REFUSED_AFTER_S = 120.0
_IP_FREEBIND, _IPV6_FREEBIND = 15, 78  # linux/in.h, linux/in6.h


def bind_problem(ip: str, port: int, *, transparent: bool) -> str | None:
    """Why HAProxy could not listen on ip:port on this host, or None. Binds a test socket as
    HAProxy would: SO_REUSEPORT (so HAProxy's own listeners, same user, do not count as a
    conflict) and, for `transparent` binds, FREEBIND (an address the host does not hold)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # HAProxy's IPv6 wildcard bind is v6only (ports.j2); a specific address is
                # the same either way.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if transparent:
                level, option = (
                    (socket.IPPROTO_IPV6, _IPV6_FREEBIND)
                    if family == socket.AF_INET6
                    else (socket.IPPROTO_IP, _IP_FREEBIND)
                )
                sock.setsockopt(level, option, 1)
            sock.bind((ip, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
