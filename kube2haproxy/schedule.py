"""schedule: when the controller does what, as a pure object driven by the clock it is given.

Changes are looked at shortly after they arrive (the runtime debounce: endpoint churn goes out
in milliseconds); a change that needs a reload waits for a quiet period (the debounce) but never
longer than the maximum delay after the first pending change, so a storm of changes is one
reload. A failed apply is retried after a backoff that doubles up to a ceiling; drift checks and
retests of unbindable addresses come at their intervals. No clock of its own, no threads: every
method takes `now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAX_RETRY_S = 120.0
RETEST_S = 30.0  # unbindable addresses are tried again this often


class Due(Enum):
    NOTHING = "nothing"
    CHANGE = "change"  # look at the pending changes (a runtime update, or a reload if allowed)
    RETRY = "retry"
    DRIFT = "drift"
    RETEST = "retest"


@dataclass(slots=True)
class Schedule:
    debounce_s: float
    max_delay_s: float
    runtime_debounce_s: float
    retry_s: float  # first wait after a failure; doubles up to MAX_RETRY_S
    drift_s: float  # 0: no drift checks
    first_pending: float | None = None
    last_change: float = 0.0
    reload_waits: bool = False  # a pending change needs a reload: the long debounce applies
    retry_at: float | None = None
    retry_delay: float = 0.0
    drift_at: float | None = None
    retest_at: float | None = None

    def __post_init__(self) -> None:
        self.retry_delay = self.retry_s

    # --- changes --------------------------------------------------------------------------

    def changed(self, now: float) -> None:
        if self.first_pending is None:
            self.first_pending = now
        self.last_change = now

    def consumed(self) -> None:
        """The pending changes are being applied."""
        self.first_pending = None
        self.reload_waits = False

    def wait_for_reload(self) -> None:
        """The pending change needs a reload: keep it until the debounce ends."""
        self.reload_waits = True

    @property
    def pending(self) -> bool:
        return self.first_pending is not None

    def reload_deadline(self) -> float | None:
        """When a pending change that needs a reload is applied: after a quiet period, never
        later than the maximum delay after the first pending change."""
        if self.first_pending is None:
            return None
        return min(self.last_change + self.debounce_s, self.first_pending + self.max_delay_s)

    def change_deadline(self) -> float | None:
        """When the pending change is looked at: soon (a runtime update may do), or at the
        reload deadline once it is known to need a reload."""
        full = self.reload_deadline()
        if full is None or self.reload_waits:
            return full
        return min(self.last_change + self.runtime_debounce_s, full)

    def reload_allowed(self, now: float) -> bool:
        full = self.reload_deadline()
        return self.reload_waits or (full is not None and now >= full)

    # --- failures, drift, retests ---------------------------------------------------------

    def failed(self, now: float) -> float:
        """An apply failed: retry after the current backoff (returned), doubled for the next."""
        delay = self.retry_delay
        self.retry_at = now + delay
        self.retry_delay = min(delay * 2, MAX_RETRY_S)
        return delay

    def attempting(self) -> None:
        """An apply is under way: no retry is due meanwhile (a failure schedules the next)."""
        self.retry_at = None

    def succeeded(self) -> None:
        self.retry_at = None
        self.retry_delay = self.retry_s

    @property
    def retrying(self) -> bool:
        return self.retry_at is not None

    def drift_after(self, now: float, *, at_once: bool = False) -> None:
        self.drift_at = None if self.drift_s <= 0 else now + (0.0 if at_once else self.drift_s)

    def retest_after(self, now: float | None) -> None:
        """Retest unbindable addresses RETEST_S after `now`; None: nothing to retest."""
        self.retest_at = None if now is None else now + RETEST_S

    # --- what is due ----------------------------------------------------------------------

    def due(self, now: float, *, synced: bool) -> Due:
        """The one thing to do now (changes first), if any."""
        change = self.change_deadline()
        if synced and change is not None and now >= change:
            return Due.CHANGE
        if synced and self.retry_at is not None and now >= self.retry_at:
            return Due.RETRY
        if synced and self.drift_at is not None and now >= self.drift_at:
            return Due.DRIFT
        if self.retest_at is not None and now >= self.retest_at:
            return Due.RETEST
        return Due.NOTHING

    def wakeup(self, now: float, *, synced: bool) -> float | None:
        """Seconds until something is due (None: nothing is scheduled)."""
        candidates = [self.retest_at]
        if synced:
            candidates += [self.change_deadline(), self.retry_at, self.drift_at]
        deadlines = [d for d in candidates if d is not None]
        return None if not deadlines else max(0.0, min(deadlines) - now)
