"""translate: a snapshot of Kubernetes objects becomes the model, with findings.

Every Kubernetes rule lives in this package, one room per job: `services` (one Service: skip
reasons, ports, affinity, source ranges, annotations), `endpoints` (EndpointSlices and v1
Endpoints become server lines: the hot path), `addresses` (VIPs and the pool's addresses),
`assembly` (what needs every service at once: pool allocation, conflicts, unbindable
addresses). This module is the entry point and the per-service cache: each service is
translated on its own (pure, cacheable by its inputs), then assembled. No I/O, no clock: the
same snapshot always yields the same model.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import TypeVar

from kube2haproxy.findings import Finding, SkipReason
from kube2haproxy.model import Backend, Frontend, Model, ServiceEntry, value_class
from kube2haproxy.resources import JSON, Key
from kube2haproxy.settings import TranslateSettings
from kube2haproxy.store import Snapshot
from kube2haproxy.translate.addresses import vip_cidr_networks
from kube2haproxy.translate.assembly import assemble, served
from kube2haproxy.translate.services import ServiceResult, translate_service

__all__ = [
    "ServiceResult",
    "TranslateCache",
    "Translation",
    "confined",
    "served",
    "splice",
    "translate",
    "translate_cached",
    "translate_service",
    "vip_cidr_networks",
]


@value_class
class Translation:
    model: Model
    findings: tuple[Finding, ...]
    # Addresses (VIP, port) some service was refused: another serves it, or this host cannot
    # listen there. Adding or removing a service that touches one needs a whole translation.
    contested: frozenset[tuple[str, int]] = frozenset()

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def skipped(self) -> Mapping[SkipReason, int]:
        """Services (and ports) not served, counted by reason."""
        return Counter(f.skip for f in self.findings if f.skip is not None)


class TranslateCache:
    """Per-service results of earlier translations, reused while the service's inputs are the very
    same objects: the store hands out one dict per object version, so identity means unchanged.
    A long-running controller keeps one, making a change cost O(changed services)."""

    def __init__(self) -> None:
        self._entries: dict[Key, tuple[tuple[object, ...], ServiceResult]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: Key, inputs: tuple[object, ...]) -> ServiceResult | None:
        entry = self._entries.get(key)
        if entry is None or len(entry[0]) != len(inputs):
            return None
        if all(a is b for a, b in zip(entry[0], inputs, strict=True)):
            return entry[1]
        return None

    def store(self, key: Key, inputs: tuple[object, ...], result: ServiceResult) -> None:
        self._entries[key] = (inputs, result)

    def previous(self, key: Key) -> ServiceResult | None:
        """The last result stored for a service, whatever its inputs were."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def forget(self, key: Key) -> None:
        """A service that is gone (the fast path removed it from the model)."""
        self._entries.pop(key, None)

    def retain(self, keys: Iterable[Key]) -> None:
        """Forget the services that are gone."""
        keep = set(keys)
        for key in [k for k in self._entries if k not in keep]:
            del self._entries[key]


def translate(
    snapshot: Snapshot,
    settings: TranslateSettings,
    *,
    cache: TranslateCache | None = None,
    unbindable: Mapping[tuple[str, int], str] | None = None,
) -> Translation:
    """The model of a snapshot. `unbindable`: address:port pairs this host cannot listen on
    (found by the controller), with why; they are left out, with a warning for their service."""
    results = [
        translate_cached(
            key,
            service,
            slices=snapshot.slices.get(key, ()),
            endpoints=snapshot.endpoints.get(key),
            settings=settings,
            cache=cache,
        )
        for key, service in sorted(snapshot.services.items())
    ]
    if cache is not None and len(cache) > len(snapshot.services):
        cache.retain(snapshot.services)
    networks = vip_cidr_networks(settings)
    model, findings, contested = assemble(results, unbindable=unbindable, vip_cidr=networks)
    return Translation(model, findings, contested)


def splice(
    model: Model,
    *,
    bound: Set[tuple[str, int]],
    contested: Set[tuple[str, int]],
    added: Sequence[ServiceResult],
    removed: Sequence[ServiceResult],
) -> Model | None:
    """`model` with whole services added and removed, in O(services) without translating the
    others: what `translate` gives for the same cluster when no address of theirs is contested
    (`bound`: every VIP:port the model serves). None when it cannot tell: an added service
    wants an address already served or contested, or a removed one leaves a contested address
    (a service refused it may get it now). Not in --vip-mode pool (the allocation is global)."""
    wanted = [(b.ip, b.port) for r in added for f in r.frontends for b in f.binds]
    if len(set(wanted)) != len(wanted) or any(a in bound or a in contested for a in wanted):
        return None
    if any((b.ip, b.port) in contested for r in removed for f in r.frontends for b in f.binds):
        return None
    if any(r.claim is not None for r in added):
        return None
    new, gone = served(added), served(removed)
    gone_entries = {(e.namespace, e.name) for e in gone.services}
    return Model(
        frontends=_merged(model.frontends, {f.name for f in gone.frontends}, new.frontends),
        backends=_merged(model.backends, {b.name for b in gone.backends}, new.backends),
        services=_entries(model.services, gone_entries, new.services),
    )


def _entries(
    entries: tuple[ServiceEntry, ...],
    gone: Set[tuple[str, str]],
    new: tuple[ServiceEntry, ...],
) -> tuple[ServiceEntry, ...]:
    kept = [e for e in entries if (e.namespace, e.name) not in gone] if gone else list(entries)
    for entry in new:
        bisect.insort(kept, entry, key=lambda e: (e.namespace, e.name))
    return tuple(kept)


P = TypeVar("P", Frontend, Backend)


def _merged(items: tuple[P, ...], gone: Set[str], new: tuple[P, ...]) -> tuple[P, ...]:
    """Sorted by name, as assemble sorts them: each new item inserted where it belongs."""
    kept: list[P] = [item for item in items if item.name not in gone] if gone else list(items)
    for item in new:
        bisect.insort(kept, item, key=_name)
    return tuple(kept)


def _name(item: Frontend | Backend) -> str:
    return item.name


def translate_cached(
    key: Key,
    service: JSON,
    *,
    slices: tuple[JSON, ...],
    endpoints: JSON | None,
    settings: TranslateSettings,
    cache: TranslateCache | None,
) -> ServiceResult:
    """translate_service, through the cache when there is one."""
    inputs = (settings, service, endpoints, *slices)
    result = cache.lookup(key, inputs) if cache is not None else None
    if result is None:
        result = translate_service(
            key, service, slices=slices, endpoints=endpoints, settings=settings
        )
        if cache is not None:
            cache.store(key, inputs, result)
    return result


def confined(old: ServiceResult, new: ServiceResult) -> bool:
    """Only the servers of the service's backends differ: its frontends, addresses and backend
    settings are the same, so the rest of the model (address conflicts included) is too."""
    return (
        old.frontends == new.frontends
        and old.vips == new.vips
        and old.entry == new.entry
        and old.created == new.created
        and old.claim == new.claim
        and len(old.backends) == len(new.backends)
        and all(
            a.name == b.name and a.settings == b.settings
            for a, b in zip(old.backends, new.backends, strict=True)
        )
    )
