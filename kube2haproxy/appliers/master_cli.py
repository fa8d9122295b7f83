"""master_cli: the applier of an HAProxy reached through its master CLI and runtime API sockets.

Supervised (a `Supervisor` runs HAProxy; started on the first valid config) or attached (someone
else runs it; we have its master socket). A reload stages the config beside its destination,
runs `haproxy -c`, renames it into place and reloads, confirmed as the running version allows
(master.py). The file at the config path is always a config HAProxy accepted: one that fails the
check is never installed, and one HAProxy then refuses (a failed reload, a start that exits) is
replaced by the last good one again; either is kept as `<config>.rejected` for the operator. A
runtime update applies the plan's runtime changes through the runtime API (servers added and
deleted, slots filled and parked, map entries), then the file and its maps are rewritten to
match what runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from kube2haproxy import configfile, sockets
from kube2haproxy.appliers import ApplyReport, Config, Outcome, Running, go_on
from kube2haproxy.appliers.master import MasterCLI
from kube2haproxy.appliers.runtime import PAUSE_EVERY, RuntimeAPI
from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.capabilities import Capabilities, capabilities
from kube2haproxy.deployed import Abilities
from kube2haproxy.errors import (
    ConfigRefused,
    EnvironmentProblem,
    HAProxyUnavailable,
    RuntimeUpdateError,
)
from kube2haproxy.plan import Action, Plan

log = logging.getLogger(__name__)

RESEND_REFUSED_AFTER_S = 120.0


class MasterCLIApplier:
    def __init__(
        self,
        *,
        config: Path,
        maps_dir: Path,
        binary: str,
        check_timeout_s: float,
        reload_timeout_s: float,
        master: MasterCLI,
        runtime: RuntimeAPI,
        supervisor: Supervisor | None = None,
        check_capabilities: Capabilities | None = None,
    ) -> None:
        """`check_capabilities`: those of `binary` (which runs `haproxy -c`); supervised, they
        are the running HAProxy's too. Attached, the running HAProxy's version is asked for."""
        self.config = config
        self.maps_dir = maps_dir
        self.binary = binary
        self.check_timeout_s = check_timeout_s
        self.reload_timeout_s = reload_timeout_s
        self.master = master
        self.runtime = runtime
        self.supervisor = supervisor
        self._check_capabilities = check_capabilities
        self._capabilities = check_capabilities if supervisor is not None else None
        # What HAProxy runs now, as far as we know: attached, the file someone else started it
        # with (left alone until we have something better); supervised, nothing yet.
        self._running_text: str | None = None
        if supervisor is None and config.exists():
            self._running_text = config.read_text(encoding="utf-8", errors="replace")
        self._files: dict[str, str] = {}  # the files of the running config
        self._refused: tuple[str, float] | None = None  # a config HAProxy refused, and when
        self._writer = configfile.Writer(config)  # the file after runtime updates

    # --- the protocol ---------------------------------------------------------------------

    def apply(self, plan: Plan, config: Config) -> ApplyReport:
        if plan.action is Action.RUNTIME:
            return self._update(plan, config)
        running = self.supervisor.running if self.supervisor is not None else True
        if running and config.text == self._running_text and not plan.force:
            # The files it refers to must exist all the same: a restarted HAProxy loads them.
            configfile.write_files(self.maps_dir, config.files)
            return ApplyReport(Outcome.UNCHANGED)
        return self._reload(config, force=plan.force)

    def observe(self, *, pause: Callable[[], None] = go_on) -> Running | None:
        statuses = self.runtime.states(pause=pause)
        servers = {}
        for count, (key, status) in enumerate(statuses.items()):
            if not count & PAUSE_EVERY:
                pause()
            servers[key] = status.as_server(key[1])
        return Running(servers, self.pids(), statuses)

    def healthy(self) -> bool:
        return self.master.alive()

    def abilities(self) -> Abilities:
        """Servers are added at runtime on every version; deleted from 3.0 (several crash fixes
        of `del server` came after 2.6.12: 2.6 parks them until the next reload)."""
        try:
            caps = self.capabilities()
        except HAProxyUnavailable:
            return Abilities()
        return Abilities(delete_servers=caps.safe_server_delete)

    def close(self) -> None:
        self._writer.flush()

    # --- beyond the protocol: what the host checks need -----------------------------------

    def pids(self) -> frozenset[int] | None:
        """HAProxy's master and workers as this host's /proc shows them; None when they are
        not visible (another pid namespace: a pid there may be another process here)."""
        try:
            master = self.master.processes().master_pid
        except HAProxyUnavailable:
            return None
        if self.supervisor is None and not sockets.is_haproxy(master):
            return None
        return frozenset(sockets.process_tree(master))

    def capabilities(self) -> Capabilities:
        """The running HAProxy's; attached, asked for once on the master CLI."""
        if self._capabilities is None:
            running = capabilities(self.master.version())
            checking = self._check_capabilities
            if checking is not None and checking.version != running.version:
                log.warning(
                    "HAProxy runs %s but `haproxy -c` runs %s (%s): a config one accepts the "
                    "other may refuse; use the same version for both",
                    running.version,
                    checking.version,
                    self.binary,
                )
            self._capabilities = running
            log.info("HAProxy %s answers on %s", running.version, self.master.path)
        return self._capabilities

    # --- reloads --------------------------------------------------------------------------

    def _reload(self, config: Config, *, force: bool) -> ApplyReport:
        self._writer.flush()  # a runtime update's file must not land after this one
        text = config.text
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
        installed = configfile.install(
            self.config,
            text,
            files=config.files,
            maps_dir=self.maps_dir,
            binary=self.binary,
            timeout_s=self.check_timeout_s,
        )
        started = time.monotonic()
        try:
            outcome = self._load()
        except ConfigRefused as exc:
            # Refused by HAProxy itself: remembered, and kept for the operator to read.
            self._refused = (text, time.monotonic())
            rejected = configfile.keep_rejected(self.config, text)
            self._restore()
            message = f"{exc} (the config is kept in {rejected})"
            raise ConfigRefused(message, output=exc.output or self._recent_output()) from exc
        except EnvironmentProblem:
            # Unavailable or stalled: what it runs is unknown; the same config is tried again.
            self._restore()
            raise
        self._running_text = text
        self._files = dict(config.files)
        if config.files_glob:  # files of older configs are not needed once this one runs
            configfile.prune_files(self.maps_dir, config.files, pattern=config.files_glob)
        return ApplyReport(
            outcome, installed.check_s, time.monotonic() - started, installed.check_output
        )

    def _load(self) -> Outcome:
        """Start the supervised HAProxy, or reload the running one; confirmed."""
        if self.supervisor is not None and not self.supervisor.running:
            self.supervisor.start(ready_timeout_s=self.reload_timeout_s)
            if not self.supervisor.adopted:
                return Outcome.STARTED
            # It runs what a previous controller gave it.
            self.master.reload(self.capabilities(), timeout_s=self.reload_timeout_s)
            return Outcome.ADOPTED
        self.master.reload(self.capabilities(), timeout_s=self.reload_timeout_s)
        return Outcome.RELOADED

    def _recent_output(self) -> str:
        """What a supervised HAProxy printed lately (2.6 gives its refusals nowhere else)."""
        if self.supervisor is None:
            return ""
        return "\n".join(self.supervisor.last_output[-20:])

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

    # --- runtime updates ------------------------------------------------------------------

    def _update(self, plan: Plan, config: Config) -> ApplyReport:
        if self.supervisor is not None and not self.supervisor.running:
            raise RuntimeUpdateError("haproxy is not running")
        if self._running_text is None:
            raise RuntimeUpdateError("the running config is unknown: a reload sets it")
        started = time.monotonic()
        try:
            caps = self.capabilities()
        except HAProxyUnavailable as exc:
            raise RuntimeUpdateError(str(exc)) from exc
        self.runtime.update(
            plan.ops, caps, options=config.server_options, maps_dir=str(self.maps_dir)
        )
        elapsed = time.monotonic() - started
        # What HAProxy runs is what this text (and its maps) would load: no `haproxy -c` (no
        # setting changed). The maps first, the text in the background; a reload flushes it.
        # Older maps go, but for those of the text still on disk until the new one lands.
        configfile.write_files(self.maps_dir, config.files)
        if config.files_glob:
            keep = {**self._files, **config.files}
            configfile.prune_files(self.maps_dir, keep, pattern=config.files_glob)
        self._files = dict(config.files)
        self._writer.submit(config.text)
        self._running_text = config.text
        return ApplyReport(Outcome.UPDATED, apply_s=elapsed)
