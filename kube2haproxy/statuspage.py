"""statuspage: the status report as one HTML page, served by the controller at `/`.

Built from strings with the standard library's `html.escape`, no template engine and no
script: every value that can come from a Kubernetes object (names, labels, addresses,
messages) is escaped, in text and in attributes alike, and a link's path is percent-encoded.
The page shows what `status -o wide` shows, with a form that filters it as `-n`, `-l` and a
name do (the same query parameters as /status). Pure.
"""

from __future__ import annotations

import html

from kube2haproxy import tables
from kube2haproxy.status import Filter, Row, StatusReport

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2430; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
p.summary { margin: .2em 0; }
form { margin: 1em 0; }
input { margin-right: 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #d5dae1; }
th { background: #eef1f5; }
td.state { font-weight: 600; }
tr.served td.state { color: #13773b; }
tr.skipped td.state { color: #6b7280; }
tr.not-served td.state { color: #b42318; }
tr.waiting td.state, tr.pending td.state { color: #a15c07; }
span.down { color: #b42318; font-weight: 600; }
"""


def e(text: object) -> str:
    """Escaped for HTML text and double- or single-quoted attributes."""
    return html.escape(str(text), quote=True)


def path_segment(text: str) -> str:
    """Percent-encoded for a URL path segment (RFC 3986 unreserved characters as they are);
    urllib.parse.quote(text, safe="") by hand: the core imports nothing of urllib."""
    unreserved = "-._~"
    return "".join(
        c
        if c.isascii() and (c.isalnum() or c in unreserved)
        else "".join(f"%{b:02X}" for b in c.encode("utf-8"))
        for c in text
    )


def page(found: StatusReport, chosen: Filter, *, selector: str = "") -> str:
    """The whole page (`selector`: the -l text the filter was parsed from, to show it back)."""
    summary = "".join(
        f'<p class="summary">{e(line)}</p>' for line in tables.summary(found).splitlines()
    )
    rows = "".join(_row(r, found.generated_at) for r in found.rows) or (
        '<tr><td colspan="8">no services</td></tr>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        "<title>kube2haproxy status</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>kube2haproxy status</h1>"
        f"{summary}"
        '<form method="get" action="/">'
        f'<label>namespace <input name="namespace" value="{e(chosen.namespace or "")}"></label>'
        f'<label>labels <input name="selector" value="{e(selector)}"></label>'
        f'<label>name <input name="name" value="{e(chosen.name or "")}"></label>'
        '<button type="submit">filter</button></form>'
        '<table id="services"><thead><tr>'
        "<th>namespace/name</th><th>port</th><th>VIPs</th><th>frontend</th><th>backend</th>"
        "<th>endpoints (HAProxy's view)</th><th>changed</th><th>state</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
        "</body></html>\n"
    )


def _row(row: Row, now: float) -> str:
    link = f"/status/{path_segment(row.namespace)}/{path_segment(row.name)}"
    name = f'<a href="{e(link)}">{e(row.namespace)}/{e(row.name)}</a>'
    endpoints = "-"
    if row.backend:
        parts = [
            f'<span class="down">{e(n)} {e(s)}</span>' if s != "UP" else f"{e(n)} {e(s)}"
            for s, n in row.lines.items()
        ]
        endpoints = f"{row.up}/{row.endpoints}" + (f" ({', '.join(parts)})" if parts else "")
    backend = e(row.backend or "-") + (f" (as {e(row.running)})" if row.running else "")
    changed = tables.age(now - row.changed_at) if row.changed_at else "-"
    state = tables.status_cell(row)
    return (
        f'<tr class="{e(row.state)}" data-service="{e(row.namespace)}/{e(row.name)}">'
        f"<td>{name}</td><td>{e(row.port or '*')}</td><td>{e(', '.join(row.vips) or '-')}</td>"
        f"<td>{e(row.frontend or '-')}</td><td>{backend}</td><td>{endpoints}</td>"
        f'<td>{e(changed)}</td><td class="state">{e(state)}</td></tr>'
    )
