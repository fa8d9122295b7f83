"""resources.cut and prune: objects cut down to what translate reads, in place (the sources'
freshly decoded objects) or as a copy, translating exactly as the originals do."""

from __future__ import annotations

import copy
import sys
from typing import Any

from kube2haproxy.resources import Kind, cut, prune
from testkit.builders import endpoint, endpoint_slice, service
from tests.pipeline import run_loaded


def api_slice() -> dict[str, Any]:
    """An EndpointSlice as the API returns it: targetRefs, nodeNames, zones, hints."""
    obj = endpoint_slice(
        "web",
        endpoints=[
            {
                **endpoint(ip, ready=True, serving=True, terminating=False),
                "targetRef": {"kind": "Pod", "name": f"web-{i}", "namespace": "default"},
                "nodeName": "node-1",
                "zone": "a",
                "hints": {"forZones": [{"name": "a"}]},
            }
            for i, ip in enumerate(["10.1.0.1", "10.1.0.2", "10.1.0.3"])
        ],
    )
    obj["metadata"]["ownerReferences"] = [{"kind": "Service", "name": "web"}]
    obj["metadata"]["uid"] = "1234"
    return obj


def test_cut_is_prune_in_place_and_cutting_again_changes_nothing():
    original = api_slice()
    pruned = prune(Kind.ENDPOINT_SLICE, original)
    assert original == api_slice()  # prune leaves its argument as it was
    obj = api_slice()
    assert cut(Kind.ENDPOINT_SLICE, obj, intern=sys.intern) is obj
    assert obj == pruned
    assert [e["targetRef"] for e in obj["endpoints"]] == ["Pod/web-0", "Pod/web-1", "Pod/web-2"]
    kept = {"addresses", "conditions", "nodeName", "targetRef"}
    assert all(set(e) == kept for e in obj["endpoints"])
    assert set(obj["metadata"]) == {"name", "namespace", "labels"}
    again = copy.deepcopy(obj)
    cut(Kind.ENDPOINT_SLICE, again)  # YAML aliases may hand the same dict twice
    assert again == obj


def test_equal_conditions_are_one_dict():
    obj = cut(Kind.ENDPOINT_SLICE, api_slice())
    other = cut(Kind.ENDPOINT_SLICE, api_slice())
    conditions = [e["conditions"] for e in obj["endpoints"] + other["endpoints"]]
    assert all(c is conditions[0] for c in conditions)
    assert conditions[0] == {"ready": True, "serving": True, "terminating": False}


def test_conditions_equal_to_booleans_but_not_booleans_stay_theirs():
    """1 == True and 0 == False, but translate refuses them: sharing by equality would turn
    a refused endpoint into a ready one."""
    shared = cut(Kind.ENDPOINT_SLICE, api_slice())["endpoints"][0]["conditions"]
    weird: list[dict[str, Any]] = [
        {"ready": 1, "serving": True, "terminating": False},
        {"ready": False, "serving": 1, "terminating": 0},
        {"ready": 1.0},
        {"ready": [True]},  # unhashable
        {"ready": True, "serving": True, "terminating": False, "extra": True},
    ]
    objects = [service("web")]
    for i, conditions in enumerate(weird):
        obj = endpoint_slice("web", name=f"web-{i}", endpoints=[endpoint(f"10.1.0.{i + 1}")])
        obj["endpoints"][0]["conditions"] = conditions
        objects.append(obj)
    originals = copy.deepcopy(objects)
    for obj in objects[1:]:
        cut(Kind.ENDPOINT_SLICE, obj)
    for obj, conditions in zip(objects[1:], weird, strict=True):
        kept = obj["endpoints"][0]["conditions"]
        assert kept is not shared
        assert kept == conditions
        assert [type(v) for v in kept.values()] == [type(v) for v in conditions.values()]
    translated, original = run_loaded(*objects), run_loaded(*originals)
    assert translated == original
    assert len(original.warnings) >= 4  # the refused ones are reported: not vacuous


def test_a_service_cut_keeps_what_translate_reads():
    obj = service("web", annotations={"a": "b"})
    obj["spec"]["selector"] = {"app": "web"}
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}, "conditions": []}
    obj["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    original = copy.deepcopy(obj)
    cut(Kind.SERVICE, obj)
    assert "selector" not in obj["spec"] and "managedFields" not in obj["metadata"]
    assert obj["status"] == {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    assert obj["metadata"]["annotations"] == {"a": "b"}
    assert run_loaded(obj) == run_loaded(original)
