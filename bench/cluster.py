"""Synthetic clusters for the benchmarks: N Services with M ready endpoints each, as the API
would return them (plain dicts), spread over namespaces and a few port shapes."""

from __future__ import annotations

import ipaddress
from typing import Any

from kube2haproxy.resources import key_of, kind_of
from kube2haproxy.store import Store

JSON = dict[str, Any]
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
POD_CIDR = ipaddress.ip_network("10.128.0.0/9")


def service(index: int, *, namespaces: int = 50) -> JSON:
    name = f"svc-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": f"ns-{index % namespaces}",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "resourceVersion": str(1000 + index),
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": str(SERVICE_CIDR[index + 10]),
            "clusterIPs": [str(SERVICE_CIDR[index + 10])],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app": name},
        },
    }


def endpoint_slice(index: int, endpoints: int, *, namespaces: int = 50, base: int = 0) -> JSON:
    name = f"svc-{index}"
    first = (index * endpoints + base) % (POD_CIDR.num_addresses - 2) + 1
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abcde",
            "namespace": f"ns-{index % namespaces}",
            "labels": {"kubernetes.io/service-name": name},
            "resourceVersion": str(500_000 + index),
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [str(POD_CIDR[first + j])],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": {
                    "kind": "Pod",
                    "name": f"{name}-{j}",
                    "namespace": f"ns-{index % namespaces}",
                },
            }
            for j in range(endpoints)
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def cluster(services: int, endpoints: int) -> list[JSON]:
    objects: list[JSON] = []
    for i in range(services):
        objects.append(service(i))
        objects.append(endpoint_slice(i, endpoints))
    return objects


def store_of(objects: list[JSON]) -> Store:
    """The objects in a store, as the controller and `render` hold them."""
    store = Store()
    for obj in objects:
        kind = kind_of(obj)
        assert kind is not None
        store.put(kind, key_of(obj), obj)
    return store
