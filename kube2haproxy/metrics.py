"""metrics: the controller's Prometheus metrics, in a registry of its own (no global state).

Names follow Prometheus conventions: `_total` counters, `_seconds` durations, base units.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kube2haproxy.findings import SkipReason

# From 1 ms (a cached translate) to 2 minutes (a reload at 50,000 services).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def durations(name: str, documentation: str) -> Histogram:
            return Histogram(name, documentation, buckets=DURATION_BUCKETS, registry=r)

        self.reloads = Counter(
            "kube2haproxy_reloads",
            "Applies that needed HAProxy to load a new config, by result: "
            "success, check_failed (haproxy -c refused it), reload_failed (HAProxy refused to "
            "load it), unavailable (HAProxy did not answer in time: retried with a backoff), "
            "error (a template, a file, a bug).",
            ["result"],
            registry=r,
        )
        self.translate_seconds = durations(
            "kube2haproxy_translate_duration_seconds",
            "Time to translate the cluster into the model.",
        )
        self.render_seconds = durations(
            "kube2haproxy_render_duration_seconds",
            "Time to render haproxy.cfg.",
        )
        self.validate_seconds = durations(
            "kube2haproxy_validate_duration_seconds",
            "Time `haproxy -c` took.",
        )
        self.reload_seconds = durations(
            "kube2haproxy_reload_duration_seconds",
            "Time from the reload command to the new worker confirmed (or HAProxy started).",
        )
        self.pending_changes = Gauge(
            "kube2haproxy_pending_changes",
            "Object changes received and not applied yet.",
            registry=r,
        )
        self.last_success = Gauge(
            "kube2haproxy_last_apply_success_timestamp_seconds",
            "When HAProxy last confirmed the desired config (Unix time; 0: never).",
            registry=r,
        )
        self._clock = clock
        self._last_success_at: float | None = None
        since = Gauge(
            "kube2haproxy_seconds_since_last_apply_success",
            "Seconds since HAProxy last confirmed the desired config (-1: never).",
            registry=r,
        )
        since.set_function(
            lambda: -1.0 if self._last_success_at is None else clock() - self._last_success_at
        )
        self.validation_failed = Gauge(
            "kube2haproxy_last_validation_failed",
            "1 when the last rendered config failed "
            "`haproxy -c` (its output is in the log), else 0.",
            registry=r,
        )
        self.services = Gauge("kube2haproxy_services", "Services served.", registry=r)
        self.endpoints = Gauge(
            "kube2haproxy_endpoints", "Endpoints served (server lines).", registry=r
        )
        self.skipped = Gauge(
            "kube2haproxy_services_skipped",
            "Services and ports not served, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in SkipReason:
            self.skipped.labels(reason.value)
        self.warnings = Gauge(
            "kube2haproxy_input_warnings",
            "Warnings about the cluster's objects (invalid "
            "annotations, addresses, ...) in the last translation.",
            registry=r,
        )
        self.reload_reasons = Counter(
            "kube2haproxy_reload_reasons",
            "Why successful reloads were needed: initial, "
            "services, frontends, backends, slots (a slot count changed), globals, "
            "runtime_fallback (a runtime update went wrong), drift, endpoints.",
            ["reason"],
            registry=r,
        )
        self.runtime_updates = Counter(
            "kube2haproxy_runtime_updates",
            "Endpoint changes applied through the runtime API "
            "without a reload, by result: success, fallback (a reload instead).",
            ["result"],
            registry=r,
        )
        self.runtime_changes = Counter(
            "kube2haproxy_runtime_changes",
            "Server slots changed through the runtime API (an endpoint in, out, moved or "
            "draining), by updates and drift corrections.",
            registry=r,
        )
        self.runtime_seconds = durations(
            "kube2haproxy_runtime_update_duration_seconds",
            "Time to send and check the runtime API commands of one update.",
        )
        self.drift_checks = Counter(
            "kube2haproxy_drift_checks",
            "Comparisons of HAProxy's servers with the model.",
            registry=r,
        )
        self.drift_corrections = Counter(
            "kube2haproxy_drift_corrections",
            "Drift found and corrected, by how: runtime or reload.",
            ["how"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "kube2haproxy_watch_restarts",
            "Watches restarted, by resource and reason "
            "(expired: 410 Gone and a relist; error; closed: the server ended it).",
            ["resource", "reason"],
            registry=r,
        )
        self.haproxy_exits = Counter(
            "kube2haproxy_haproxy_exits",
            "Supervised HAProxy masters that exited on their own (each is restarted after a "
            "backoff).",
            registry=r,
        )
        self.shared_listeners = Gauge(
            "kube2haproxy_shared_listeners",
            "Addresses HAProxy listens on where another process listens too (SO_REUSEPORT "
            "splits their connections), at the last look: after each reload and drift check.",
            registry=r,
        )
        self.synced = Gauge(
            "kube2haproxy_source_synced",
            "1 once a source delivered its initial state.",
            ["source"],
            registry=r,
        )

    def confirmed(self) -> None:
        """HAProxy confirmed the desired config."""
        self._last_success_at = self._clock()
        self.last_success.set(self._last_success_at)
