"""tables: `status` and `explain` as text for a terminal: aligned columns, ages, states.

Every cell may carry a string from a Kubernetes object (a manifest's name is any string): one
that is not printable is shown escaped (`ascii`), so no object can move the cursor, clear the
screen or forge a line. Ages are counted from the report's own time, the controller's clock,
so a client whose clock differs still reads them right. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from kube2haproxy.explain import Endpoint, Explanation, PortPath
from kube2haproxy.linestate import STATES
from kube2haproxy.status import RELOAD_REASONS, SERVED, SKIPPED, Row, StatusReport, Summary

MAX_VIPS = 2  # VIPs in a row of the narrow table; the rest are counted


def safe(text: str) -> str:
    """A cell as it is when printable, escaped otherwise."""
    return text if text.isprintable() else ascii(text)


def columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows aligned under their header, two spaces apart; the last column is not padded."""
    cells = [list(header)] + [[safe(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines) + "\n"


def age(seconds: float | None) -> str:
    """`45s`, `12m`, `5h`, `3d`, as kubectl says ages; `-` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _since(now: float, then: float | None) -> float | None:
    return None if not then else now - then


# --- status -------------------------------------------------------------------------------


def summary(found: StatusReport) -> str:
    """What the controller says of itself, in a line or two."""
    s: Summary = found.summary
    now = found.generated_at
    state = "ready" if s.ready else "synced, nothing applied yet" if s.synced else "syncing"
    parts = [
        f"controller {state} ({s.layout} layout): {s.services} services, {s.served} served",
        f"reloads {s.reloads}, runtime updates {s.runtime_updates}",
    ]
    if s.applied is not None:
        what = "; ".join(s.applied.details) or "-"
        parts.append(
            f"last change applied {age(now - s.applied.at)} ago ({s.applied.outcome}: {what})"
        )
    view = "not observed yet" if s.observed_at is None else f"{age(now - s.observed_at)} old"
    parts.append(f"HAProxy's view of its servers {view}")
    lines = ["; ".join(parts)]
    waiting = s.waiting
    if waiting is not None:
        due = f", due in {age(waiting.until - now)}" if waiting.until is not None else ""
        if waiting.what == "reload":
            why = ", ".join(RELOAD_REASONS.get(r, r) for r in waiting.reasons)
            lines.append(f"waiting for a reload{due}: {why} ({'; '.join(waiting.details)})")
        else:
            lines.append(
                f"the last apply failed ({', '.join(waiting.reasons)}); retrying{due}: "
                + "; ".join(waiting.details)
            )
    if s.pending:
        lines.append(f"{s.pending} service(s) changed and not applied yet")
    return "\n".join(safe(line) for line in lines) + "\n"


def status_table(found: StatusReport, *, wide: bool = False) -> str:
    if not found.rows:
        return "no services\n"
    now = found.generated_at
    rows: list[tuple[str, ...]]
    if wide:
        header: tuple[str, ...] = (
            "NAMESPACE/NAME",
            "PORT",
            "VIPS",
            "FRONTEND",
            "BACKEND",
            "ENDPOINTS",
            "CHANGED",
            "STATE",
        )
        rows = [
            (
                f"{r.namespace}/{r.name}",
                r.port or "*",
                ",".join(r.vips) or "-",
                r.frontend or "-",
                _backend(r),
                _lines(r) if r.backend else "-",
                age(_since(now, r.changed_at)),
                _state(r, wide=True),
            )
            for r in found.rows
        ]
    else:
        header = ("NAMESPACE/NAME", "PORT", "VIPS", "BACKEND", "UP/TOTAL", "CHANGED", "STATE")
        rows = [
            (
                f"{r.namespace}/{r.name}",
                r.port or "*",
                _vips(r.vips),
                _backend(r),
                f"{r.up}/{r.endpoints}" if r.backend else "-",
                age(_since(now, r.changed_at)),
                _state(r, wide=False),
            )
            for r in found.rows
        ]
    return columns(header, rows)


def _vips(vips: Sequence[str]) -> str:
    if not vips:
        return "-"
    more = f",+{len(vips) - MAX_VIPS}" if len(vips) > MAX_VIPS else ""
    return ",".join(vips[:MAX_VIPS]) + more


def _backend(row: Row) -> str:
    if not row.backend:
        return "-"
    return f"{row.backend} (as {row.running})" if row.running else row.backend


def _lines(row: Row) -> str:
    """`3: 2 UP, 1 DOWN`: the endpoints, and HAProxy's view of their lines."""
    counts = ", ".join(f"{row.lines[s]} {s}" for s in STATES if row.lines.get(s))
    return f"{row.endpoints}: {counts}" if counts else str(row.endpoints)


def status_cell(row: Row) -> str:
    """The state of a row with why, as `status -o wide` says it."""
    return _state(row, wide=True)


def _state(row: Row, *, wide: bool) -> str:
    if row.state == SERVED:
        return f"served: {row.reason}" if row.reason and wide else "served"
    if row.state == SKIPPED and not wide:
        return f"skipped ({row.skip})" if row.skip else "skipped"
    label = f"{row.state} ({row.skip})" if row.skip else row.state
    if row.state in ("waiting", "pending"):
        return row.reason or label
    return f"{label}: {row.reason}" if row.reason else label


# --- explain ------------------------------------------------------------------------------


def explanation(found: Explanation) -> str:
    now = found.generated_at
    live = found.source == "controller"
    where = "a running controller" if found.source == "controller" else "manifests"
    head = f"Service {found.namespace}/{found.name}, from {where}: {found.state}"
    if found.reason:
        head += f" ({found.reason})"
    lines = [head]
    if found.changed_at:
        lines.append(f"  objects last changed {age(now - found.changed_at)} ago")
    if found.source == "controller":
        view = f"{age(now - found.observed_at)} old" if found.observed_at else "not observed yet"
        lines.append(f"  HAProxy's view of its servers: {view}")
    out = "\n".join(safe(line) for line in lines) + "\n\nDNS\n"
    if found.records:
        out += _indent(
            columns(("NAME", "TYPE", "VALUE"), [(r.name, r.type, r.value) for r in found.records])
        )
    else:
        out += "  no records (only a served service is published)\n"
    for port in found.ports:
        out += "\n" + _port(port, live=live)
    if found.findings:
        out += "\nFindings\n" + "".join(f"  {safe(f)}\n" for f in found.findings)
    return out


def _port(port: PortPath, *, live: bool) -> str:
    head = f"Port {port.port} (targetPort {port.target}): {port.state}"
    if port.reason:
        head += f": {port.reason}"
    lines = [safe(head)]
    for address in port.addresses:
        if address.bound:
            line = f"  {address.address} ({address.via}) -> frontend {port.frontend}"
            if address.route:
                line += f", map {address.route}"
            line += f" -> backend {port.backend}"
            if port.running:
                line += f" (as {port.running})"
        else:
            line = f"  {address.address} ({address.via}): not bound: {address.reason}"
        lines.append(safe(line))
    out = "\n".join(lines) + "\n"
    if not port.endpoints:
        return out + ("  no endpoints listed\n" if port.state == SERVED else "")
    rows = [_endpoint(e) for e in port.endpoints]
    header: tuple[str, ...] = (
        "ENDPOINT",
        "POD",
        "NODE",
        "FROM",
        "CONDITIONS",
        "SERVER",
        "HAPROXY",
        "VERDICT",
    )
    if not live:  # manifests: no HAProxy to ask
        header = header[:6] + header[7:]
        rows = [row[:6] + row[7:] for row in rows]
    return out + _indent(columns(header, rows))


def _endpoint(e: Endpoint) -> tuple[str, ...]:
    source = e.source.partition(" ")[2] or e.source
    haproxy = f"{e.haproxy} ({e.check})" if e.haproxy and e.check else e.haproxy or "-"
    verdict = "served" if e.served else f"left out: {e.reason}"
    return (
        e.address,
        e.pod or "-",
        e.node or "-",
        f"{source} {e.field}",
        e.conditions,
        f"{e.server} {e.role}" if e.served else "-",
        haproxy if e.served else "-",
        verdict,
    )


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())
