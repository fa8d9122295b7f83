"""status: what a running controller shows of every service it knows, and of itself.

The controller publishes a `Published` value after every apply, every decision to wait and
every drift check: references to what it already holds, all immutable (what HAProxy runs, the
objects of each service and when they last changed, the findings, what waits and why, HAProxy's
view of its lines from the last drift check). Publishing costs a copy of one dict at most; the
probe server's threads build the report from it (`report`), never touching the controller's
own state or HAProxy. A report has a row per service port: where it listens, its backend, its
endpoints with HAProxy's view of them (UP, DOWN, MAINT, DRAIN), and its state: served, skipped
(by design, and why), not served (a warning: what is wrong), waiting (for a reload or a retry,
and why) or pending (changed, applied within the debounce). Pure: times are given.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from kube2haproxy import names
from kube2haproxy.deployed import Deployed
from kube2haproxy.errors import FieldError
from kube2haproxy.findings import Finding, Severity, SkipReason, subject
from kube2haproxy.grammar import same_ip
from kube2haproxy.layouts import layout
from kube2haproxy.linestate import STATES, UNKNOWN, LineView, ServerStatus
from kube2haproxy.model import Backend, Frontend, Model, Server
from kube2haproxy.resources import JSON, Key, get_dict, string_map
from kube2haproxy.selectors import Selector
from kube2haproxy.settings import Settings

VERSION = 1  # of the JSON a controller answers; a command refuses another

# How the operator reads a plan's reasons (plan.Reason values) for a reload that waits.
RELOAD_REASONS = {
    "initial": "the first config",
    "globals": "global settings changed",
    "services": "services added or removed, each with sockets of its own",
    "ports": "a new port or a port's first IPv6 VIP, a new socket",
    "frontends": "frontend settings changed",
    "backends": "backend settings changed by an annotation",
    "service_settings": "a new service whose settings no spare backend has",
    "spares": "no spare backend left",
    "slots": "server lines static-rr cannot add at runtime",
    "runtime_fallback": "a runtime update went wrong",
    "drift": "HAProxy differs from the model",
    "retry": "the last apply failed",
}

# Service-wide skips (a port's own skips name its spec.ports entry).
_SERVICE_SKIPS = frozenset(
    {
        SkipReason.HEADLESS,
        SkipReason.EXTERNAL_NAME,
        SkipReason.HEADLESS_LABEL,
        SkipReason.OTHER_PROXY,
        SkipReason.NO_VIP,
        SkipReason.INVALID,
    }
)

# Row states.
SERVED, SKIPPED, NOT_SERVED, WAITING, PENDING = (
    "served",
    "skipped",
    "not-served",
    "waiting",
    "pending",
)


# --- what the controller publishes --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceObjects:
    """One service's objects as the controller last saw them (the Service may be missing while
    its slices are there), and when they last changed (wall clock, seconds)."""

    service: JSON | None
    slices: tuple[JSON, ...] = ()
    endpoints: JSON | None = None
    changed_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why changes are not applied yet: a change that needs a reload waits for the reload
    debounce (`reload`), or the last apply failed and is retried after a backoff (`retry`)."""

    what: str  # "reload" or "retry"
    reasons: tuple[str, ...]  # plan.Reason values; for a retry, the failure's kind
    details: tuple[str, ...]  # the plan's details, or the error's first line
    since: float
    until: float | None = None  # when it is due, when known


@dataclass(frozen=True, slots=True)
class Applied:
    """The last apply that changed what HAProxy runs."""

    at: float
    outcome: str  # appliers.Outcome values: started, reloaded, updated, ...
    details: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Observed:
    """HAProxy's view of its server lines at a drift check: for each backend it runs (by its
    name), each line of `deployed`'s at that moment, None where HAProxy runs another endpoint
    there or did not list it. Few distinct values, shared: 100,000 lines cost a tuple slot
    each."""

    at: float
    deployed: Deployed
    lines: Mapping[str, tuple[LineView | None, ...]]


def observe(
    deployed: Deployed, statuses: Mapping[tuple[str, str], ServerStatus]
) -> Mapping[str, tuple[LineView | None, ...]]:
    """The `Observed.lines` of what HAProxy said (`show servers state`) of `deployed`'s lines:
    only the lines holding an endpoint."""
    shared: dict[LineView, LineView] = {}
    out: dict[str, tuple[LineView | None, ...]] = {}
    for name, backend in deployed.backends.items():
        if all(s.parked for s in backend.servers):
            continue
        row: list[LineView | None] = []
        for server in backend.servers:
            status = None if server.parked else statuses.get((name, server.name))
            if status is None or status.port != server.port or not same_ip(status.addr, server.ip):
                row.append(None)
                continue
            view = status.view()
            row.append(shared.setdefault(view, view))
        out[name] = tuple(row)
    return out


@dataclass(frozen=True, slots=True)
class Published:
    """What a controller shows of itself, published after every apply, decision and drift
    check. Every field is immutable or never mutated once published."""

    at: float
    settings: Settings
    synced: bool = False
    ready: bool = False
    deployed: Deployed | None = None  # what HAProxy runs
    objects: Mapping[Key, ServiceObjects] = field(default_factory=dict)
    findings: frozenset[Finding] = frozenset()
    pending: frozenset[Key] = frozenset()  # services changed and not applied yet
    waiting: Waiting | None = None
    applied: Applied | None = None
    observed: Observed | None = None
    reloads: int = 0
    runtime_updates: int = 0


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One service port (or a whole service that is skipped: `port` empty)."""

    namespace: str
    name: str
    port: str  # "http:80", "80" (unnamed), "dns:53/UDP"; "" for the whole service
    state: str  # served, skipped, not-served, waiting, pending
    reason: str = ""  # why, or what is worth knowing about a served port
    skip: str = ""  # skipped and not-served: the skip reason (findings.SkipReason), if any
    vips: tuple[str, ...] = ()
    frontend: str = ""
    backend: str = ""  # as the config file names it
    running: str = ""  # as HAProxy runs it, when another (a spare serving a new service)
    endpoints: int = 0  # endpoints served on this port (ready and draining server lines)
    lines: Mapping[str, int] = field(default_factory=dict)  # HAProxy's view: UP, DOWN... -> n
    changed_at: float = 0.0  # when the service's objects last changed
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def up(self) -> int:
        return self.lines.get("UP", 0)


@dataclass(frozen=True, slots=True)
class Summary:
    """The controller itself."""

    ready: bool
    synced: bool
    layout: str
    services: int  # known (Services in the store)
    served: int  # served by HAProxy
    pending: int  # services changed and not applied yet
    reloads: int
    runtime_updates: int
    waiting: Waiting | None = None
    applied: Applied | None = None
    observed_at: float | None = None  # HAProxy's view: the last drift check


@dataclass(frozen=True, slots=True)
class StatusReport:
    generated_at: float
    summary: Summary
    rows: tuple[Row, ...]
    kind: str = "Status"
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Filter:
    """Which rows to show: a namespace, a label selector, a name (a glob on the service's
    name, or on namespace/name when it has a slash)."""

    namespace: str | None = None
    selector: Selector = field(default_factory=Selector)
    name: str | None = None

    def keeps(self, row: Row) -> bool:
        if self.namespace is not None and row.namespace != self.namespace:
            return False
        if self.name is not None:
            # A pattern with a slash is namespace/name; without, the name alone (`d*` must
            # not take every service of namespace `demo`).
            named = f"{row.namespace}/{row.name}" if "/" in self.name else row.name
            if not fnmatch.fnmatchcase(named, self.name):
                return False
        return self.selector.matches(row.labels)


def report(published: Published, *, now: float) -> StatusReport:
    """Every known service's rows, in namespace/name order."""
    index = Index.of(published)
    rows: list[Row] = []
    served = 0
    for key in sorted(published.objects):
        objects = published.objects[key]
        if objects.service is None:
            continue
        found = service_rows(key, objects, published, index)
        served += any(r.backend for r in found)
        rows.extend(found)
    deployed = published.deployed
    observed = published.observed
    summary = Summary(
        ready=published.ready,
        synced=published.synced,
        layout=published.settings.render.frontend_layout,
        services=sum(1 for o in published.objects.values() if o.service is not None),
        served=served,
        pending=len(published.pending),
        reloads=published.reloads,
        runtime_updates=published.runtime_updates,
        waiting=published.waiting,
        applied=published.applied,
        observed_at=observed.at if observed is not None and deployed is not None else None,
    )
    return StatusReport(now, summary, tuple(rows))


def filtered(found: StatusReport, chosen: Filter) -> StatusReport:
    return replace(found, rows=tuple(r for r in found.rows if chosen.keeps(r)))


@dataclass(frozen=True, slots=True)
class Index:
    """A published model and findings, looked up by service."""

    frontends: Mapping[tuple[str, str], Mapping[str, Frontend]]
    backends: Mapping[str, Backend]
    findings: Mapping[str, tuple[Finding, ...]]  # by subject

    @staticmethod
    def of(published: Published) -> Index:
        model = published.deployed.model if published.deployed is not None else Model()
        frontends: dict[tuple[str, str], dict[str, Frontend]] = {}
        for frontend in model.frontends:
            by_port = frontends.setdefault((frontend.namespace, frontend.service), {})
            by_port[frontend.port_key] = frontend
        by_subject: dict[str, list[Finding]] = {}
        for finding in sorted(published.findings, key=_finding_order):
            by_subject.setdefault(finding.subject, []).append(finding)
        return Index(
            frontends,
            {b.name: b for b in model.backends},
            {k: tuple(v) for k, v in by_subject.items()},
        )

    def about(self, key: Key, objects: ServiceObjects) -> tuple[Finding, ...]:
        """The findings about a service and its endpoint objects."""
        out = list(self.findings.get(subject("Service", key.namespace, key.name), ()))
        listed = [("EndpointSlice", s) for s in objects.slices]
        if objects.endpoints is not None:
            listed.append(("Endpoints", objects.endpoints))
        for kind, obj in listed:
            meta = obj.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            out += self.findings.get(subject(kind, key.namespace, name), ())
        return tuple(out)


def _finding_order(finding: Finding) -> tuple[str, str, str]:
    return (finding.subject, finding.field, finding.message)


@dataclass(frozen=True, slots=True)
class SpecPort:
    """A port of a Service's spec, read leniently (for display: translate says what is
    wrong with it)."""

    index: int
    name: str
    number: int | None
    protocol: str

    @property
    def key(self) -> str | None:
        """The port part of its proxy names (None when it has no number)."""
        return names.port_key(name=self.name, port=self.number) if self.number else None

    @property
    def label(self) -> str:
        number = str(self.number) if self.number is not None else "?"
        text = f"{self.name}:{number}" if self.name else number
        return text if self.protocol == "TCP" else f"{text}/{self.protocol}"


def spec_ports(service: JSON) -> tuple[SpecPort, ...]:
    spec = service.get("spec")
    ports = spec.get("ports") if isinstance(spec, dict) else None
    if not isinstance(ports, list):
        return ()
    out = []
    for index, listed in enumerate(ports):
        raw = listed if isinstance(listed, dict) else {}
        name = raw.get("name")
        number = raw.get("port")
        protocol = raw.get("protocol") or "TCP"
        out.append(
            SpecPort(
                index,
                name if isinstance(name, str) and _plain(name) else ("" if not name else "?"),
                number if isinstance(number, int) and not isinstance(number, bool) else None,
                protocol if isinstance(protocol, str) and _plain(protocol) else "?",
            )
        )
    return tuple(out)


def _plain(text: str) -> bool:
    """A name we print as it is (DNS labels, protocols); anything else is shown as `?`."""
    return 0 < len(text) <= 63 and all(c.isascii() and (c.isalnum() or c in "-._") for c in text)


def labels_of(service: JSON) -> Mapping[str, str]:
    try:
        return string_map(get_dict(service, "metadata", "metadata"), "labels", "metadata.labels")
    except FieldError:
        return {}


def service_rows(
    key: Key, objects: ServiceObjects, published: Published, index: Index
) -> list[Row]:
    service = objects.service
    assert service is not None
    findings = index.about(key, objects)
    frontends = index.frontends.get((key.namespace, key.name), {})
    blank = Row(
        key.namespace,
        key.name,
        "",
        PENDING,
        changed_at=objects.changed_at,
        labels=labels_of(service),
    )
    rows = []
    if not frontends:
        whole = [
            f
            for f in findings
            if f.skip in _SERVICE_SKIPS
            and f.subject.startswith("Service ")
            and not f.field.startswith("spec.ports[")
        ]
        if whole:
            state = SKIPPED if whole[0].severity is Severity.INFO else NOT_SERVED
            row = replace(blank, state=state, reason=whole[0].message, skip=_skip(whole[0]))
            return _waiting([row], key, published)
    # Warnings about the whole service (an annotation ignored, an endpoint refused) go on each
    # of its served rows: served, but not quite as written.
    general = [
        f
        for f in findings
        if f.severity is Severity.WARNING and not f.field.startswith(("spec.ports[", "port "))
    ]
    for port in spec_ports(service) or (SpecPort(0, "", None, "?"),):
        frontend = frontends.get(port.key or "") if port.protocol == "TCP" else None
        about = [
            f
            for f in findings
            if f.field.startswith((f"spec.ports[{port.index}]", f"port {port.key}"))
        ]
        if frontend is not None:
            row = replace(blank, port=port.label)
            rows.append(_served(row, frontend, [*about, *general], published, index))
            continue
        skipped = next((f for f in about if f.skip is not None), None)
        skip = ""
        if skipped is not None:
            state = SKIPPED if skipped.severity is Severity.INFO else NOT_SERVED
            reason, skip = skipped.message, _skip(skipped)
        elif about:
            state, reason = NOT_SERVED, "; ".join(f.message for f in about)
        elif not published.synced:
            state, reason = PENDING, "waiting for the initial sync"
        else:
            warnings = [f for f in findings if f.severity is Severity.WARNING]
            state = NOT_SERVED
            reason = warnings[0].text if warnings else "not in the config HAProxy runs"
        rows.append(replace(blank, port=port.label, state=state, reason=reason, skip=skip))
    return _waiting(rows, key, published)


def _skip(finding: Finding) -> str:
    return finding.skip.value if finding.skip is not None else ""


def _served(
    row: Row, frontend: Frontend, findings: Iterable[Finding], published: Published, index: Index
) -> Row:
    deployed = published.deployed
    assert deployed is not None
    backend = index.backends.get(frontend.backend)
    views = line_views(published, backend) if backend is not None else []
    counts: dict[str, int] = {}
    for _, view in views:
        state = view.state if view is not None else UNKNOWN
        counts[state] = counts.get(state, 0) + 1
    home = deployed.home(frontend.backend)
    return replace(
        row,
        state=SERVED,
        reason="; ".join(_about(f) for f in findings if f.severity is Severity.WARNING),
        vips=tuple(b.ip for b in frontend.binds),
        frontend=layout(published.settings.render.frontend_layout).frontend_name(frontend),
        backend=frontend.backend,
        running=home if home != frontend.backend else "",
        endpoints=len(views),
        lines={s: counts[s] for s in STATES if s in counts},
    )


def _about(finding: Finding) -> str:
    """A warning on a served row: the field it is about (and the object, when it is not the
    Service: an EndpointSlice), unless the message names it."""
    if not finding.subject.startswith("Service "):
        return finding.text
    if not finding.field or finding.field in finding.message:
        return finding.message
    return f"{finding.field}: {finding.message}"


def line_views(published: Published, backend: Backend) -> list[tuple[Server, LineView | None]]:
    """The lines of a model backend that hold an endpoint, in slot order, with HAProxy's view
    of each from the last drift check (None where the line changed since, or was never
    observed)."""
    deployed = published.deployed
    assert deployed is not None
    home = deployed.home(backend.name)
    running = deployed.backends.get(home, backend).servers[: len(backend.servers)]
    observed = published.observed
    seen = observed.lines.get(home) if observed is not None else None
    then = observed.deployed.backends.get(home) if observed is not None else None
    out: list[tuple[Server, LineView | None]] = []
    for index, server in enumerate(running):
        if server.parked:
            continue
        view = None
        if (
            seen is not None
            and then is not None
            and index < len(then.servers)
            and index < len(seen)
            and then.servers[index] == server
        ):
            view = seen[index]
        out.append((server, view))
    return out


def _waiting(rows: list[Row], key: Key, published: Published) -> list[Row]:
    """Rows of a service whose latest change is not applied yet say so (what they show is
    what HAProxy runs meanwhile)."""
    if key not in published.pending or not published.synced:
        return rows
    waiting = published.waiting
    if waiting is None:
        state, reason = PENDING, "changed; applied after the debounce"
    elif waiting.what == "reload":
        why = ", ".join(RELOAD_REASONS.get(r, r) for r in waiting.reasons) or "a reload"
        state, reason = WAITING, f"waiting for a reload: {why}"
    else:
        state = WAITING
        reason = f"waiting for a retry: the last apply failed ({', '.join(waiting.reasons)})"
    return [replace(r, state=state, reason=reason) for r in rows]
