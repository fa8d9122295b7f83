"""applier: put a rendered config into service: stage, `haproxy -c`, install, reload, confirm.

The file at the config path is always a config HAProxy accepted: a config that fails the check
is discarded before it is installed, and one that passes the check but that HAProxy then refuses
(a failed reload, a supervised start that dies) is replaced by the last good one again. The
`Applier` protocol lets the controller run against a recording applier in tests and dry runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kube2haproxy import configfile
from kube2haproxy.errors import EnvironmentProblem, Kube2HAProxyError
from kube2haproxy.haproxy import HAProxyUnavailable, MasterCLI, ReloadError, Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApplyReport:
    outcome: str  # "reloaded", "started", "unchanged"
    check_s: float = 0.0
    reload_s: float = 0.0
    check_output: str = ""


class Applier(Protocol):
    def apply(self, text: str) -> ApplyReport:
        """Make HAProxy run this config, or raise a Kube2HAProxyError saying why not."""
        ...

    def healthy(self) -> bool:
        """HAProxy answers (always true for appliers without an HAProxy)."""
        ...


class RecordingApplier:
    """Keeps every config it is given; for dry runs and controller tests."""

    def __init__(self) -> None:
        self.configs: list[str] = []

    def apply(self, text: str) -> ApplyReport:
        self.configs.append(text)
        return ApplyReport("recorded")

    def healthy(self) -> bool:
        return True


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
        supervisor: Supervisor | None = None,
    ) -> None:
        self.config = config
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

    def healthy(self) -> bool:
        return self.master.alive()

    def apply(self, text: str) -> ApplyReport:
        running = self.supervisor.running if self.supervisor is not None else True
        if running and text == self._running_text:
            return ApplyReport("unchanged")
        staged = configfile.Staged(self.config, text)
        started = time.monotonic()
        try:
            output = configfile.check(
                staged.path, binary=self.binary, timeout_s=self.check_timeout_s
            )
        except Kube2HAProxyError:
            staged.discard()
            raise
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
        except (ReloadError, HAProxyUnavailable, EnvironmentProblem):
            self._restore()
            raise
        self._running_text = text
        return ApplyReport(outcome, check_s, time.monotonic() - started, output)

    def _restore(self) -> None:
        """Put the config HAProxy runs back on disk, so a restart loads what is known to work."""
        if self._running_text is None:
            return
        try:
            configfile.write_atomic(self.config, self._running_text)
        except EnvironmentProblem as exc:
            log.error("cannot restore the last good config: %s", exc)
