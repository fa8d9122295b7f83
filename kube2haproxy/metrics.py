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
# kube-proxy's (pkg/proxy/metrics): 0, 0.25 s, 0.5 s, every second to 59 s, every 5 s to
# 115 s, every 30 s to 5 minutes; and for syncs, 1 ms doubling 15 times.
NETWORK_PROGRAMMING_BUCKETS = (
    0.0,
    0.25,
    0.5,
    *range(1, 60),
    *range(60, 120, 5),
    *range(120, 301, 30),
)
SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))


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
        # What kube-proxy's metrics of the same names measure, with its buckets: dashboards and
        # SLOs written for kube-proxy read these the same way.
        self.network_programming_seconds = Histogram(
            "kube2haproxy_network_programming_duration_seconds",
            "In-cluster network programming latency: from an EndpointSlice's "
            "endpoints.kubernetes.io/last-change-trigger-time to HAProxy serving the change "
            "(kube-proxy's network_programming_duration_seconds; one observation per slice "
            "change carrying the annotation).",
            buckets=NETWORK_PROGRAMMING_BUCKETS,
            registry=r,
        )
        self.sync_full_seconds = Histogram(
            "kube2haproxy_sync_full_proxy_rules_duration_seconds",
            "A change applied with a reload, from the start of its translation to the new "
            "worker confirmed (kube-proxy's sync_full_proxy_rules_duration_seconds).",
            buckets=SYNC_BUCKETS,
            registry=r,
        )
        self.sync_partial_seconds = Histogram(
            "kube2haproxy_sync_partial_proxy_rules_duration_seconds",
            "A change applied through the runtime API, from the start of its translation to "
            "the last command answered (kube-proxy's sync_partial_proxy_rules_duration_seconds).",
            buckets=SYNC_BUCKETS,
            registry=r,
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
        self.clock = clock  # wall time: trigger times come from the API server's clock
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
            "Why successful reloads were needed: initial, globals, services, ports (a new "
            "listening socket), frontends, backends, service_settings (a new service a spare "
            "cannot serve), spares (none left), slots (static-rr), runtime_fallback (a runtime "
            "update went wrong), drift, retry.",
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
            "Changes made through the runtime API (server lines added or deleted, slots "
            "filled, moved, drained or parked, map entries), by updates and drift corrections.",
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
