"""assembly: per-service results become one model: pool addresses allocated among services,
address:port conflicts settled, addresses this host cannot listen on left out. What no service
can know alone; everything about one service was decided before (services.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from kube2haproxy import names
from kube2haproxy.findings import Finding, subject, warning
from kube2haproxy.model import Bind, Frontend, Model
from kube2haproxy.translate.addresses import VIP, IPNetwork, Via, Vip, allocate
from kube2haproxy.translate.services import ServiceResult


def assemble(
    results: Iterable[ServiceResult],
    *,
    unbindable: Mapping[tuple[str, int], str] | None = None,
    vip_cidr: Sequence[IPNetwork] = (),
) -> tuple[Model, tuple[Finding, ...], frozenset[tuple[str, int]]]:
    """Merge per-service results into one model (`vip_cidr`: its networks in --vip-mode pool),
    with the findings of every service and of the merge, and the contested addresses (VIP,
    port): those some service was refused (another serves it, or this host cannot listen)."""
    results = list(results)
    findings = [f for r in results for f in r.findings]
    if vip_cidr:
        results = _allocate_addresses(results, vip_cidr, findings)
    lost = _settle_conflicts(results, findings)
    if unbindable:
        lost |= _unbindable(results, unbindable, findings)
    # Services none of whose addresses is left out (all but a few) are in the model as
    # translate_service built them, unless --vip-mode pool gave them addresses.
    losing = {name for name, _ in lost}
    untouched: list[ServiceResult] = []
    touched: list[ServiceResult] = []
    for result in results:
        left_out = vip_cidr or any(f.name in losing for f in result.frontends)
        (touched if left_out else untouched).append(result)
    as_built = served(untouched)
    frontends = list(as_built.frontends)
    backends = list(as_built.backends)
    entries = list(as_built.services)
    for result in touched:
        kept = []
        for frontend in result.frontends:
            binds = tuple(b for b in frontend.binds if (frontend.name, b) not in lost)
            if binds:
                kept.append(replace(frontend, binds=binds) if binds != frontend.binds else frontend)
        if not kept:
            continue
        frontends.extend(kept)
        used = {f.backend for f in kept}
        backends.extend(b for b in result.backends if b.name in used)
        if result.entry is not None:
            bound = {b.ip for f in kept for b in f.binds}
            keys = {f.port_key for f in kept}
            entry = result.entry
            vips = tuple(ip for ip in entry.vips if ip in bound)
            primary = tuple(ip for ip in entry.primary if ip in bound)
            ports = tuple(
                p for p in entry.ports if names.port_key(name=p.name, port=p.port) in keys
            )
            if (vips, ports, primary) != (entry.vips, entry.ports, entry.primary):
                entry = replace(entry, vips=vips, ports=ports, primary=primary)
            entries.append(entry)
    model = Model(
        frontends=tuple(sorted(frontends, key=lambda f: f.name)),
        backends=tuple(sorted(backends, key=lambda b: b.name)),
        services=tuple(sorted(entries, key=lambda e: (e.namespace, e.name))),
    )
    return model, tuple(findings), frozenset((bind.ip, bind.port) for _, bind in lost)


def served(results: Iterable[ServiceResult]) -> Model:
    """What these services put in the model when none of their addresses is contested: their
    frontends, the backends those use, and their entries (unsorted)."""
    results = list(results)
    used = {f.backend for r in results for f in r.frontends}
    return Model(
        frontends=tuple(f for r in results for f in r.frontends),
        backends=tuple(b for r in results for b in r.backends if b.name in used),
        services=tuple(r.entry for r in results if r.entry is not None and r.frontends),
    )


def _settle_conflicts(
    results: list[ServiceResult], findings: list[Finding]
) -> set[tuple[str, Bind]]:
    """Two frontends must never listen on one address:port (the kernel would split the traffic
    between them). The claim by cluster IP wins, then the older service, then the name order."""
    claims: dict[tuple[str, int], list[tuple[tuple[int, str, str, str], Frontend, Bind]]] = {}
    for result in results:
        rank = {v.ip: v.via for v in result.vips}
        for frontend in result.frontends:
            for bind in frontend.binds:
                order = (rank[bind.ip], result.created or "~", frontend.namespace, frontend.service)
                claims.setdefault((bind.ip, bind.port), []).append((order, frontend, bind))
    lost: set[tuple[str, Bind]] = set()
    for contenders in claims.values():
        if len(contenders) < 2:
            continue
        contenders.sort(key=lambda c: c[0])
        winner = contenders[0][1]
        for _, frontend, bind in contenders[1:]:
            lost.add((frontend.name, bind))
            findings.append(
                _not_bound(
                    frontend,
                    f"{bind.address} is already served by Service "
                    f"{winner.namespace}/{winner.service}; not bound for this service",
                )
            )
    return lost


def _not_bound(frontend: Frontend, text: str) -> Finding:
    """The warning on a service port one of whose addresses is left out."""
    return warning(
        subject("Service", frontend.namespace, frontend.service), f"port {frontend.port_key}", text
    )


def _allocate_addresses(
    results: list[ServiceResult], vip_cidr: Sequence[IPNetwork], findings: list[Finding]
) -> list[ServiceResult]:
    """Give each claim its pool addresses. A pool address belongs to its service on every
    port: another service's external or load-balancer IP on it is refused (the service's own
    is merely redundant)."""
    claims = [r.claim for r in results if r.claim is not None]
    allocated, refused = allocate(claims, vip_cidr)
    for refusal in refused:
        findings.append(
            warning(
                subject("Service", refusal.namespace, refusal.name),
                f"metadata.annotations[{VIP}]" if refusal.requested else "metadata.name",
                f"pool address {refusal.address} belongs to the older Service {refusal.holder}; "
                f"not bound (set {VIP} to another address of --vip-cidr)",
            )
        )
    owners = {ip: key for key, addresses in allocated.items() for ip in addresses}
    out = []
    for result in results:
        claim = result.claim
        key = (claim.namespace, claim.name) if claim is not None else None
        addresses = allocated.get(key, ()) if key is not None else ()
        if not addresses and not any(v.ip in owners for v in result.vips):
            out.append(result)
            continue
        for vip in result.vips:
            owner = owners.get(vip.ip)
            if owner is not None and owner != key and result.frontends:
                first = result.frontends[0]
                field = (
                    "spec.externalIPs"
                    if vip.via is Via.EXTERNAL_IP
                    else "status.loadBalancer.ingress"
                )
                findings.append(
                    warning(
                        subject("Service", first.namespace, first.service),
                        field,
                        f"{vip.ip} is the pool address of Service {owner[0]}/{owner[1]}; "
                        "not bound for this service",
                    )
                )
        others = tuple(v for v in result.vips if v.ip not in owners)
        frontends = tuple(
            replace(
                f,
                binds=tuple(Bind(ip, f.port) for ip in addresses)
                + tuple(b for b in f.binds if b.ip not in owners),
            )
            for f in result.frontends
        )
        entry = result.entry
        if entry is not None:
            kept = tuple(ip for ip in entry.vips if ip not in owners)
            entry = replace(entry, vips=addresses + kept, primary=addresses)
        pool_vips = tuple(Vip(ip, Via.POOL) for ip in addresses)
        out.append(replace(result, frontends=frontends, entry=entry, vips=pool_vips + others))
    return out


def _unbindable(
    results: list[ServiceResult],
    unbindable: Mapping[tuple[str, int], str],
    findings: list[Finding],
) -> set[tuple[str, Bind]]:
    lost = set()
    for result in results:
        for frontend in result.frontends:
            for bind in frontend.binds:
                why = unbindable.get((bind.ip, bind.port))
                if why is not None:
                    lost.add((frontend.name, bind))
                    findings.append(
                        _not_bound(
                            frontend,
                            f"{bind.address} cannot be listened on by this host ({why}); not bound "
                            "until it can be",
                        )
                    )
    return lost
