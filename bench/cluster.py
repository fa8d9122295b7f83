"""Synthetic clusters for the benchmarks: N Services with M ready endpoints each, as the API
would return them (plain dicts, with the targetRefs, owners, selectors and resourceVersions it
adds), spread over namespaces, built with testkit.builders."""

from __future__ import annotations

import ipaddress

from testkit import builders
from testkit.builders import JSON

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
POD_CIDR = ipaddress.ip_network("10.128.0.0/9")


def service(index: int, *, namespaces: int = 50) -> JSON:
    name = f"svc-{index}"
    obj = builders.service(
        name,
        f"ns-{index % namespaces}",
        ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        cluster_ips=[str(SERVICE_CIDR[index + 10])],
        created="2026-01-01T00:00:00Z",
        selector={"app": name},
    )
    obj["metadata"]["resourceVersion"] = str(1000 + index)
    return obj


def endpoint_slice(index: int, endpoints: int, *, namespaces: int = 50, base: int = 0) -> JSON:
    name, namespace = f"svc-{index}", f"ns-{index % namespaces}"
    first = (index * endpoints + base) % (POD_CIDR.num_addresses - 2) + 1
    obj = builders.endpoint_slice(
        name,
        namespace,
        name=f"{name}-abcde",
        endpoints=[
            {
                **builders.endpoint(
                    str(POD_CIDR[first + j]), ready=True, serving=True, terminating=False
                ),
                "targetRef": {"kind": "Pod", "name": f"{name}-{j}", "namespace": namespace},
            }
            for j in range(endpoints)
        ],
    )
    obj["metadata"]["resourceVersion"] = str(500_000 + index)
    # As the EndpointSlice controller writes it: owned by its Service.
    owner = {"apiVersion": "v1", "kind": "Service", "name": name, "uid": f"uid-{index}"}
    obj["metadata"]["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": True}]
    return obj


def cluster(services: int, endpoints: int) -> list[JSON]:
    objects: list[JSON] = []
    for i in range(services):
        objects.append(service(i))
        objects.append(endpoint_slice(i, endpoints))
    return objects
