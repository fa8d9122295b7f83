"""health: what the probes answer about HAProxy, from state already held.

A thread of its own asks HAProxy (through the applier) whether it answers, every
`interval_s`, and remembers when it last did. The probes read that memory: they answer at
once whatever HAProxy does, and a stalled HAProxy (stopped, swapping, re-executing a huge
config) shows as "not answering for N s", a failure, never as a probe that hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(
        self,
        check: Callable[[], bool],
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`check` says whether HAProxy answers; it may block (bounded by its own timeout)."""
        self._check = check
        self._interval_s = interval_s
        self._clock = clock
        self._answered_at: float | None = None
        self._checked_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def poll(self) -> None:
        """Ask once (the thread does this every interval)."""
        try:
            ok = self._check()
        except Exception:  # a bug in a check must not stop the monitor
            log.exception("health check failed")
            ok = False
        now = self._clock()
        self._checked_at = now
        if ok:
            self._answered_at = now

    def healthy(self) -> bool:
        """HAProxy answered at the last look, and that look is recent: a check stuck longer
        than its interval plus a margin counts as no answer."""
        checked, answered = self._checked_at, self._answered_at
        if checked is None or answered != checked:
            return False
        return self._clock() - checked < self._interval_s + 10.0

    def silence(self) -> float | None:
        """Seconds since HAProxy last answered (None: never)."""
        answered = self._answered_at
        return None if answered is None else self._clock() - answered

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._interval_s)
