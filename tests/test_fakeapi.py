"""Self-tests of testkit/fakeapi/: the fake API server speaks the list and watch wire protocol,
checked from raw HTTP (sockets, http.client, urllib3) and from the official kubernetes client."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import kubernetes
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from testkit.builders import endpoint_slice, endpoints_v1, service
from testkit.fakeapi import FakeKubeAPI, RequestRecord, Selector
from tests.live import wait_for

JSON = dict[str, Any]
SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"


# ---------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server
        assert server.errors == [], "the fake API server raised in a handler thread"


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    manager = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=5))
    yield manager
    manager.clear()


def svc(name: str, namespace: str = "default", **labels: str) -> JSON:
    return service(name, namespace, labels=labels or None)


def get(pool: urllib3.PoolManager, api: FakeKubeAPI, path: str, **query: Any) -> tuple[int, JSON]:
    resp = pool.request("GET", f"{api.url}{path}", fields=query or None)
    return resp.status, json.loads(resp.data)


def names(body: JSON) -> list[str]:
    return [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in body["items"]]


class Lines:
    """Events of one streaming response (urllib3's, or the client's raw one). One iterator for
    the response's life: abandoning urllib3's line iterator closes the connection."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.lines = iter(resp)

    @property
    def status(self) -> int:
        return int(self.resp.status)

    def events(self, count: int) -> list[JSON]:
        return [json.loads(next(self.lines)) for _ in range(count)]

    def rest(self) -> list[JSON]:
        """Every remaining event, until the server ends the stream."""
        return [json.loads(line) for line in self.lines]

    def close(self) -> None:
        self.resp.close()  # closes the connection (release_conn would pool it, mid-stream)


def watch(
    pool: urllib3.PoolManager, api: FakeKubeAPI, path: str, *, read: float = 5.0, **query: Any
) -> Lines:
    query.setdefault("watch", "true")
    resp = pool.request(
        "GET",
        f"{api.url}{path}",
        fields=query,
        preload_content=False,
        timeout=urllib3.Timeout(connect=2, read=read),
    )
    return Lines(resp)


def summary(evs: list[JSON]) -> list[tuple[str, str, str]]:
    return [
        (
            e["type"],
            e["object"]["metadata"].get("name", ""),
            e["object"]["metadata"]["resourceVersion"],
        )
        for e in evs
    ]


class RawStream:
    """One GET over a bare socket, the chunked body decoded by hand, to see the framing."""

    def __init__(self, api: FakeKubeAPI, path: str, **query: Any) -> None:
        port = urlsplit(api.url).port
        assert port is not None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        target = f"{path}?{urlencode(query)}" if query else path
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: fake\r\n\r\n".encode())
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        self.buf += data

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(sep)
        return head

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self) -> tuple[int, dict[str, str]]:
        status, *lines = self._until(b"\r\n\r\n").decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        return int(status.split()[1]), {k.lower(): v for k, v in headers.items()}

    def chunk(self) -> bytes:
        size = int(self._until(b"\r\n"), 16)
        data = self._exact(size)
        assert self._exact(2) == b"\r\n", "chunk not terminated by CRLF"
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(api: FakeKubeAPI) -> Iterator[list[RawStream]]:
    streams: list[RawStream] = []
    yield streams
    for s in streams:
        s.close()


def client_for(api: FakeKubeAPI, tmp_path: Path) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=api.kubeconfig(tmp_path / "kubeconfig"), client_configuration=cfg
    )
    return kubernetes.client.ApiClient(cfg)


def response_of(call: Callable[..., object], **kwargs: Any) -> urllib3.BaseHTTPResponse:
    """A client method's HTTP response itself, as `_preload_content=False` returns it (the
    client's annotations name only the deserialized model)."""
    response = call(_preload_content=False, **kwargs)
    assert isinstance(response, urllib3.BaseHTTPResponse), response
    return response


@pytest.fixture
def client(api: FakeKubeAPI, tmp_path: Path) -> Iterator[kubernetes.client.ApiClient]:
    with client_for(api, tmp_path) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# State: put, delete, resource versions


def test_put_and_delete_share_one_monotonic_resource_version(api: FakeKubeAPI) -> None:
    start = int(api.resource_version)
    assert api.put(svc("a")) == str(start + 1)
    assert api.put(endpoint_slice("a")) == str(start + 2)
    assert api.put(svc("a", app="x")) == str(start + 3)  # replaced: MODIFIED
    assert api.delete("EndpointSlice", "default", "a-abc12") == str(start + 4)
    assert api.resource_version == str(start + 4)
    stored = api.get("Service", "default", "a")
    assert stored is not None
    assert stored["kind"] == "Service" and stored["apiVersion"] == "v1"
    assert stored["metadata"]["resourceVersion"] == str(start + 3)
    assert stored["metadata"]["labels"] == {"app": "x"}
    assert api.get("EndpointSlice", "default", "a-abc12") is None
    with pytest.raises(KeyError):
        api.delete("Service", "default", "missing")
    with pytest.raises(ValueError, match="unsupported kind"):
        api.put({"kind": "Pod", "metadata": {"name": "p"}})
    with pytest.raises(ValueError, match="unknown resource"):
        api.fail_next("pods")


def test_put_does_not_keep_a_reference_to_the_caller_object(api: FakeKubeAPI) -> None:
    obj = svc("a", app="x")
    api.put(obj)
    obj["metadata"]["labels"]["app"] = "changed"
    assert "resourceVersion" not in obj["metadata"]
    stored = api.get("Service", "default", "a")
    assert stored is not None and stored["metadata"]["labels"] == {"app": "x"}


# ---------------------------------------------------------------------------------------------
# LIST over raw HTTP


def test_list_items_are_sorted_and_carry_no_kind(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    for ns, name in [("b", "z"), ("a", "y"), ("b", "a"), ("a", "x")]:
        api.put(svc(name, ns))
    api.put(endpoint_slice("x", "a"))
    status, body = get(pool, api, SERVICES)
    assert status == 200
    assert body["kind"] == "ServiceList" and body["apiVersion"] == "v1"
    assert body["metadata"] == {"resourceVersion": api.resource_version}
    assert names(body) == ["a/x", "a/y", "b/a", "b/z"]
    for item in body["items"]:
        assert "kind" not in item and "apiVersion" not in item
        assert item["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "name": "http"}]
    status, body = get(pool, api, "/api/v1/namespaces/b/services")
    assert (status, names(body)) == (200, ["b/a", "b/z"])


def test_each_resource_has_its_list_kind_and_group(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    api.put(svc("web"))
    api.put(endpoint_slice("web", "shop"))
    api.put(endpoints_v1("web", ready=["10.0.0.1"]))
    _, slices = get(pool, api, SLICES)
    assert (slices["kind"], slices["apiVersion"]) == ("EndpointSliceList", "discovery.k8s.io/v1")
    assert names(slices) == ["shop/web-abc12"]
    assert slices["items"][0]["addressType"] == "IPv4" and "kind" not in slices["items"][0]
    _, in_ns = get(pool, api, "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
    assert names(in_ns) == ["shop/web-abc12"]
    _, other_ns = get(pool, api, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")
    assert other_ns["items"] == []
    _, eps = get(pool, api, "/api/v1/endpoints")
    assert (eps["kind"], eps["apiVersion"], names(eps)) == ("EndpointsList", "v1", ["default/web"])
    assert eps["items"][0]["subsets"][0]["addresses"] == [{"ip": "10.0.0.1"}]


@pytest.mark.parametrize(
    ("method", "path", "code", "reason"),
    [
        ("GET", "/api/v1/pods", 404, "NotFound"),
        ("GET", "/api/v1/endpointslices", 404, "NotFound"),  # wrong group
        ("GET", "/apis/discovery.k8s.io/v1/services", 404, "NotFound"),
        ("GET", "/api/v1/services/extra", 404, "NotFound"),
        ("GET", "/", 404, "NotFound"),
        ("POST", SERVICES, 405, "MethodNotAllowed"),
    ],
)
def test_unknown_paths_and_methods_get_a_status(
    api: FakeKubeAPI, pool: urllib3.PoolManager, method: str, path: str, code: int, reason: str
) -> None:
    resp = pool.request(method, f"{api.url}{path}", body=b"{}" if method == "POST" else None)
    body = json.loads(resp.data)
    assert resp.status == code
    assert resp.headers["Content-Type"] == "application/json"
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert (body["status"], body["reason"], body["code"]) == ("Failure", reason, code)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", ["a", "b", "c", "d"]),
        ("app", ["a", "b", "c"]),
        ("!app", ["d"]),
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),  # != also matches objects without the key
        ("app=web,tier=front", ["a"]),
        ("app=web, !tier", ["b"]),
        ("example.com/team=blue", ["c"]),
        ("app=nothing", []),
    ],
)
def test_label_selector(
    api: FakeKubeAPI, pool: urllib3.PoolManager, selector: str, expected: list[str]
) -> None:
    api.put(svc("a", app="web", tier="front"))
    api.put(svc("b", app="web"))
    api.put(service("c", labels={"app": "db", "example.com/team": "blue"}))
    api.put(svc("d"))
    status, body = get(pool, api, SERVICES, labelSelector=selector)
    assert status == 200
    assert [i["metadata"]["name"] for i in body["items"]] == expected


@pytest.mark.parametrize("selector", ["app in (a,b)", "=x", "app=web,", "a b"])
def test_unsupported_label_selector_is_a_bad_request(
    api: FakeKubeAPI, pool: urllib3.PoolManager, selector: str
) -> None:
    status, body = get(pool, api, SERVICES, labelSelector=selector)
    assert (status, body["reason"]) == (400, "BadRequest")
    with pytest.raises(ValueError, match="unable to parse"):
        Selector.parse(selector)


def test_pagination_is_consistent_with_the_first_page(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    for name in ["a", "b", "c", "d", "e"]:
        api.put(svc(name, app="x"))
    first_rv = api.resource_version
    status, page1 = get(pool, api, SERVICES, limit=2)
    assert status == 200
    assert names(page1) == ["default/a", "default/b"]
    assert page1["metadata"]["resourceVersion"] == first_rv
    assert page1["metadata"]["remainingItemCount"] == 3
    token = page1["metadata"]["continue"]
    # Changes between pages must not show up in later pages of the same list.
    api.put(svc("c", app="changed"))
    api.delete("Service", "default", "d")
    api.put(svc("f"))
    api.put(svc("aa"))  # before the continue key
    status, page2 = get(pool, api, SERVICES, limit=2, **{"continue": token})
    assert status == 200
    assert names(page2) == ["default/c", "default/d"]
    assert page2["items"][0]["metadata"]["labels"] == {"app": "x"}  # the snapshot's state
    assert page2["metadata"]["resourceVersion"] == first_rv
    status, page3 = get(pool, api, SERVICES, limit=2, **{"continue": page2["metadata"]["continue"]})
    assert names(page3) == ["default/e"]
    assert page3["metadata"] == {"resourceVersion": first_rv}  # no continue: nothing remains
    # A fresh list sees the new state.
    _, fresh = get(pool, api, SERVICES)
    assert names(fresh) == [f"default/{n}" for n in ["a", "aa", "b", "c", "e", "f"]]
    assert fresh["metadata"]["resourceVersion"] == api.resource_version != first_rv


def test_pagination_with_a_selector_and_an_exact_fit(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    for name in ["a", "b", "c", "d"]:
        api.put(svc(name, app="web" if name in "bd" else "db"))
    _, page1 = get(pool, api, SERVICES, limit=1, labelSelector="app=web")
    assert names(page1) == ["default/b"]
    assert "remainingItemCount" not in page1["metadata"]  # not given with a selector
    token = page1["metadata"]["continue"]
    _, page2 = get(pool, api, SERVICES, limit=1, labelSelector="app=web", **{"continue": token})
    assert names(page2) == ["default/d"]
    assert "continue" not in page2["metadata"]
    _, exact = get(pool, api, SERVICES, limit=4)
    assert len(exact["items"]) == 4 and "continue" not in exact["metadata"]


def test_expired_continue_token_is_410_with_a_fresh_token(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    for name in ["a", "b", "c"]:
        api.put(svc(name))
    _, page1 = get(pool, api, SERVICES, limit=1)
    token = page1["metadata"]["continue"]
    api.expire_continue_tokens()
    api.put(svc("b", app="new"))
    status, body = get(pool, api, SERVICES, limit=1, **{"continue": token})
    assert status == 410
    assert {k: body[k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "Expired",
        "code": 410,
    }
    assert "continue parameter is too old" in body["message"]
    # The Status's own token continues from the same key, on the current state.
    status, rest = get(pool, api, SERVICES, **{"continue": body["metadata"]["continue"]})
    assert status == 200
    assert names(rest) == ["default/b", "default/c"]
    assert rest["items"][0]["metadata"]["labels"] == {"app": "new"}
    assert rest["metadata"]["resourceVersion"] == api.resource_version


def test_malformed_continue_token_is_a_bad_request(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    for token in ["not base64 !", base64.urlsafe_b64encode(b'{"x":1}').decode()]:
        status, body = get(pool, api, SERVICES, **{"continue": token})
        assert (status, body["reason"]) == (400, "BadRequest")
        assert "continue key is not valid" in body["message"]


def test_fail_next_fails_lists_and_watches_then_recovers(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    api.put(svc("a"))
    api.fail_next("services", status=503, times=2)
    api.fail_next("endpointslices")
    assert get(pool, api, SERVICES)[0] == 503
    resp = watch(pool, api, SERVICES, resourceVersion="1")
    assert resp.status == 503
    body = json.loads(resp.resp.data)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "ServiceUnavailable", 503)
    assert get(pool, api, SERVICES)[0] == 200
    status, body = get(pool, api, SLICES)
    assert (status, body["reason"]) == (500, "InternalError")
    assert get(pool, api, SLICES)[0] == 200


def test_requests_are_recorded(api: FakeKubeAPI, pool: urllib3.PoolManager) -> None:
    get(pool, api, "/api/v1/namespaces/ns/services", labelSelector="a=b", limit=5)
    get(pool, api, "/nowhere")
    rec, missing = api.requests
    assert rec == RequestRecord(
        "GET",
        "/api/v1/namespaces/ns/services",
        {"labelSelector": "a=b", "limit": "5"},
        rec.headers,
        "services",
    )
    assert rec.headers["host"] == urlsplit(api.url).netloc
    assert not rec.watch
    assert (missing.path, missing.resource) == ("/nowhere", None)
    assert api.wait_for_request(lambda r: r.path == "/nowhere") is missing
    with pytest.raises(TimeoutError):
        api.wait_for_request(lambda r: r.method == "PUT", timeout=0.05)


# ---------------------------------------------------------------------------------------------
# WATCH over raw HTTP


def test_watch_framing_one_event_per_chunk_and_clean_timeout(
    api: FakeKubeAPI, raw: list[RawStream]
) -> None:
    rv = api.resource_version
    api.put(svc("a"))
    api.put(svc("b"))
    started = time.monotonic()
    stream = RawStream(api, SERVICES, watch="1", resourceVersion=rv, timeoutSeconds=1)
    raw.append(stream)
    status, headers = stream.head()
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    chunks = [stream.chunk(), stream.chunk()]
    for data, name in zip(chunks, ["a", "b"], strict=True):
        assert data.endswith(b"\n") and data.count(b"\n") == 1  # exactly one event per chunk
        event = json.loads(data)
        assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == name
    api.put(svc("c"))  # live
    assert json.loads(stream.chunk())["object"]["metadata"]["name"] == "c"
    assert stream.chunk() == b""  # the terminating chunk: a clean end after timeoutSeconds
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9, elapsed  # ended by timeoutSeconds (1 s), not before it
    assert stream.buf == b""  # "0\r\n\r\n" and nothing after it: no trailers, no garbage
    # HTTP/1.1 keep-alive: the same connection serves the next request.
    stream.sock.sendall(b"GET /api/v1/services HTTP/1.1\r\nHost: fake\r\n\r\n")
    status, headers = stream.head()
    body = json.loads(stream._exact(int(headers["content-length"])))
    assert status == 200 and len(body["items"]) == 3


def test_watch_replays_from_a_resource_version_then_streams_live(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    rv_a = api.put(svc("a"))
    rv_b = api.put(svc("b"))
    api.put(endpoint_slice("a"))  # another resource: never on this watch
    rv_a2 = api.put(svc("a", app="x"))
    rv_del = api.delete("Service", "default", "b")
    resp = watch(pool, api, SERVICES, resourceVersion=rv_a)
    assert resp.status == 200
    replay = resp.events(3)
    assert summary(replay) == [
        ("ADDED", "b", rv_b),
        ("MODIFIED", "a", rv_a2),
        ("DELETED", "b", rv_del),
    ]
    for event in replay:  # watch event objects DO carry kind and apiVersion
        assert (event["object"]["kind"], event["object"]["apiVersion"]) == ("Service", "v1")
    assert replay[1]["object"]["metadata"]["labels"] == {"app": "x"}
    assert replay[2]["object"]["spec"]["ports"][0]["port"] == 80  # the last state
    api.wait_for_watch("services")
    rv_live = api.put(svc("c"))
    assert summary(resp.events(1)) == [("ADDED", "c", rv_live)]
    resp.close()


def test_watch_filters_by_namespace_and_selector_like_the_watch_cache(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    rv = api.resource_version
    resp = watch(
        pool, api, "/api/v1/namespaces/shop/services", resourceVersion=rv, labelSelector="app=web"
    )
    api.wait_for_watch("services")
    api.put(svc("web", "other", app="web"))  # other namespace
    api.put(svc("db", "shop", app="db"))  # not selected
    rv_added = api.put(svc("web", "shop", app="web"))
    rv_out = api.put(svc("web", "shop", app="old"))  # modified out of the selection
    rv_in = api.put(svc("db", "shop", app="web"))  # modified into the selection
    rv_mod = api.put(service("db", "shop", labels={"app": "web"}, ports=[("http", 81)]))
    rv_del = api.delete("Service", "shop", "db")
    got = resp.events(5)
    assert summary(got) == [
        ("ADDED", "web", rv_added),
        ("DELETED", "web", rv_out),
        ("ADDED", "db", rv_in),
        ("MODIFIED", "db", rv_mod),
        ("DELETED", "db", rv_del),
    ]
    # Leaving the selection reports the previous state, at the new resourceVersion.
    assert got[1]["object"]["metadata"]["labels"] == {"app": "web"}
    resp.close()


def test_watch_from_zero_starts_with_the_current_state(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    api.put(svc("b"))
    rv_a = api.put(svc("a"))
    rv_b = api.put(svc("b", app="x"))
    resp = watch(pool, api, SERVICES, resourceVersion="0")
    assert summary(resp.events(2)) == [("ADDED", "a", rv_a), ("ADDED", "b", rv_b)]
    resp.close()


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"resourceVersion": ""},
        {"resourceVersion": "abc"},
        {"resourceVersion": "1", "timeoutSeconds": "x"},
        {"resourceVersion": "1", "allowWatchBookmarks": "yes"},
    ],
)
def test_watch_with_a_bad_query_is_a_bad_request(
    api: FakeKubeAPI, pool: urllib3.PoolManager, query: dict[str, Any]
) -> None:
    resp = watch(pool, api, SERVICES, **query)
    assert resp.status == 400
    assert json.loads(resp.resp.data)["reason"] == "BadRequest"
    assert api.open_watches() == 0


def test_bookmarks_only_on_watches_that_asked(api: FakeKubeAPI, pool: urllib3.PoolManager) -> None:
    rv = api.resource_version
    with_bm = watch(pool, api, SERVICES, resourceVersion=rv, allowWatchBookmarks="true")
    without = watch(pool, api, SERVICES, resourceVersion=rv)
    slices = watch(pool, api, SLICES, resourceVersion=rv, allowWatchBookmarks="true")
    api.wait_for_watch("services", count=2)
    api.wait_for_watch("endpointslices")
    rv_a = api.put(svc("a"))
    assert api.bookmark("services") == 1
    rv_b = api.put(svc("b"))
    assert with_bm.events(3) == [
        events_of("ADDED", "a", rv_a)[0],
        {
            "type": "BOOKMARK",
            "object": {
                "kind": "Service",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": rv_a},
            },
        },
        events_of("ADDED", "b", rv_b)[0],
    ]
    assert summary(without.events(2)) == [("ADDED", "a", rv_a), ("ADDED", "b", rv_b)]
    assert api.bookmark("endpointslices") == 1
    assert slices.events(1)[0] == {
        "type": "BOOKMARK",
        "object": {
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"resourceVersion": rv_b},
        },
    }
    for resp in (with_bm, without, slices):
        resp.close()


def events_of(kind: str, name: str, rv: str) -> list[JSON]:
    obj = svc(name)
    obj["metadata"]["resourceVersion"] = rv
    return [{"type": kind, "object": obj}]


def test_compacted_resource_version_gets_one_410_error_event(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    old = api.put(svc("a"))
    before = watch(pool, api, SERVICES, resourceVersion=old)  # open before the compaction
    api.wait_for_watch("services")
    api.put(svc("b"))
    api.compact()
    current = api.resource_version
    resp = watch(pool, api, SERVICES, resourceVersion=old)
    assert resp.status == 200  # as the real server: the error is in the stream
    assert resp.rest() == [  # the stream ends by itself after the one event
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"too old resource version: {old} ({current})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    # Relisting gives the current resourceVersion, and a watch from it is served.
    _, listed = get(pool, api, SERVICES)
    assert listed["metadata"]["resourceVersion"] == current
    fresh = watch(pool, api, SERVICES, resourceVersion=current)
    api.wait_for_watch("services", count=2)
    rv_c = api.put(svc("c"))
    assert summary(fresh.events(1)) == [("ADDED", "c", rv_c)]
    # The watch opened before the compaction was not affected.
    assert [e["object"]["metadata"]["name"] for e in before.events(2)] == ["b", "c"]
    fresh.close()
    before.close()


def test_drop_watches_breaks_the_chunked_stream(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    rv = api.put(svc("a"))
    services = watch(pool, api, SERVICES, resourceVersion="1")
    slices = watch(pool, api, SLICES, resourceVersion=rv)
    assert summary(services.events(1)) == [("ADDED", "a", rv)]
    api.wait_for_watch("endpointslices")
    assert api.drop_watches("services") == 1
    with pytest.raises(urllib3.exceptions.ProtocolError):
        services.events(1)
    # The other resource's watch lives on.
    rv_s = api.put(endpoint_slice("a"))
    event = slices.events(1)[0]
    assert (event["type"], event["object"]["metadata"]["resourceVersion"]) == ("ADDED", rv_s)
    # The dropped watch's handler thread forgets it when it notices: wait for that, not for
    # a moment that a loaded machine may not give it.
    wait_for(lambda: api.open_watches("services") == 0, what="the dropped watch forgotten")
    assert api.open_watches("endpointslices") == api.open_watches() == 1
    slices.close()


def test_drop_watches_seen_by_http_client(api: FakeKubeAPI) -> None:
    port = urlsplit(api.url).port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", f"{SERVICES}?watch=true&resourceVersion=1")
        resp = conn.getresponse()
        assert resp.status == 200
        api.wait_for_watch("services")
        api.put(svc("a"))
        assert json.loads(resp.readline())["type"] == "ADDED"
        assert api.drop_watches() == 1
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_hang_holds_events_back_until_unhang(api: FakeKubeAPI, raw: list[RawStream]) -> None:
    rv = api.put(svc("a"))
    stream = RawStream(api, SERVICES, watch="true", resourceVersion="1")
    raw.append(stream)
    assert stream.head()[0] == 200
    assert json.loads(stream.chunk())["object"]["metadata"]["resourceVersion"] == rv
    api.hang_watches("services")
    rv_b = api.put(svc("b"))
    stream.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):  # the connection stays open, and nothing comes
        stream.chunk()
    assert api.open_watches("services") == 1
    api.unhang()
    stream.sock.settimeout(5)
    assert json.loads(stream.chunk())["object"]["metadata"]["resourceVersion"] == rv_b


def test_hang_makes_clients_time_out_on_open_and_new_watches(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    rv = api.resource_version
    open_watch = watch(pool, api, SERVICES, read=0.5, resourceVersion=rv)
    slices = watch(pool, api, SLICES, read=2, resourceVersion=rv)
    api.wait_for_watch("services")
    api.wait_for_watch("endpointslices")
    api.hang_watches("services")
    api.put(svc("a"))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        open_watch.events(1)
    # A new watch while hung does not even get its response headers.
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        watch(pool, api, SERVICES, read=0.3, resourceVersion=rv)
    # Other resources are not hung.
    api.put(endpoint_slice("a"))
    assert slices.events(1)[0]["type"] == "ADDED"
    api.unhang()
    after = watch(pool, api, SERVICES, read=2, resourceVersion=rv)
    assert [e["object"]["metadata"]["name"] for e in after.events(1)] == ["a"]
    for resp in (after, slices):
        resp.close()


def test_open_watches_follow_clients_that_go_away(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    assert api.open_watches() == 0
    with pytest.raises(TimeoutError):
        api.wait_for_watch("services", timeout=0.05)
    resp = watch(pool, api, SERVICES, resourceVersion=api.resource_version)
    api.wait_for_watch("services", timeout=2)
    assert (api.open_watches(), api.open_watches("services"), api.open_watches("endpoints")) == (
        1,
        1,
        0,
    )
    resp.close()  # not read to the end: urllib3 closes the connection
    deadline = time.monotonic() + 2
    while api.open_watches() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert api.open_watches() == 0


def test_stop_closes_open_watches_promptly(raw: list[RawStream]) -> None:
    api = FakeKubeAPI().start()
    try:
        live = RawStream(api, SERVICES, watch="true", resourceVersion="1")
        assert live.head()[0] == 200
        api.hang_watches()
        hung = [RawStream(api, SLICES, watch="true", resourceVersion="1") for _ in range(2)]
        idle = RawStream(api, SERVICES)  # a keep-alive connection waiting for its next request
        raw.extend([live, *hung, idle])
        status, headers = idle.head()
        assert status == 200 and json.loads(idle._exact(int(headers["content-length"])))
        api.wait_for_watch("endpointslices", count=2)
        assert api.open_watches() == 3
    finally:
        # The hung watches have no timeout: stop() cuts them, or raises when its threads
        # outlive its own timeout.
        api.stop()
    assert api.open_watches() == 0
    for stream in [live, *hung, idle]:
        with pytest.raises(ConnectionError):  # closed, and no terminating chunk on the watches
            stream._fill()
    with pytest.raises(RuntimeError, match="not started"):
        _ = api.url


# ---------------------------------------------------------------------------------------------
# The official kubernetes client


def test_kubeconfig_is_loaded_by_the_client(api: FakeKubeAPI, tmp_path: Path) -> None:
    path = api.kubeconfig(tmp_path / "kubeconfig")
    assert path == str(tmp_path / "kubeconfig")
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=path, client_configuration=cfg
    )
    assert cfg.host == api.url
    contexts, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=path
    )
    assert active["name"] == "fake" and [c["name"] for c in contexts] == ["fake"]
    with kubernetes.client.ApiClient(cfg) as client:
        kubernetes.client.CoreV1Api(client).list_namespaced_service("default")
    assert api.requests[-1].path == "/api/v1/namespaces/default/services"
    assert api.requests[-1].headers["authorization"] == f"Bearer {api.token}"


def test_client_lists_services_page_by_page(
    api: FakeKubeAPI, client: kubernetes.client.ApiClient
) -> None:
    for ns, name in [("b", "s1"), ("a", "s2"), ("a", "s1"), ("c", "s0"), ("b", "s0")]:
        api.put(svc(name, ns))
    core = kubernetes.client.CoreV1Api(client)
    seen: list[str] = []
    versions: set[str] = set()
    token: str | None = None
    pages = 0
    while True:
        resp = response_of(core.list_service_for_all_namespaces, limit=2, _continue=token)
        body = json.loads(resp.data)
        assert body["kind"] == "ServiceList"
        seen += names(body)
        versions.add(body["metadata"]["resourceVersion"])
        pages += 1
        if pages == 1:
            api.put(svc("s9", "a"))  # after the first page: not in this list
        token = body["metadata"].get("continue")
        if not token:
            break
    assert pages == 3
    assert seen == ["a/s1", "a/s2", "b/s0", "b/s1", "c/s0"]
    assert len(versions) == 1
    record = api.requests[0]
    assert record.headers["authorization"] == "Bearer fake-token"
    assert record.query == {"limit": "2"}
    assert api.requests[1].query["continue"]
    # Preloaded, the client deserializes the list into its models.
    typed = core.list_namespaced_service("a")
    assert [s.metadata.name for s in typed.items if s.metadata] == ["s1", "s2", "s9"]
    spec = typed.items[0].spec
    assert spec is not None and spec.ports is not None and spec.ports[0].port == 80


def test_client_sees_expired_continue_and_injected_failures(
    api: FakeKubeAPI, client: kubernetes.client.ApiClient
) -> None:
    for name in ["a", "b", "c"]:
        api.put(svc(name))
    core = kubernetes.client.CoreV1Api(client)
    first = json.loads(response_of(core.list_service_for_all_namespaces, limit=2).data)
    api.expire_continue_tokens()
    with pytest.raises(ApiException) as expired:
        response_of(
            core.list_service_for_all_namespaces, limit=2, _continue=first["metadata"]["continue"]
        )
    assert expired.value.status == 410 and expired.value.body is not None
    assert json.loads(expired.value.body)["reason"] == "Expired"
    api.fail_next("services", status=500)
    with pytest.raises(ApiException) as failed:
        response_of(core.list_service_for_all_namespaces)
    assert failed.value.status == 500 and failed.value.body is not None
    assert json.loads(failed.value.body)["kind"] == "Status"


def test_client_watch_streams_replay_live_and_bookmarks_then_ends(
    api: FakeKubeAPI, client: kubernetes.client.ApiClient
) -> None:
    core = kubernetes.client.CoreV1Api(client)
    rv = api.put(svc("old"))
    rv_a = api.put(svc("a"))
    started = time.monotonic()
    resp = response_of(
        core.list_service_for_all_namespaces,
        watch=True,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=2,
        _request_timeout=(2, 5),
    )
    assert resp.status == 200
    api.wait_for_watch("services")
    assert api.requests[-1].query == {
        "allowWatchBookmarks": "true",
        "resourceVersion": rv,
        "timeoutSeconds": "2",
        "watch": "true",
    }
    assert api.requests[-1].watch
    rv_b = api.put(svc("b"))
    api.bookmark("services")
    api.delete("Service", "default", "a")
    got = [json.loads(line) for line in resp]  # ends by itself after timeout_seconds
    elapsed = time.monotonic() - started
    assert [e["type"] for e in got] == ["ADDED", "ADDED", "BOOKMARK", "DELETED"]
    assert summary([got[0], got[1], got[3]]) == [
        ("ADDED", "a", rv_a),
        ("ADDED", "b", rv_b),
        ("DELETED", "a", api.resource_version),
    ]
    assert got[2]["object"]["metadata"] == {"resourceVersion": rv_b}
    assert elapsed >= 1.9, elapsed  # ended by timeout_seconds (2 s), not before it
    # The client's own Watch helper deserializes the same events into its models.
    w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
    typed = [
        (e["type"], e["object"].metadata.name)
        for e in w.stream(  # type: ignore[no-untyped-call]
            core.list_service_for_all_namespaces, resource_version=rv, timeout_seconds=1
        )
        if e["type"] != "BOOKMARK"
    ]
    assert typed == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]


def test_client_watch_gets_410_error_event_after_compaction(
    api: FakeKubeAPI, client: kubernetes.client.ApiClient
) -> None:
    core = kubernetes.client.CoreV1Api(client)
    rv = api.put(svc("a"))
    api.put(svc("b"))
    api.compact()
    resp = response_of(
        core.list_service_for_all_namespaces, watch=True, resource_version=rv, timeout_seconds=5
    )
    got = [json.loads(line) for line in resp.stream()]
    assert len(got) == 1
    assert got[0]["type"] == "ERROR"
    assert (got[0]["object"]["code"], got[0]["object"]["reason"]) == (410, "Expired")


def test_client_watch_read_timeout_on_hang(
    api: FakeKubeAPI, client: kubernetes.client.ApiClient
) -> None:
    core = kubernetes.client.CoreV1Api(client)
    resp = response_of(
        core.list_service_for_all_namespaces,
        watch=True,
        resource_version=api.resource_version,
        _request_timeout=(2, 0.5),
    )
    api.wait_for_watch("services")
    api.hang_watches()
    api.put(svc("a"))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        next(iter(resp))


def test_client_endpoint_slices_list_and_watch(
    api: FakeKubeAPI, client: kubernetes.client.ApiClient
) -> None:
    discovery = kubernetes.client.DiscoveryV1Api(client)
    api.put(endpoint_slice("web", "b", endpoints=["10.0.0.1"]))
    api.put(endpoint_slice("web", "a", endpoints=["10.0.0.2"]))
    api.put(endpoint_slice("db", "a", endpoints=["10.0.0.3"]))
    page = json.loads(
        response_of(
            discovery.list_endpoint_slice_for_all_namespaces,
            limit=2,
            label_selector="kubernetes.io/service-name=web",
        ).data
    )
    assert (page["kind"], page["apiVersion"]) == ("EndpointSliceList", "discovery.k8s.io/v1")
    assert names(page) == ["a/web-abc12", "b/web-abc12"]
    assert "continue" not in page["metadata"]
    assert page["items"][0]["endpoints"][0]["addresses"] == ["10.0.0.2"]
    rv = page["metadata"]["resourceVersion"]
    resp = response_of(
        discovery.list_endpoint_slice_for_all_namespaces,
        watch=True,
        resource_version=rv,
        label_selector="kubernetes.io/service-name=web",
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        _request_timeout=(2, 5),
    )
    api.wait_for_watch("endpointslices")
    api.put(endpoint_slice("db", "a", endpoints=["10.0.0.4"]))  # not selected
    rv_web = api.put(endpoint_slice("web", "a", endpoints=["10.0.0.5"]))
    api.bookmark("endpointslices")
    got = [json.loads(line) for line in resp]
    assert [e["type"] for e in got] == ["MODIFIED", "BOOKMARK"]
    assert got[0]["object"]["kind"] == "EndpointSlice"
    assert got[0]["object"]["apiVersion"] == "discovery.k8s.io/v1"
    assert got[0]["object"]["endpoints"][0]["addresses"] == ["10.0.0.5"]
    assert got[0]["object"]["metadata"]["resourceVersion"] == rv_web
    assert got[1]["object"]["kind"] == "EndpointSlice"
    typed = discovery.list_namespaced_endpoint_slice("a")
    assert [s.metadata.name for s in typed.items if s.metadata] == ["db-abc12", "web-abc12"]


# ---------------------------------------------------------------------------------------------
# What a client asks before it lists: the version and access reviews


REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def review(verb: str, resource: str, group: str = "", namespace: str = "") -> JSON:
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb,
                "group": group,
                "resource": resource,
            }
        },
    }


def post(pool: urllib3.PoolManager, api: FakeKubeAPI, path: str, body: object) -> tuple[int, JSON]:
    resp = pool.request(
        "POST",
        f"{api.url}{path}",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return resp.status, json.loads(resp.data)


def test_version_answers_as_a_server_of_the_version_set(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    assert get(pool, api, "/version") == (200, api.version_info)
    assert api.version_info["gitVersion"] == "v1.31.0"
    api.set_version("v1.29.3")
    status, body = get(pool, api, "/version")
    assert (status, body["major"], body["minor"], body["gitVersion"]) == (200, "1", "29", "v1.29.3")
    api.fail_next("version", 503)
    status, body = get(pool, api, "/version")
    assert (status, body["kind"], body["code"]) == (503, "Status", 503)
    assert [r.resource for r in api.requests][-3:] == ["version"] * 3


def test_access_reviews_answer_from_the_rules_set(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    status, body = post(pool, api, REVIEWS, review("list", "services"))
    assert status == 201
    assert body["status"]["allowed"] is True
    assert body["spec"] == review("list", "services")["spec"]
    api.deny("watch", "endpointslices")  # its group by default: discovery.k8s.io
    status, body = post(pool, api, REVIEWS, review("watch", "endpointslices", "discovery.k8s.io"))
    assert (status, body["status"]["allowed"]) == (201, False)
    assert "denied" not in body["status"] and body["status"]["reason"]
    # Another group's resource of that name, another verb: allowed.
    assert post(pool, api, REVIEWS, review("watch", "endpointslices"))[1]["status"]["allowed"]
    assert post(pool, api, REVIEWS, review("list", "endpointslices", "discovery.k8s.io"))[1][
        "status"
    ]["allowed"]
    api.allow_all()
    assert post(pool, api, REVIEWS, review("watch", "endpointslices", "discovery.k8s.io"))[1][
        "status"
    ]["allowed"]
    assert [r["verb"] for r in api.access_reviews] == ["list", "watch", "watch", "list", "watch"]
    assert api.requests[-1].body == review("watch", "endpointslices", "discovery.k8s.io")


def test_access_reviews_the_real_server_would_refuse(
    api: FakeKubeAPI, pool: urllib3.PoolManager
) -> None:
    status, body = post(pool, api, REVIEWS, {"kind": "Pod"})
    assert (status, body["reason"]) == (400, "BadRequest")
    no_attributes = {"kind": "SelfSubjectAccessReview", "spec": {}}
    status, body = post(pool, api, REVIEWS, no_attributes)
    assert (status, body["reason"]) == (422, "Invalid")
    api.fail_next("selfsubjectaccessreviews", 403)
    assert post(pool, api, REVIEWS, review("list", "services"))[0] == 403
    assert api.access_reviews == []
    with pytest.raises(ValueError, match="unknown resource"):
        api.fail_next("pods")
