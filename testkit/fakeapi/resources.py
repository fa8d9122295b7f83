"""The resources served: each one's plural (its path segment), kind, list kind and API group,
and the checks that turn a kind or a resource name given by a test into one of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceType:
    """One served resource: its plural (the path segment), kinds and API group prefix."""

    resource: str
    kind: str
    list_kind: str
    api_version: str
    prefix: str


RESOURCES: dict[str, ResourceType] = {
    rt.resource: rt
    for rt in (
        ResourceType("services", "Service", "ServiceList", "v1", "/api/v1"),
        ResourceType("endpoints", "Endpoints", "EndpointsList", "v1", "/api/v1"),
        ResourceType(
            "endpointslices",
            "EndpointSlice",
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            "/apis/discovery.k8s.io/v1",
        ),
    )
}
BY_KIND = {rt.kind: rt for rt in RESOURCES.values()}


def type_of_kind(kind: Any) -> ResourceType:
    if kind not in BY_KIND:
        raise ValueError(f"unsupported kind {kind!r}: one of {sorted(BY_KIND)}")
    return BY_KIND[kind]


def check_resource(resource: str) -> str:
    if resource not in RESOURCES:
        raise ValueError(f"unknown resource {resource!r}: one of {sorted(RESOURCES)}")
    return resource


# What else a test may make fail (fail_next): the version and access reviews (access.py).
OTHER_TARGETS = frozenset({"version", "selfsubjectaccessreviews"})


def check_target(target: str) -> str:
    if target not in RESOURCES and target not in OTHER_TARGETS:
        raise ValueError(
            f"unknown resource {target!r}: one of {sorted({*RESOURCES, *OTHER_TARGETS})}"
        )
    return target
