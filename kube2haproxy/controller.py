"""controller: the only code that knows the order of the steps.

One queue, one consumer. Sources put events in; the consumer applies them to the store and,
once every source has synced, runs the pipeline after a quiet period (debounce) but never later
than a maximum delay after the first pending change: snapshot -> translate -> plan against the
last applied model -> render -> apply. A failed apply (a config HAProxy refuses, a reload that
fails, a bug) is logged, counted and retried on the next change or after a backoff; the last good
config keeps serving, and the controller never exits because of one bad object.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from kube2haproxy import heap
from kube2haproxy.applier import Applier
from kube2haproxy.errors import CheckError, Kube2HAProxyError
from kube2haproxy.findings import Finding, Severity, SkipReason
from kube2haproxy.haproxy import ReloadError
from kube2haproxy.metrics import Metrics
from kube2haproxy.model import Model
from kube2haproxy.plan import Action, plan
from kube2haproxy.render import Renderer
from kube2haproxy.settings import Settings
from kube2haproxy.store import Event, EventType, Store
from kube2haproxy.translate import TranslateCache, translate

log = logging.getLogger(__name__)

MAX_RETRY_S = 120.0
Emit = Callable[[Event], None]


class Source(Protocol):
    """Something that turns the outside world into events: kube watches, manifest files."""

    names: tuple[str, ...]  # each sends one SYNCED event under its name

    def start(self, emit: Emit) -> None: ...

    def stop(self) -> None: ...


class Controller:
    def __init__(
        self,
        *,
        settings: Settings,
        sources: Sequence[Source],
        applier: Applier,
        renderer: Renderer,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._sources = sources
        self._applier = applier
        self._renderer = renderer
        self.metrics = metrics
        self._clock = clock
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._store = Store()
        self._cache = TranslateCache()
        self._synced = {name: False for source in sources for name in source.names}
        self.applied_model: Model | None = None
        self._first_pending: float | None = None
        self._last_change = 0.0
        self._pending = 0
        self._retry_at: float | None = None
        self._retry_delay = settings.run.retry_ms / 1000
        self._reported: set[Finding] = set()
        self._stop = threading.Event()
        self.ready = threading.Event()  # every source synced and a config applied
        self.applies = 0  # successful applies that changed what HAProxy runs
        self.failures = 0

    # --- threads --------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Called by sources, from any thread."""
        self._queue.put(event)

    def start_sources(self) -> None:
        for source in self._sources:
            source.start(self.emit)

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        for source in self._sources:
            source.stop()

    def run(self) -> None:
        """The consumer loop; returns after stop()."""
        while not self._stop.is_set():
            timeout = self._next_wakeup()
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            while item is not None:
                self._handle(item)
                try:
                    item = self._queue.get_nowait()  # take the whole burst before deciding
                except queue.Empty:
                    item = None
            if not self._stop.is_set() and self._due():
                self.apply()

    # --- decisions ------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return all(self._synced.values())

    def _handle(self, event: Event) -> None:
        if event.type is EventType.SYNCED:
            if not self._synced.get(event.source, True):
                self._synced[event.source] = True
                self.metrics.synced.labels(event.source).set(1)
                log.info("source %s synced (%d objects stored)", event.source, len(self._store))
                self._mark_pending()
            return
        if self._store.apply(event):
            self._pending += 1
            self.metrics.pending_changes.set(self._pending)
            self._mark_pending()

    def _mark_pending(self) -> None:
        now = self._clock()
        if self._first_pending is None:
            self._first_pending = now
        self._last_change = now

    def _deadline(self) -> float | None:
        if not self.synced:
            return None
        candidates = []
        if self._first_pending is not None:
            run = self._settings.run
            candidates.append(
                min(
                    self._last_change + run.debounce_ms / 1000,
                    self._first_pending + run.max_delay_ms / 1000,
                )
            )
        if self._retry_at is not None:
            candidates.append(self._retry_at)
        return min(candidates) if candidates else None

    def _next_wakeup(self) -> float | None:
        deadline = self._deadline()
        return None if deadline is None else max(0.0, deadline - self._clock())

    def _due(self) -> bool:
        deadline = self._deadline()
        return deadline is not None and self._clock() >= deadline

    # --- the pipeline ---------------------------------------------------------------------

    def apply(self) -> None:
        """Translate, plan and, when something changed, render and apply. Never raises."""
        retrying = self._retry_at is not None
        self._first_pending = None
        self._retry_at = None
        pending, self._pending = self._pending, 0
        try:
            self._apply(retrying=retrying)
        except Exception as exc:
            self._failed(exc, result="error", pending=pending)
            return
        self.metrics.pending_changes.set(0)

    def _apply(self, *, retrying: bool) -> None:
        started = time.perf_counter()
        with heap.paused():
            translation = translate(
                self._store.snapshot(), self._settings.translate, cache=self._cache
            )
        self.metrics.translate_seconds.observe(time.perf_counter() - started)
        self._report(translation.findings)
        model = translation.model
        self.metrics.services.set(len(model.services))
        self.metrics.endpoints.set(model.server_count)
        for reason in SkipReason:
            self.metrics.skipped.labels(reason.value).set(translation.skipped.get(reason, 0))
        self.metrics.warnings.set(len(translation.warnings))

        decision = plan(self.applied_model, model)
        if decision.action is Action.NONE and not retrying:
            log.debug("no change to apply")
            return
        started = time.perf_counter()
        with heap.paused():
            text = self._renderer.render(model)
        self.metrics.render_seconds.observe(time.perf_counter() - started)

        report = self._applier.apply(text)
        if report.check_s:
            self.metrics.validate_seconds.observe(report.check_s)
        if report.check_output:
            log.warning("haproxy -c accepted the config with warnings:\n%s", report.check_output)
        self.metrics.validation_failed.set(0)
        self.applied_model = model
        self._retry_delay = self._settings.run.retry_ms / 1000
        self.metrics.applied()
        if report.outcome != "unchanged":
            self.metrics.reload_seconds.observe(report.reload_s)
            self.metrics.reloads.labels("success").inc()
            self.applies += 1
            log.info(
                "%s haproxy: %s (%d services, %d endpoints; check %.2fs, reload %.2fs)",
                report.outcome,
                "; ".join(decision.reasons) or "retry",
                len(model.services),
                model.server_count,
                report.check_s,
                report.reload_s,
            )
        self.ready.set()

    def _failed(self, exc: BaseException, *, result: str, pending: int) -> None:
        self.failures += 1
        if isinstance(exc, CheckError):
            result = "check_failed"
            self.metrics.validation_failed.set(1)
            detail = f"{exc}\n{exc.output}"
        elif isinstance(exc, ReloadError):
            result = "reload_failed"
            detail = f"{exc}\n{exc.output}".rstrip()
        elif isinstance(exc, Kube2HAProxyError):
            result = "reload_failed"
            detail = str(exc)
        else:
            detail = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("apply failed with a bug; the last good config keeps serving")
        self.metrics.reloads.labels(result).inc()
        self._retry_at = self._clock() + self._retry_delay
        log.error(
            "apply failed (%s); the last good config keeps serving; retrying on the next change "
            "or in %.0fs:\n%s",
            result,
            self._retry_delay,
            detail,
        )
        self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_S)
        self._pending += pending
        self.metrics.pending_changes.set(self._pending)

    def _report(self, findings: tuple[Finding, ...]) -> None:
        """Log each finding once, when it appears (every apply sees the whole cluster)."""
        current = set(findings)
        for finding in findings:
            if finding not in self._reported:
                log.log(
                    logging.WARNING if finding.severity is Severity.WARNING else logging.DEBUG,
                    "%s",
                    finding,
                )
        self._reported = current
