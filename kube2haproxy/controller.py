"""controller: the only code that knows the order of the steps.

One queue, one consumer. Sources put events in; the consumer applies them to the store and,
once every source has synced, runs the pipeline: snapshot -> translate -> plan against the last
applied model -> apply. Changes that only move endpoints within the existing server slots are
applied through the runtime API shortly after they arrive (`--runtime-debounce`); anything that
needs a reload waits for a quiet period (`--debounce`) but never longer than `--max-delay` after
the first pending change, so a storm of changes is one reload. A failed apply (a config HAProxy
refuses, a reload that fails, a bug) is logged, counted and retried on the next change or after
a backoff; a runtime update that goes wrong falls back to a reload. The last good config keeps
serving, and the controller never exits because of one bad object. Periodically and after every
reload, what HAProxy runs is compared with the model, server line by server line (drift).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from kube2haproxy import heap
from kube2haproxy.applier import Applier
from kube2haproxy.errors import (
    CheckError,
    ConfigRefused,
    HAProxyUnavailable,
    Kube2HAProxyError,
    RuntimeUpdateError,
)
from kube2haproxy.findings import Finding, Severity, SkipReason
from kube2haproxy.metrics import Metrics
from kube2haproxy.model import Backend, Model, hostport, listeners
from kube2haproxy.plan import Action, Changes, Plan, drift, fit, patch, plan
from kube2haproxy.render import Renderer
from kube2haproxy.resources import Key, Kind
from kube2haproxy.settings import Settings
from kube2haproxy.store import Event, EventType, Store
from kube2haproxy.translate import (
    TranslateCache,
    Translation,
    confined,
    layout_findings,
    translate,
    translate_cached,
)

log = logging.getLogger(__name__)

MAX_RETRY_S = 120.0
UNBINDABLE_RETEST_S = 30.0
HEARTBEAT_S = 5.0  # the loop turns at least this often, even with nothing to do
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
        publish: Callable[[Model], None] | None = None,
    ) -> None:
        self._settings = settings
        self._publish = publish  # DNS records and VRRP config, after every reload
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
        self._reload_waits = False  # a pending change needs a reload: the long debounce applies
        self._retry_at: float | None = None
        self._retry_delay = settings.run.retry_interval_ms / 1000
        self._drift_at: float | None = None
        # address:port pairs HAProxy could not listen on, left out of the model until a
        # retest finds them usable: one unbindable VIP must not block every later reload.
        self._unbindable: dict[tuple[str, int], str] = {}  # binds left out, and why
        self._untestable: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {}  # by socket
        self._retest_at: float | None = None
        self._reported: set[Finding] = set()
        self._shared: set[tuple[str, int]] = set()  # listeners shared with others, warned once
        self._dirty: set[Key] = set()  # services whose objects changed since the last apply
        self._stop = threading.Event()
        self.ready = threading.Event()  # every source synced and a config applied
        self.heartbeat = clock()  # the loop's last turn: a stalled loop fails /healthz
        self.applies = 0  # reloads (and starts) that changed what HAProxy runs
        self.runtime_updates = 0  # runtime updates that changed what HAProxy runs
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
            self.heartbeat = self._clock()
            wakeup = self._next_wakeup()
            timeout = HEARTBEAT_S if wakeup is None else min(wakeup, HEARTBEAT_S)
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
            if not self._stop.is_set():
                self._step()

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
        affected = self._store.apply(event)
        if affected:
            self._dirty |= affected
            self._pending += 1
            self.metrics.pending_changes.set(self._pending)
            self._mark_pending()

    def _mark_pending(self) -> None:
        now = self._clock()
        if self._first_pending is None:
            self._first_pending = now
        self._last_change = now

    def _reload_deadline(self) -> float | None:
        """When a pending change that needs a reload is applied: after a quiet period, never
        later than the maximum delay after the first pending change."""
        if self._first_pending is None:
            return None
        run = self._settings.run
        return min(
            self._last_change + run.debounce_ms / 1000,
            self._first_pending + run.max_delay_ms / 1000,
        )

    def _change_deadline(self) -> float | None:
        """When the pending change is looked at: soon (a runtime update may do), or at the
        reload deadline once we know it needs a reload."""
        full = self._reload_deadline()
        if full is None or self._reload_waits:
            return full
        return min(self._last_change + self._settings.run.runtime_debounce_ms / 1000, full)

    def _deadlines(self) -> list[float]:
        if not self.synced:
            return []
        candidates = (self._change_deadline(), self._retry_at, self._drift_at, self._retest_at)
        return [d for d in candidates if d is not None]

    def _next_wakeup(self) -> float | None:
        deadlines = self._deadlines()
        return None if not deadlines else max(0.0, min(deadlines) - self._clock())

    def stalled(self, limit_s: float) -> bool:
        """The loop has not turned for `limit_s` (an apply may take long: check + reload)."""
        return self._clock() - self.heartbeat > limit_s

    def _step(self) -> None:
        now = self._clock()
        change = self._change_deadline()
        if self.synced and change is not None and now >= change:
            full = self._reload_deadline()
            self.apply(reload_allowed=self._reload_waits or (full is not None and now >= full))
        elif self.synced and self._retry_at is not None and now >= self._retry_at:
            self.apply(reload_allowed=True)
        elif self.synced and self._drift_at is not None and now >= self._drift_at:
            self.check_drift()
        elif self._retest_at is not None and now >= self._retest_at:
            self._retest_unbindable()

    # --- the pipeline ---------------------------------------------------------------------

    def apply(self, *, reload_allowed: bool = True) -> None:
        """Translate, plan and, when something changed, apply. A change that needs a reload
        waits (for the reload debounce) unless `reload_allowed`. Never raises."""
        retrying = self._retry_at is not None
        pending = self._pending
        try:
            with heap.paused():
                # Not while a reload waits: the changes it waits for are in the translate cache
                # already, where the fast path would take them for applied.
                if not retrying and not self._reload_waits and self._fast_apply():
                    return
            model = fit(self.applied_model, self._translate().model)
            decision = plan(self.applied_model, model)
            if decision.action is Action.RELOAD and not reload_allowed:
                self._reload_waits = True  # keep the change pending until the debounce ends
                return
            if decision.action is Action.RELOAD and self._exclude_unbindable(model):
                model = fit(self.applied_model, self._translate().model)
                decision = plan(self.applied_model, model)
            self._consumed()
            self._retry_at = None
            self._apply(model, decision, retrying=retrying)
            # A full apply leaves a million long-lived objects; a cyclic collection over them
            # costs ~1 s at 10,000 services, which the next endpoint change would wait for.
            heap.freeze()
        except Exception as exc:
            self._consumed()
            self._failed(exc, pending=pending)
            return
        self.metrics.pending_changes.set(0)

    def _consumed(self) -> None:
        """The pending changes are being applied: forget them."""
        self._first_pending = None
        self._reload_waits = False
        self._pending = 0
        self._dirty.clear()

    def _fast_apply(self) -> bool:
        """The endpoint fast path, O(changed services): when the changed services differ only
        in their backends' servers and those fit in the running slots, a runtime update without
        a full translation of the cluster. False: take the full path."""
        model = self.applied_model
        if model is None or not self._dirty:
            return False
        started = time.perf_counter()
        backends: dict[str, Backend] = {}
        findings: list[Finding] = []
        for key in self._dirty:
            service = self._store.get(Kind.SERVICE, key)
            before = self._cache.previous(key)
            if service is None or before is None:
                return False
            after = translate_cached(
                key,
                service,
                slices=self._store.slices_of(key),
                endpoints=self._store.get(Kind.ENDPOINTS, key),
                settings=self._settings.translate,
                cache=self._cache,
            )
            if not confined(before, after):
                return False
            backends.update((b.name, b) for b in after.backends)
            findings.extend(after.findings)
        patched = patch(model, backends)
        if patched is None:
            return False
        self.metrics.translate_seconds.observe(time.perf_counter() - started)
        self._report(findings, partial=True)
        self._consumed()
        new_model, decision = patched
        if decision.action is not Action.NONE:
            self._runtime(new_model, decision)
        self.metrics.pending_changes.set(0)
        return True

    def _exclude_unbindable(self, model: Model) -> bool:
        """Test-bind the sockets the model needs that HAProxy does not listen on yet; exclude
        the addresses of those that fail (True when any did). HAProxy 2.6 pauses every listener
        for ~2 s on a reload that fails, so a bad address is better found before."""
        layout = self._settings.render.frontend_layout
        known = set() if self.applied_model is None else set(listeners(self.applied_model, layout))
        needed = listeners(model, layout)
        bad = self._applier.unbindable(
            set(needed) - known, transparent=self._settings.render.bind_transparent
        )
        if not bad:
            return False
        for socket_, why in bad.items():
            self._unbindable.update(dict.fromkeys(needed[socket_], why))
            # Binds left out at an earlier test of this socket are no longer in the model:
            # keep them, or a later retest that succeeds would never bring them back.
            earlier = self._untestable.get(socket_, ())
            self._untestable[socket_] = tuple(dict.fromkeys((*earlier, *needed[socket_])))
        self._retest_at = self._clock() + UNBINDABLE_RETEST_S
        return True

    def _retest_unbindable(self) -> None:
        failing = self._applier.unbindable(
            self._untestable, transparent=self._settings.render.bind_transparent
        )
        usable = [s for s in self._untestable if s not in failing]
        for socket_ in usable:
            for bind in self._untestable.pop(socket_):
                self._unbindable.pop(bind, None)
        if usable:
            log.info("%d socket(s) can be listened on again", len(usable))
            self._mark_pending()
        self._retest_at = self._clock() + UNBINDABLE_RETEST_S if self._untestable else None

    def _translate(self) -> Translation:
        started = time.perf_counter()
        with heap.paused():
            translation = translate(
                self._store.snapshot(),
                self._settings.translate,
                cache=self._cache,
                unbindable=self._unbindable,
            )
        layout = layout_findings(translation.model, self._settings.render.frontend_layout)
        if layout:
            translation = replace(translation, findings=translation.findings + layout)
        self.metrics.translate_seconds.observe(time.perf_counter() - started)
        self._report(translation.findings)
        model = translation.model
        self.metrics.services.set(len(model.services))
        self.metrics.endpoints.set(model.server_count)
        for reason in SkipReason:
            self.metrics.skipped.labels(reason.value).set(translation.skipped.get(reason, 0))
        self.metrics.warnings.set(len(translation.warnings))
        return translation

    def _render(self, model: Model) -> str:
        started = time.perf_counter()
        with heap.paused():
            text = self._renderer.render(model)
        self.metrics.render_seconds.observe(time.perf_counter() - started)
        return text

    def _apply(self, model: Model, decision: Plan, *, retrying: bool) -> None:
        if decision.action is Action.NONE and not retrying:
            log.debug("no change to apply")
            return
        if decision.action is Action.RUNTIME and not retrying:
            self._runtime(model, decision)
            return
        self._reload(
            model,
            decision.reasons or ("retry",),
            *(_reload_reasons(decision.changes) if decision.reasons else ("retry",)),
        )

    def _runtime(self, model: Model, decision: Plan) -> None:
        """Apply a runtime update; if it goes wrong in any way, reload instead."""
        try:
            report = self._applier.apply_runtime(decision.commands, lambda: self._render(model))
        except RuntimeUpdateError as exc:
            self.metrics.runtime_updates.labels("fallback").inc()
            log.warning("runtime update failed (%s); reloading instead", exc)
            self._reload(model, ("runtime update failed",), "runtime_fallback")
            return
        if self.applied_model is not None:
            changed = set(decision.changes.servers_changed)
            before = {b.name: _served(b) for b in self.applied_model.backends if b.name in changed}
            self.metrics.endpoints.inc(
                sum(_served(b) - before.get(b.name, 0) for b in model.backends if b.name in changed)
            )
        self.applied_model = model
        self.runtime_updates += 1
        self.metrics.runtime_updates.labels("success").inc()
        self.metrics.runtime_commands.inc(len(decision.commands))
        self.metrics.runtime_seconds.observe(report.reload_s)
        self.metrics.applied()
        self._retry_delay = self._settings.run.retry_interval_ms / 1000
        log.info(
            "updated haproxy without a reload: %s (%d commands in %.3fs)",
            "; ".join(decision.reasons),
            len(decision.commands),
            report.reload_s,
        )
        self.ready.set()

    def _reload(
        self, model: Model, reasons: tuple[str, ...], *counted: str, force: bool = False
    ) -> None:
        text = self._render(model)
        report = self._applier.apply(text, force=force, files=self._renderer.files(model))
        if report.check_s:
            self.metrics.validate_seconds.observe(report.check_s)
        if report.check_output:
            log.warning("haproxy -c accepted the config with warnings:\n%s", report.check_output)
        self.metrics.validation_failed.set(0)
        self.applied_model = model
        self._retry_delay = self._settings.run.retry_interval_ms / 1000
        self.metrics.applied()
        if report.outcome != "unchanged":
            self.metrics.reload_seconds.observe(report.reload_s)
            self.metrics.reloads.labels("success").inc()
            for reason in counted:
                self.metrics.reload_reasons.labels(reason).inc()
            self.applies += 1
            log.info(
                "%s haproxy: %s (%d services, %d endpoints; check %.2fs, reload %.2fs)",
                report.outcome,
                "; ".join(reasons),
                len(model.services),
                model.server_count,
                report.check_s,
                report.reload_s,
            )
            self._schedule_drift(now=True)
            self._check_shared(model)
        if self._publish is not None:
            self._publish(model)  # only reloads change addresses and ports
        self.ready.set()

    def check_drift(self) -> None:
        """Compare the server lines HAProxy runs with the applied model; correct differences
        through the runtime API, or a reload when a line is missing. Never raises."""
        self._schedule_drift()
        model = self.applied_model
        if model is None:
            return
        try:
            self._check_shared(model)
            observed = self._applier.observe()
            if observed is None:
                return
            self.metrics.drift_checks.inc()
            found = drift(model, observed)
            if found.empty:
                return
            log.warning(
                "haproxy differs from the model in %d server lines (%s%s); correcting",
                len(found.mismatched) + len(found.missing),
                ", ".join((found.missing + found.mismatched)[:5]),
                ", ..." if len(found.missing + found.mismatched) > 5 else "",
            )
            if not found.missing:
                try:
                    self._applier.apply_runtime(found.commands, None)
                    self.metrics.drift_corrections.labels("runtime").inc()
                    return
                except RuntimeUpdateError as exc:
                    log.warning("drift correction failed (%s); reloading instead", exc)
            self.metrics.drift_corrections.labels("reload").inc()
            self._reload(model, ("drift",), "drift", force=True)
        except Exception as exc:
            self._failed(exc, pending=0)

    def _check_shared(self, model: Model) -> None:
        """Warn once per address where another process listens beside HAProxy: the kernel
        splits new connections between SO_REUSEPORT sockets, which HAProxy cannot see."""
        found = self._applier.shared_listeners(
            listeners(model, self._settings.render.frontend_layout)
        )
        for (ip, port), who in sorted(found.items()):
            if (ip, port) not in self._shared:
                log.warning(
                    "%s: %s; new connections to it are split between HAProxy and that socket, "
                    "or taken by it (SO_REUSEPORT): stop it or move it elsewhere",
                    hostport(ip, port),
                    who,
                )
        self._shared = set(found)
        self.metrics.shared_listeners.set(len(found))

    def _schedule_drift(self, *, now: bool = False) -> None:
        interval = self._settings.run.drift_check_interval_ms / 1000
        if interval <= 0:
            self._drift_at = None
        else:
            self._drift_at = self._clock() + (0.0 if now else interval)

    def _failed(self, exc: BaseException, *, pending: int) -> None:
        self.failures += 1
        if isinstance(exc, CheckError):
            result = "check_failed"
            self.metrics.validation_failed.set(1)
            detail = f"{exc}\n{exc.output}"
        elif isinstance(exc, ConfigRefused):
            result = "reload_failed"
            detail = f"{exc}\n{exc.output}".rstrip()
        elif isinstance(exc, HAProxyUnavailable):
            result = "unavailable"
            detail = str(exc)
        elif isinstance(exc, Kube2HAProxyError):  # a template, a file that cannot be written...
            result = "error"
            detail = str(exc)
        else:
            result = "error"
            detail = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("apply failed with a bug")
        self.metrics.reloads.labels(result).inc()
        self._retry_at = self._clock() + self._retry_delay
        log.error(
            "apply failed (%s); %s; retrying on the next change or in %.0fs:\n%s",
            result,
            self._still_serving(),
            self._retry_delay,
            detail,
        )
        self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_S)
        self._pending += pending
        self.metrics.pending_changes.set(self._pending)

    def _still_serving(self) -> str:
        """What HAProxy serves after a failed apply, as far as we know: said as it is."""
        if self.applied_model is not None:
            return "HAProxy keeps serving the last config it accepted"
        if self._applier.serving_before_us():
            return "HAProxy keeps serving the config it was started with"
        return "nothing has been applied yet, so HAProxy serves nothing"

    def _report(self, findings: Sequence[Finding], *, partial: bool = False) -> None:
        """Log each finding once, when it appears (every apply sees the whole cluster; a
        `partial` list, from the fast path, covers only the changed services)."""
        for finding in findings:
            if finding not in self._reported:
                log.log(
                    logging.WARNING if finding.severity is Severity.WARNING else logging.DEBUG,
                    "%s",
                    finding.text,
                )
        self._reported = self._reported | set(findings) if partial else set(findings)


def _served(backend: Backend) -> int:
    return sum(1 for s in backend.servers if not s.parked)


def _reload_reasons(changes: Changes) -> list[str]:
    """The reasons a reload was needed, as metric labels."""
    if changes == Changes(globals_changed=True):
        return ["initial"]
    labels = [
        label
        for label, present in (
            ("globals", changes.globals_changed),
            ("services", changes.services_added or changes.services_removed),
            ("frontends", changes.frontends_changed),
            ("backends", changes.backends_changed),
            ("slots", changes.slots_changed),
        )
        if present
    ]
    return labels or ["endpoints"]
