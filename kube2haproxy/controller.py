"""controller: the only code that knows the order of the steps.

One queue, one consumer. Sources put events in; the consumer applies them to the store and,
once every source has synced, runs the pipeline: snapshot -> translate -> plan against the last
applied model -> render -> apply. When is decided by a pure `Schedule` (schedule.py); what by
`plan` (plan.py): nothing, a runtime update, or a reload. A runtime update that goes wrong falls
back to a reload; a failed apply (a config HAProxy refuses, an HAProxy that does not answer, a
bug) is logged, counted and retried after a backoff. The last good config keeps serving, and the
controller never exits because of one bad object. After every reload and periodically, what
HAProxy runs is compared with the model, server line by server line (drift).
"""

from __future__ import annotations

import logging
import operator
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import compress
from types import MappingProxyType
from typing import Protocol

from kube2haproxy import gc_tuning
from kube2haproxy import plan as planner
from kube2haproxy.appliers import Applier, ApplyReport, Config, Outcome
from kube2haproxy.deployed import Deployed
from kube2haproxy.errors import (
    CheckError,
    ConfigRefused,
    HAProxyUnavailable,
    Kube2HAProxyError,
    RuntimeUpdateError,
)
from kube2haproxy.events import Event, EventType, Source
from kube2haproxy.findings import Finding, Severity, SkipReason
from kube2haproxy.grammar import epoch_seconds
from kube2haproxy.layouts import layout
from kube2haproxy.linestate import LineView, ServerStatus
from kube2haproxy.metrics import Metrics
from kube2haproxy.model import Backend, Model, hostport
from kube2haproxy.plan import Action, Plan, Reason
from kube2haproxy.render import Renderer
from kube2haproxy.resources import JSON, Key, Kind
from kube2haproxy.schedule import Due, Schedule
from kube2haproxy.settings import Settings
from kube2haproxy.status import Applied, Observed, Published, ServiceObjects, Waiting, observe
from kube2haproxy.store import Store
from kube2haproxy.translate import (
    ServiceResult,
    TranslateCache,
    Translation,
    confined,
    served,
    splice,
    translate,
    translate_cached,
)
from kube2haproxy.unbindable import Unbindable

log = logging.getLogger(__name__)

TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
HEARTBEAT_S = 5.0  # the loop turns at least this often, even with nothing to do
SWITCH_S = 0.0005  # the interpreter's switch interval while a drift check runs beside the loop
# The share of a CPU a drift check takes: it yields the rest to the loop, HAProxy and the
# sources (bench/churn.py at 10,000 services on a loaded 2-core host: unpaced, a check kept a
# core busy for 5 to 8 s and the endpoint changes meanwhile took up to 157 ms; paced, it takes
# half a minute, which the 60 s interval allows).
DRIFT_SHARE = 0.25
SHARED_NAMED = 5  # new shared listeners named in the log, one line each; the rest counted
PACE_SLICE_S = 0.002  # the work between two pauses
Socket = tuple[str, int]


class Host(Protocol):
    """The host HAProxy listens on, when it is this one (sockets.LocalHost)."""

    def unbindable(self, wanted: Iterable[Socket]) -> dict[Socket, str]: ...

    def shared(self, listening: Mapping[Socket, Iterable[Socket]]) -> dict[Socket, str]: ...


@dataclass(frozen=True, slots=True)
class _Observed:
    """A drift check's outcome, from beside the loop: what it compared against, and the
    correction (None: nothing to observe), or the error it met."""

    deployed: Deployed
    correction: Plan | None
    error: Exception | None = None
    view: Observed | None = None  # HAProxy's view of the lines, for /status
    shared: Mapping[Socket, str] | None = None  # listeners shared with another process


class _Pacer:
    """A `pause` for long work beside the loop: after every PACE_SLICE_S of work, sleeps long
    enough that the work takes at most `share` of the time."""

    def __init__(self, share: float) -> None:
        self._rest = (1 - share) / share
        self._since = time.thread_time()

    def __call__(self) -> None:
        # This thread's CPU time: waiting for HAProxy's reply or for the interpreter's lock
        # (held by the loop) is not work to make up for.
        busy = time.thread_time() - self._since
        if busy >= PACE_SLICE_S:
            time.sleep(busy * self._rest)
            self._since = time.thread_time()


def _in_a_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="drift-check", daemon=True).start()


class Controller:
    def __init__(
        self,
        *,
        settings: Settings,
        sources: Sequence[Source],
        applier: Applier,
        renderer: Renderer,
        metrics: Metrics,
        host: Host | None = None,
        clock: Callable[[], float] = time.monotonic,
        publish: Callable[[Model], None] | None = None,
        background: Callable[[Callable[[], None]], None] = _in_a_thread,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`background` runs what must not hold the loop (reading HAProxy for a drift check);
        tests run it inline. `wall`: the time of day, for what /status shows."""
        self._settings = settings
        self._publish = publish  # DNS records and VRRP config, after every reload
        self._sources = sources
        self._applier = applier
        self._renderer = renderer
        self._host = host
        self._layout = layout(settings.render.frontend_layout)
        self.metrics = metrics
        self._clock = clock
        timing = settings.timing
        self.schedule = Schedule(
            debounce_s=timing.debounce_ms / 1000,
            max_delay_s=timing.max_delay_ms / 1000,
            runtime_debounce_s=timing.runtime_debounce_ms / 1000,
            retry_s=timing.retry_interval_ms / 1000,
            drift_s=timing.drift_check_interval_ms / 1000,
        )
        self._queue: queue.SimpleQueue[Event | _Observed | None] = queue.SimpleQueue()
        self._background = background
        self._observing = False  # a drift check reads HAProxy beside the loop
        self._triggers: list[float] = []  # last-change-trigger-times of pending slice changes
        self._sync_started: float | None = None  # when the change being applied was picked up
        self._store = Store()
        self._cache = TranslateCache()
        self._synced = {name: False for source in sources for name in source.names}
        self.deployed: Deployed | None = None  # what HAProxy runs, as far as we know
        self._pending = 0  # object changes received and not applied yet
        self._dirty: set[Key] = set()  # services whose objects changed since the last apply
        self._unbindable = Unbindable()
        self._contested: frozenset[Socket] = frozenset()  # from the last whole translation
        self._bound_set: frozenset[Socket] = frozenset()
        self._bound_for: object = None
        self._reported: frozenset[Finding] = frozenset()
        self._shared: set[Socket] = set()  # listeners shared with others, warned once
        self._stop = threading.Event()
        self.ready = threading.Event()  # every source synced and a config applied
        self.heartbeat = clock()  # the loop's last turn: a stalled loop fails /healthz
        self.reloads = 0  # reloads (and starts) that changed what HAProxy runs
        self.runtime_updates = 0  # runtime updates that changed what HAProxy runs
        self.failures = 0
        # What /status shows (status.py): kept beside the loop's own state, published as an
        # immutable value the probe server's threads read.
        self._wall = wall
        self._objects: dict[Key, ServiceObjects] = {}  # each service's objects, and when
        self._objects_shown: Mapping[Key, ServiceObjects] = MappingProxyType({})
        self._objects_changed = False
        self._unapplied: frozenset[Key] = frozenset()  # changes a failed apply left pending
        self._waiting: Waiting | None = None
        self._last_applied: Applied | None = None
        self._view: Observed | None = None
        self.status = Published(at=wall(), settings=settings)

    # --- threads --------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Called by sources, from any thread."""
        self._queue.put(event)

    def start_sources(self) -> None:
        for source in self._sources:
            source.start(self.emit)

    def request_stop(self) -> None:
        """Ask the loop to end, from anywhere, a signal handler too: nothing is joined here."""
        self._stop.set()
        self._queue.put(None)  # SimpleQueue.put may be called from a signal handler

    def stop(self) -> None:
        """End the loop and stop the sources (not from a signal handler: it joins their
        threads, and one may still be starting)."""
        self.request_stop()
        for source in self._sources:
            source.stop()

    def run(self) -> None:
        """The consumer loop; returns after stop()."""
        while not self._stop.is_set():
            wakeup = self.schedule.wakeup(self._clock(), synced=self.synced)
            timeout = HEARTBEAT_S if wakeup is None else min(wakeup, HEARTBEAT_S)
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
            if not self._stop.is_set():
                self.turn()

    def turn(self) -> None:
        """One turn of the loop without waiting: every event queued (the whole burst before
        deciding), then what is due. Tests drive the controller with it and their clock."""
        self.heartbeat = self._clock()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._handle(item)
        self.step()

    # --- decisions ------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return all(self._synced.values())

    def _handle(self, event: Event | _Observed) -> None:
        if isinstance(event, _Observed):
            self._observed(event)
            self._publish_status()
            return
        if event.type is EventType.SYNCED:
            if not self._synced.get(event.source, True):
                self._synced[event.source] = True
                self.metrics.synced.labels(event.source).set(1)
                log.info("source %s synced (%d objects stored)", event.source, len(self._store))
                self.schedule.changed(self._clock())
            return
        if event.kind in (Kind.ENDPOINT_SLICE, Kind.ENDPOINTS) and event.obj is not None:
            self._trigger_time(event.obj)
        affected = self._store.record(event)
        if affected:
            self._track(affected)
            self._dirty |= affected
            self._pending += 1
            self.metrics.pending_changes.set(self._pending)
            self.schedule.changed(self._clock())

    def _trigger_time(self, obj: JSON) -> None:
        """Keep when the endpoints controller says the change behind an EndpointSlice happened,
        for the network programming latency (kube-proxy's definition)."""
        metadata = obj.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if isinstance(annotations, dict):
            when = epoch_seconds(annotations.get(TRIGGER_TIME))
            if when is not None:
                self._triggers.append(when)

    def _programmed(self) -> None:
        """The pending changes are served: observe how long each took since it happened."""
        if self._triggers:
            now = self.metrics.clock()
            for when in self._triggers:
                self.metrics.network_programming_seconds.observe(max(0.0, now - when))
            self._triggers.clear()

    def stalled(self, limit_s: float) -> bool:
        """The loop has not turned for `limit_s` (an apply may take long: check + reload)."""
        return self._clock() - self.heartbeat > limit_s

    def step(self) -> None:
        """Do what is due now, if anything."""
        now = self._clock()
        due = self.schedule.due(now, synced=self.synced)
        if due is Due.CHANGE:
            self.converge(reload_allowed=self.schedule.reload_allowed(now))
        elif due is Due.RETRY:
            self.converge(reload_allowed=True)
        elif due is Due.DRIFT:
            self.check_drift()
        elif due is Due.RETEST:
            self._retest_unbindable()

    # --- the pipeline ---------------------------------------------------------------------

    def converge(self, *, reload_allowed: bool = True) -> None:
        """Translate, plan and, when something changed, apply. A change that needs a reload
        waits (for the reload debounce) unless `reload_allowed`. Never raises."""
        try:
            self._converge(reload_allowed=reload_allowed)
        finally:
            self._publish_status()

    def _converge(self, *, reload_allowed: bool) -> None:
        retrying = self.schedule.retrying
        dirty = frozenset(self._dirty)
        pending = self._pending
        if self.deployed is None and not reload_allowed:
            # Nothing runs yet: the first config is a start, whatever the cluster holds. Wait
            # for the debounce without translating the cluster twice (bench/startup.py: at
            # 2,000 services the controller's CPU to the first request went 2.44 -> 2.12 s).
            self.schedule.wait_for_reload()
            self._wait_for_reload((Reason.INITIAL.value,), ())
            return
        self._sync_started = time.perf_counter()
        try:
            # The whole pass allocates in bursts (translate, render, the sockets a model needs):
            # with a million live objects a cyclic collection in the middle costs ~0.5 s at
            # 10,000 services (bench/startup.py --py-spy); they are frozen after a full apply.
            with gc_tuning.paused():
                # Not while a reload waits: the changes it waits for are in the translate cache
                # already, where the fast path would take them for applied.
                fast = None if retrying or self.schedule.reload_waits else self._fast_plan()
                if fast is not None:
                    decision = fast
                else:
                    decision = self._full_plan(retrying=retrying)
                    if decision.action is Action.RELOAD and not reload_allowed:
                        self.schedule.wait_for_reload()  # the change stays pending
                        self._wait_for_reload(
                            tuple(r.value for r in decision.reasons), decision.details
                        )
                        return
                    if decision.action is Action.RELOAD and self._exclude_unbindable(
                        decision.model
                    ):
                        decision = self._full_plan(retrying=retrying)
                self._consumed()
                self.schedule.attempting()
                self._execute(decision)
                self._programmed()
                if fast is None:
                    # A full apply leaves a million long-lived objects; a cyclic collection over
                    # them costs ~1 s at 10,000 services, which the next endpoint change would wait
                    # for.
                    gc_tuning.freeze()
        except Exception as exc:
            self._consumed()
            self._unapplied |= dirty
            self._failed(exc, pending=pending)
            return
        self.metrics.pending_changes.set(0)
        self._unapplied, self._waiting = frozenset(), None

    @property
    def applied_model(self) -> Model | None:
        """The model of the config file HAProxy runs (or would load)."""
        return None if self.deployed is None else self.deployed.model

    def _scope(self) -> planner.Scope:
        return planner.Scope(self._layout, self._renderer.pool, self._applier.abilities())

    def _full_plan(self, *, retrying: bool) -> Plan:
        model = self._translate().model
        scope = self._scope()
        decision = planner.plan(self.deployed, model, scope)
        if retrying and decision.action is not Action.RELOAD:
            # What HAProxy runs after a failure is unsure.
            return planner.retry(decision.model, scope)
        return decision

    def _consumed(self) -> None:
        """The pending changes are being applied: forget them."""
        self.schedule.consumed()
        self._pending = 0
        self._dirty.clear()

    def _fast_plan(self) -> Plan | None:
        """The endpoint fast path, O(changed services): when the changed services differ only
        in their backends' servers, a runtime update without a full translation of the
        cluster. None: take the full path."""
        deployed = self.deployed
        if deployed is None or not self._dirty:
            return None
        started = time.perf_counter()
        backends: dict[str, Backend] = {}
        findings: list[Finding] = []
        added: list[ServiceResult] = []
        removed: dict[Key, ServiceResult] = {}
        for key in self._dirty:
            service = self._store.get(Kind.SERVICE, key)
            before = self._cache.previous(key)
            if service is None:
                if before is not None:
                    removed[key] = before
                continue
            after = translate_cached(
                key,
                service,
                slices=self._store.slices_of(key),
                endpoints=self._store.get(Kind.ENDPOINTS, key),
                settings=self._settings.translate,
                cache=self._cache,
            )
            findings.extend(after.findings)
            if before is None:
                added.append(after)
            elif not confined(before, after):
                return None
            else:
                backends.update((b.name, b) for b in after.backends)
        if added or removed:
            decision = None if backends else self._splice(deployed, added, removed)
        else:
            decision = planner.patch(deployed, backends, self._applier.abilities())
        if decision is None:
            return None
        self.metrics.translate_seconds.observe(time.perf_counter() - started)
        self._report(findings, partial=True)
        return decision

    def _splice(
        self, deployed: Deployed, added: list[ServiceResult], removed: dict[Key, ServiceResult]
    ) -> Plan | None:
        """The service fast path: whole services added and removed at runtime (per-port: a
        spare and a map entry each), when nothing else in the cluster can be affected."""
        if self._settings.translate.vip_mode == "pool" or self._unbindable.sockets:
            return None
        model = splice(
            deployed.model,
            bound=self._bound(deployed.model),
            contested=self._contested,
            added=added,
            removed=list(removed.values()),
        )
        if model is None:
            return None
        # The addresses the new model serves, from the old ones (the model is not walked).
        gone = {(b.ip, b.port) for r in removed.values() for f in r.frontends for b in f.binds}
        came = {(b.ip, b.port) for r in added for f in r.frontends for b in f.binds}
        self._bound_set = (self._bound(deployed.model) - gone) | came
        self._bound_for = model.frontends
        decision = planner.splice(
            deployed,
            model,
            added=served(added),
            removed=served(removed.values()),
            scope=self._scope(),
        )
        if decision is not None:
            for key in removed:
                self._cache.forget(key)
        return decision

    def _bound(self, model: Model) -> frozenset[tuple[str, int]]:
        """Every VIP:port a model serves (kept for the last model asked about)."""
        if self._bound_for is not model.frontends:
            self._bound_set = frozenset((b.ip, b.port) for f in model.frontends for b in f.binds)
            self._bound_for = model.frontends
        return self._bound_set

    def _exclude_unbindable(self, model: Model) -> bool:
        """Test-bind the sockets the model needs that HAProxy does not listen on yet; leave out
        the addresses of those that fail (True when any did)."""
        if self._host is None:
            return False
        running = self.applied_model
        known = set() if running is None else set(self._layout.listeners(running))
        needed = self._layout.listeners(model)
        failed = self._host.unbindable(set(needed) - known)
        if not failed:
            return False
        self._unbindable.exclude(failed, needed)
        self.schedule.retest_after(self._clock())
        return True

    def _retest_unbindable(self) -> None:
        assert self._host is not None  # only a host excludes anything
        usable = self._unbindable.usable_again(self._host.unbindable(self._unbindable.sockets))
        if usable:
            log.info("%d socket(s) can be listened on again", usable)
            self.schedule.changed(self._clock())
        self.schedule.retest_after(self._clock() if self._unbindable.sockets else None)

    def _translate(self) -> Translation:
        started = time.perf_counter()  # within the pass's pause of the collector (_converge)
        translation = translate(
            self._store.snapshot(),
            self._settings.translate,
            cache=self._cache,
            unbindable=self._unbindable.binds,
        )
        unhonoured = self._layout.findings(translation.model)
        if unhonoured:
            translation = replace(translation, findings=translation.findings + unhonoured)
        self.metrics.translate_seconds.observe(time.perf_counter() - started)
        self._contested = translation.contested
        self._report(translation.findings)
        model = translation.model
        self.metrics.services.set(len(model.services))
        self.metrics.endpoints.set(model.server_count)
        for reason in SkipReason:
            self.metrics.skipped.labels(reason.value).set(translation.skipped.get(reason, 0))
        self.metrics.warnings.set(len(translation.warnings))
        return translation

    def _config(self, decision: Plan) -> Config:
        model = decision.model

        def render() -> str:
            started = time.perf_counter()
            with gc_tuning.paused():
                text = self._renderer.render(model)
            self.metrics.render_seconds.observe(time.perf_counter() - started)
            return text

        options = {}
        if decision.ops.adds:
            wanted = {add.options for add in decision.ops.adds}
            for backend in model.backends:
                if backend.name in wanted:
                    options[backend.name] = self._renderer.server_options(backend)
        return Config(
            render if decision.action is Action.RUNTIME else render(),
            self._renderer.files(model),
            self._layout.files_glob,
            options,
        )

    def _execute(self, decision: Plan) -> None:
        """Apply a plan; a runtime update that goes wrong is applied as a reload instead."""
        if decision.action is Action.NONE:
            log.debug("no change to apply")
            return
        config = self._config(decision)
        try:
            report = self._applier.apply(decision, config)
        except RuntimeUpdateError as exc:
            if decision.action is not Action.RUNTIME:
                raise
            self.metrics.runtime_updates.labels("fallback").inc()
            log.warning("runtime update failed (%s); reloading instead", exc)
            decision = planner.fallback(decision, self._scope())
            report = self._applier.apply(decision, config)
        self._applied(decision, report)

    def _applied(self, decision: Plan, report: ApplyReport) -> None:
        """Record what HAProxy runs now, in the model, the metrics and the log."""
        before = self.applied_model
        self.deployed = decision.deployed
        if self._sync_started is not None and decision.action is not Action.NONE:
            took = time.perf_counter() - self._sync_started
            full = decision.action is Action.RELOAD
            (self.metrics.sync_full_seconds if full else self.metrics.sync_partial_seconds).observe(
                took
            )
        self._sync_started = None
        self._last_applied = Applied(self._wall(), report.outcome.value, decision.details)
        self.schedule.succeeded()
        self.metrics.confirmed()
        self.ready.set()
        if decision.action is Action.RUNTIME:
            self._counted_runtime(decision, report, before)
            if self._publish is not None and (
                before is None or before.services != decision.model.services
            ):
                self._publish(decision.model)  # services added or removed at runtime
            return
        if report.check_s:
            self.metrics.validate_seconds.observe(report.check_s)
        if report.check_output:
            log.warning("haproxy -c accepted the config with warnings:\n%s", report.check_output)
        self.metrics.validation_failed.set(0)
        if report.outcome is not Outcome.UNCHANGED:
            self.metrics.reload_seconds.observe(report.apply_s)
            self.metrics.reloads.labels("success").inc()
            for reason in decision.reasons:
                self.metrics.reload_reasons.labels(reason.value).inc()
            self.reloads += 1
            model = decision.model
            log.info(
                "%s haproxy: %s (%d services, %d endpoints; check %.2fs, reload %.2fs)",
                report.outcome.value,
                "; ".join(decision.details),
                len(model.services),
                model.server_count,
                report.check_s,
                report.apply_s,
            )
            self.schedule.drift_after(self._clock(), at_once=True)
            if self.schedule.drift_at is None:  # else the drift check, beside the loop
                self._report_shared(self._shared_listeners(model))
        if self._publish is not None:
            self._publish(decision.model)

    def _counted_runtime(self, decision: Plan, report: ApplyReport, before: Model | None) -> None:
        if before is not None:
            # Backends that changed are other objects: count theirs, not every server.
            gone, came = _replaced(before.backends, decision.model.backends)
            self.metrics.endpoints.inc(sum(map(_served, came)) - sum(map(_served, gone)))
        self.runtime_updates += 1
        self.metrics.runtime_updates.labels("success").inc()
        self.metrics.runtime_changes.inc(len(decision.ops))
        self.metrics.runtime_seconds.observe(report.apply_s)
        log.info(
            "updated haproxy without a reload: %s (%d runtime changes in %.3fs)",
            "; ".join(decision.details),
            len(decision.ops),
            report.apply_s,
        )

    def check_drift(self) -> None:
        """Compare the server lines HAProxy runs with what should run; correct differences
        through the runtime API, or a reload when a line is missing. Reading and comparing
        them (seconds at 10,000 services) happens beside the loop, which goes on applying
        changes; the correction is applied by the loop, unless something was applied
        meanwhile (then the next check looks again). Never raises."""
        self.schedule.drift_after(self._clock())
        deployed = self.deployed
        if deployed is None or self._observing:
            return
        self._observing = True
        scope = self._scope()
        self._background(lambda: self._observe(deployed, scope))

    def _observe(self, deployed: Deployed, scope: planner.Scope) -> None:
        """Beside the loop: what HAProxy runs, compared with `deployed`, and who else listens
        on its addresses (reading /proc); the loop gets it. Seconds of Python at 10,000
        services, which the loop must not wait for: the interpreter hands the loop its lock
        after at most SWITCH_S meanwhile (5 ms by default, which an endpoint change could
        wait at each socket call it made)."""
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, SWITCH_S))
        pause = _Pacer(DRIFT_SHARE)
        try:
            at = self._wall()
            shared = self._shared_listeners(deployed.model)
            running = self._applier.observe(pause=pause)
            correction = (
                None
                if running is None
                else planner.correct(deployed, running.servers, scope, pause=pause)
            )
            view = None
            if running is not None and running.statuses:
                view = Observed(at, deployed, _lines_seen(deployed, running.statuses, pause))
            self._queue.put(_Observed(deployed, correction, view=view, shared=shared))
        except Exception as exc:
            self._queue.put(_Observed(deployed, None, exc))
        finally:
            sys.setswitchinterval(switch)

    def _observed(self, result: _Observed) -> None:
        self._observing = False
        if result.view is not None:
            self._view = result.view  # HAProxy's latest word, whatever was applied since
        if result.deployed is not self.deployed:
            # Applied meanwhile: what was read may be older than what runs now. After a reload
            # (other frontends: other sockets to look at) the next check runs at once; the
            # check a reload asks for found this one in flight.
            if self.deployed is not None and (
                result.deployed.model.frontends is not self.deployed.model.frontends
            ):
                self.schedule.drift_after(self._clock(), at_once=True)
            log.debug("drift check dropped: something was applied while it read")
            return
        if result.shared is not None:
            self._report_shared(result.shared)
        if result.error is not None:
            self._failed(result.error, pending=0)
            return
        correction = result.correction
        if correction is None:
            return
        self.metrics.drift_checks.inc()
        if correction.action is Action.NONE:
            return
        log.warning("%s; correcting", correction.details[0])
        self.metrics.drift_corrections.labels(correction.action.value).inc()
        try:
            self._execute(correction)
        except Exception as exc:
            self._failed(exc, pending=0)

    def _shared_listeners(self, model: Model) -> Mapping[Socket, str] | None:
        """Where another process listens beside HAProxy (None: no host to look at)."""
        if self._host is None:
            return None
        return self._host.shared(self._layout.listeners(model))

    def _report_shared(self, found: Mapping[Socket, str] | None) -> None:
        """Warn once per address where another process listens beside HAProxy: the kernel
        splits new connections between SO_REUSEPORT sockets, which HAProxy cannot see. The
        first SHARED_NAMED new ones are named, the rest counted in one line (on the loop:
        10,000 lines, another HAProxy serving the same cluster, took it 1 s)."""
        if found is None:
            return
        new = sorted(
            (address, who) for address, who in found.items() if address not in self._shared
        )
        for (ip, port), who in new[:SHARED_NAMED]:
            log.warning(
                "%s: %s; new connections to it are split between HAProxy and that socket, "
                "or taken by it (SO_REUSEPORT): stop it or move it elsewhere",
                hostport(ip, port),
                who,
            )
        if len(new) > SHARED_NAMED:
            log.warning(
                "%d more addresses where another process listens too, as on those above "
                "(kube2haproxy_shared_listeners counts them all)",
                len(new) - SHARED_NAMED,
            )
        self._shared = set(found)
        self.metrics.shared_listeners.set(len(found))

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
        delay = self.schedule.failed(self._clock())
        now = self._wall()
        first = detail.strip().splitlines()[0] if detail.strip() else result
        self._waiting = Waiting("retry", (result,), (first,), since=now, until=now + delay)
        log.error(
            "apply failed (%s); %s; retrying on the next change or in %gs:\n%s",
            result,
            self._still_serving(),
            delay,
            detail,
        )
        self._pending += pending
        self.metrics.pending_changes.set(self._pending)

    def _still_serving(self) -> str:
        """What HAProxy serves after a failed apply, as far as we know: said as it is."""
        if self.applied_model is not None:
            return "HAProxy keeps serving the last config it accepted"
        return "nothing has been applied yet (HAProxy serves what it was started with, if anything)"

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
        self._reported = self._reported | frozenset(findings) if partial else frozenset(findings)

    # --- what /status shows ---------------------------------------------------------------

    def _track(self, keys: Iterable[Key]) -> None:
        """Keep the objects of each service an event touched, and when."""
        now = self._wall()
        for key in keys:
            service = self._store.get(Kind.SERVICE, key)
            slices = self._store.slices_of(key)
            endpoints = self._store.get(Kind.ENDPOINTS, key)
            if service is None and not slices and endpoints is None:
                self._objects.pop(key, None)
            else:
                self._objects[key] = ServiceObjects(service, slices, endpoints, now)
        self._objects_changed = True  # copied at the next publication

    def _wait_for_reload(self, reasons: tuple[str, ...], details: tuple[str, ...]) -> None:
        deadline = self.schedule.reload_deadline()
        now, wall = self._clock(), self._wall()
        if self._waiting is None or self._waiting.what != "reload":
            since = wall
        else:
            since = self._waiting.since
        self._waiting = Waiting(
            "reload",
            reasons,
            details,
            since=since,
            until=None if deadline is None else wall + max(0.0, deadline - now),
        )

    def _publish_status(self) -> None:
        """What /status shows, as one immutable value: references to what the loop holds
        (the objects' dict copied when it changed: O(services), after an apply at most)."""
        if self._objects_changed:
            self._objects_shown = MappingProxyType(dict(self._objects))
            self._objects_changed = False
        self.status = Published(
            at=self._wall(),
            settings=self._settings,
            synced=self.synced,
            ready=self.ready.is_set(),
            deployed=self.deployed,
            objects=self._objects_shown,
            findings=self._reported,
            pending=frozenset(self._dirty) | self._unapplied,
            waiting=self._waiting,
            applied=self._last_applied,
            observed=self._view,
            reloads=self.reloads,
            runtime_updates=self.runtime_updates,
        )


def _lines_seen(
    deployed: Deployed, statuses: Mapping[tuple[str, str], ServerStatus], pause: Callable[[], None]
) -> dict[str, tuple[LineView | None, ...]]:
    """status.observe's, a few dozen backends at a time with a `pause` between."""
    lines: dict[str, tuple[LineView | None, ...]] = {}
    names = list(deployed.backends)
    for start in range(0, len(names), 64):
        part = {name: deployed.backends[name] for name in names[start : start + 64]}
        lines.update(observe(replace(deployed, backends=part), statuses))
        pause()
    return lines


def _served(backend: Backend) -> int:
    return sum(1 for s in backend.servers if not s.parked)


def _replaced(
    before: tuple[Backend, ...], after: tuple[Backend, ...]
) -> tuple[list[Backend], list[Backend]]:
    """The backends of `before` that `after` no longer has, and those it has instead (other
    objects). When both are as long (endpoint churn replaces backends in place), position by
    position: a C-speed pass over every backend and Python only for those replaced."""
    if len(before) == len(after):
        changed = list(compress(range(len(after)), map(operator.is_not, before, after)))
        return [before[i] for i in changed], [after[i] for i in changed]
    kept = {id(b) for b in before} & {id(b) for b in after}
    return [b for b in before if id(b) not in kept], [b for b in after if id(b) not in kept]
