"""The Data Plane API emulator (testkit/dataplane) against a real HAProxy, once per version under
test: the wire protocol a client sees (auth, versions, raw config, reloads, runtime servers and
map entries, errors) and that what it reports is what the HAProxy behind it does, proved by
real traffic to real backends."""

from __future__ import annotations

import re
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit.backends import Backend, free_port, get, loopback_ip, routes
from testkit.dataplane import DataplaneEmulator
from tests.live import haproxy_config, wait_for

pytestmark = pytest.mark.haproxy

RAW = "/v3/services/haproxy/configuration/raw"
VERSION = "/v3/services/haproxy/configuration/version"
RELOADS = "/v3/services/haproxy/reloads"
SERVERS = "/v3/services/haproxy/runtime/backends/web/servers"
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def emulator(haproxy_bin: str, tmp_path: Path) -> Iterator[DataplaneEmulator]:
    with DataplaneEmulator(haproxy_bin, tmp_path, user="admin", password="s3cret") as emu:
        yield emu
    assert not emu.errors


@pytest.fixture
def api(emulator: DataplaneEmulator) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = emulator.auth
        yield session


@pytest.fixture(scope="module")
def backend() -> Iterator[Callable[[str], Backend]]:
    """Backends by name, shared by the module's tests (each routes its own fresh frontend to
    them): stopping one takes half a second."""
    started: dict[str, Backend] = {}

    def start(name: str) -> Backend:
        if name not in started:
            started[name] = Backend(name)
        return started[name]

    yield start
    closing = [threading.Thread(target=b.close) for b in started.values()]
    for thread in closing:
        thread.start()
    for thread in closing:
        thread.join()


class Site:
    """A frontend on a fresh loopback address, as the configs below route it."""

    def __init__(self, emulator: DataplaneEmulator) -> None:
        self.emulator = emulator
        self.vip = loopback_ip()
        self.port = free_port(self.vip)

    def config(self, *servers: Backend, extra: str = "") -> str:
        return haproxy_config(
            self.emulator.haproxy.workdir, self.vip, self.port, list(servers), extra
        )

    def answers(self) -> set[str]:
        return routes(self.vip, self.port)


def post_raw(
    api: requests.Session, emu: DataplaneEmulator, text: str, **params: Any
) -> requests.Response:
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    return api.post(emu.url + RAW, params=query, data=text.encode(), headers=TEXT)


def load(api: requests.Session, emu: DataplaneEmulator, text: str) -> None:
    """Install a config and reload synchronously."""
    response = post_raw(api, emu, text, version=emu.version, force_reload=True)
    assert response.status_code == 201, response.text


def wait_reload(api: requests.Session, emu: DataplaneEmulator, reload_id: str) -> dict[str, Any]:
    done: dict[str, Any] = {}

    def finished() -> bool:
        done.clear()
        done.update(api.get(f"{emu.url}{RELOADS}/{reload_id}").json())
        return bool(done["status"] != "in_progress")

    wait_for(finished, timeout=30, what=f"reload {reload_id}")
    return done


def error(response: requests.Response, status: int) -> str:
    """The message of an error answer, after checking its shape."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert "Configuration-Version" in response.headers
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == status
    return str(body["message"])


def test_auth_is_basic_and_answers_401_as_dataplaneapi(
    emulator: DataplaneEmulator, api: requests.Session
) -> None:
    missing = requests.get(emulator.url + "/v3/info")
    assert error(missing, 401) == "missing or invalid authorization"
    assert missing.headers["WWW-Authenticate"] == 'Basic realm="API"'
    assert missing.headers["Configuration-Version"] == "1"
    wrong = requests.get(emulator.url + "/v3/info", auth=("admin", "nope"))
    assert error(wrong, 401) == "unauthorized"

    info = api.get(emulator.url + "/v3/info")
    assert info.status_code == 200
    assert info.json()["api"]["version"].startswith("v3.4.2")
    assert info.text.endswith("}\n")  # a Go json.Encoder's newline
    assert api.get(emulator.url + "/v3/health").json() == {"haproxy": "up"}


def test_version_and_raw_config_read_from_the_file(
    emulator: DataplaneEmulator, api: requests.Session
) -> None:
    version = api.get(emulator.url + VERSION)
    assert (version.status_code, version.text, version.json()) == (200, "1\n", 1)
    raw = api.get(emulator.url + RAW)
    assert raw.status_code == 200
    assert raw.headers["Content-Type"] == "text/plain"
    assert raw.headers["Configuration-Version"] == "1"
    assert raw.text == emulator.config_text()
    assert raw.text.startswith("# _version=1\n")
    assert f"stats socket {emulator.stats_socket}" in raw.text


def test_raw_post_with_force_reload_serves_the_config_when_it_answers(
    emulator: DataplaneEmulator, api: requests.Session, backend: Callable[[str], Backend]
) -> None:
    site = Site(emulator)
    text = site.config(backend("a"))
    missing = post_raw(api, emulator, text, force_reload=True)
    assert error(missing, 400) == "version or transaction not specified, specify only one"

    response = post_raw(api, emulator, text, version=1, force_reload=True)
    assert response.status_code == 201, response.text
    assert "Reload-Id" not in response.headers
    assert response.headers["Configuration-Version"] == "2"
    assert response.text == emulator.config_text() == "# _version=2\n" + text
    assert get(site.vip, site.port) == "a"  # synchronous: served once answered
    assert api.get(emulator.url + VERSION).json() == 2


def test_raw_posts_in_a_row_share_one_queued_reload(
    haproxy_bin: str, tmp_path: Path, backend: Callable[[str], Backend]
) -> None:
    with (
        DataplaneEmulator(haproxy_bin, tmp_path, reload_delay_s=1.0) as emu,
        requests.Session() as api,
    ):
        api.auth = emu.auth
        site = Site(emu)
        before = emu.haproxy.processes().reloads
        first = post_raw(api, emu, site.config(backend("a")), version=1)
        second = post_raw(api, emu, site.config(backend("b")), version=2)
        assert (first.status_code, second.status_code) == (202, 202), second.text
        reload_id = first.headers["Reload-Id"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-\d+", reload_id)
        assert second.headers["Reload-Id"] == reload_id
        assert second.headers["Configuration-Version"] == "3"
        assert {"id": reload_id, "status": "in_progress"} in api.get(emu.url + RELOADS).json()

        done = wait_reload(api, emu, reload_id)
        assert done["status"] == "succeeded" and done["id"] == reload_id
        assert isinstance(done["reload_timestamp"], int)
        assert site.answers() == {"b"}
        assert emu.haproxy.processes().reloads == before + 1
        third = post_raw(api, emu, site.config(backend("c")), version=3)
        assert third.headers["Reload-Id"] != reload_id
        # A forced reload runs the queued one at once, under its id.
        forced = post_raw(api, emu, site.config(backend("c")), version=4, force_reload=True)
        assert forced.status_code == 201 and "Reload-Id" not in forced.headers
        assert api.get(f"{emu.url}{RELOADS}/{third.headers['Reload-Id']}").json()["status"] == (
            "succeeded"
        )
        wait_for(lambda: site.answers() == {"c"}, what="the old worker to stop accepting")


def test_stale_version_is_409_and_changes_nothing(
    emulator: DataplaneEmulator, api: requests.Session
) -> None:
    assert emulator.bump_version() == 2  # another writer
    assert api.get(emulator.url + VERSION).json() == 2
    before = emulator.config_text()
    assert before.startswith("# _version=2\n")
    stale = post_raw(api, emulator, before, version=1, force_reload=True)
    message = error(stale, 409)
    assert message == "version in configuration file is 2, given version is 1"
    assert emulator.config_text() == before


def test_config_haproxy_c_refuses_is_400_and_the_old_one_serves_on(
    emulator: DataplaneEmulator, api: requests.Session, backend: Callable[[str], Backend]
) -> None:
    site = Site(emulator)
    text = site.config(backend("a"))
    load(api, emulator, text)
    good = emulator.config_text()
    refused = post_raw(api, emulator, text + "backend broken\n    bogus_keyword 1\n", version=2)
    assert "bogus_keyword" in error(refused, 400)  # HAProxy's own output
    assert emulator.config_text() == good
    assert refused.headers["Configuration-Version"] == "2"
    assert get(site.vip, site.port) == "a"


def test_config_haproxy_refuses_at_reload_fails_and_the_previous_is_restored(
    emulator: DataplaneEmulator, api: requests.Session, backend: Callable[[str], Backend]
) -> None:
    site = Site(emulator)
    text = site.config(backend("a"))
    load(api, emulator, text)
    good = emulator.config_text()
    unbindable = text + "frontend fe_elsewhere\n    bind 192.0.2.1:1\n"  # not on this host

    queued = post_raw(api, emulator, unbindable, version=2)
    assert queued.status_code == 202 and queued.headers["Configuration-Version"] == "3"
    done = wait_reload(api, emulator, queued.headers["Reload-Id"])
    assert done["status"] == "failed"
    assert "192.0.2.1" in done["response"]
    assert done in api.get(emulator.url + RELOADS).json()
    assert emulator.config_text() == good  # the last known good file, its version included
    assert api.get(emulator.url + VERSION).json() == 2

    forced = post_raw(api, emulator, unbindable, version=2, force_reload=True)
    assert error(forced, 400).startswith("Reload failed: ")
    assert forced.headers["Configuration-Version"] == "2"
    assert emulator.config_text() == good
    assert get(site.vip, site.port) == "a"


def test_runtime_server_put_moves_traffic_without_a_reload(
    emulator: DataplaneEmulator, api: requests.Session, backend: Callable[[str], Backend]
) -> None:
    site = Site(emulator)
    a, b = backend("a"), backend("b")
    load(api, emulator, site.config(a))
    reloads = emulator.haproxy.processes().reloads

    [server] = api.get(emulator.url + SERVERS).json()
    assert server["name"] == "s1" and server["id"] == "1" and server["backend_name"] == "web"
    assert (server["address"], server["port"]) == (a.ip, a.port)
    assert (server["admin_state"], server["operational_state"]) == ("ready", "up")

    moved = api.put(f"{emulator.url}{SERVERS}/s1", json={"address": b.ip, "port": b.port})
    assert moved.status_code == 200, moved.text
    assert moved.json()["name"] == "s1"

    def placed() -> bool:
        now = api.get(f"{emulator.url}{SERVERS}/s1").json()
        return bool((now["address"], now["port"]) == (b.ip, b.port))

    # From 3.0 HAProxy may apply an address a moment after it answered (3.0.11 to 3.4.0: up
    # to 6 in 300), so the answer's re-read can still show the old one.
    wait_for(placed, what="the new address")
    wait_for(lambda: site.answers() == {"b"}, what="traffic to b")
    for state in ("drain", "maint", "ready"):
        put = api.put(f"{emulator.url}{SERVERS}/s1", json={"admin_state": state})
        assert put.json()["admin_state"] == state
        assert api.get(f"{emulator.url}{SERVERS}/s1").json()["admin_state"] == state

    assert emulator.haproxy.processes().reloads == reloads
    assert moved.headers["Configuration-Version"] == "2" and emulator.version == 2
    error(api.put(f"{emulator.url}{SERVERS}/nope", json={"admin_state": "maint"}), 404)
    error(api.get(emulator.url + "/v3/services/haproxy/runtime/backends/nope/servers"), 404)
    error(api.put(f"{emulator.url}{SERVERS}/s1", json={"admin_state": "off"}), 422)


def test_runtime_servers_are_added_and_deleted(
    emulator: DataplaneEmulator, api: requests.Session, backend: Callable[[str], Backend]
) -> None:
    site = Site(emulator)
    a, b = backend("a"), backend("b")
    load(api, emulator, site.config(a))
    reloads = emulator.haproxy.processes().reloads
    body = {"name": "s9", "address": b.ip, "port": b.port, "check": "disabled", "weight": 10}

    added = api.post(emulator.url + SERVERS, json=body)
    assert (added.status_code, added.json()) == (201, body)
    error(api.post(emulator.url + SERVERS, json=body), 409)
    error(
        api.post(emulator.url + "/v3/services/haproxy/runtime/backends/x/servers", json=body), 404
    )
    assert "name" in error(api.post(emulator.url + SERVERS, json={"address": b.ip}), 400)
    server = api.get(f"{emulator.url}{SERVERS}/s9").json()
    assert (server["admin_state"], server["weight"]) == ("maint", 10)  # HAProxy's default

    api.put(f"{emulator.url}{SERVERS}/s9", json={"admin_state": "ready"}).raise_for_status()
    api.put(f"{emulator.url}{SERVERS}/s1", json={"admin_state": "maint"}).raise_for_status()
    wait_for(lambda: site.answers() == {"b"}, what="traffic to the added server")

    api.put(f"{emulator.url}{SERVERS}/s1", json={"admin_state": "ready"}).raise_for_status()
    # HAProxy refuses `del server` while a connection is still attached: dataplaneapi's 500.
    wait_for(lambda: api.delete(f"{emulator.url}{SERVERS}/s9").status_code == 204, what="deleted")
    error(api.get(f"{emulator.url}{SERVERS}/s9"), 404)
    error(api.delete(f"{emulator.url}{SERVERS}/s9"), 404)
    assert [s["name"] for s in api.get(emulator.url + SERVERS).json()] == ["s1"]
    assert emulator.haproxy.processes().reloads == reloads and emulator.version == 2


def test_runtime_map_entries_change_what_haproxy_routes(
    haproxy_bin: str, tmp_path: Path, backend: Callable[[str], Backend]
) -> None:
    a, b = backend("a"), backend("b")
    vip = loopback_ip()
    port = free_port(vip)
    hosts = tmp_path / "maps" / "hosts.map"
    hosts.parent.mkdir()
    hosts.write_text("example.org be_b\n")
    config = textwrap.dedent(f"""\
        global
            stats socket {tmp_path}/admin.sock mode 600 level admin
        defaults
            mode http
            timeout connect 2s
            timeout client 10s
            timeout server 10s
        frontend fe_web
            bind {vip}:{port}
            use_backend %[req.hdr(host),field(1,:),map({hosts},be_a)]
        backend be_a
            server a {a.address}
        backend be_b
            server b {b.address}
        """)
    with (
        DataplaneEmulator(haproxy_bin, tmp_path, initial_config=config) as emu,
        requests.Session() as api,
    ):
        api.auth = emu.auth
        entries = emu.url + "/v3/services/haproxy/runtime/maps/hosts/entries"
        reloads = emu.haproxy.processes().reloads
        [listed] = api.get(entries).json()
        assert (listed["key"], listed["value"]) == ("example.org", "be_b")
        assert listed["id"].startswith("0x")
        assert routes(vip, port) == {"a"}

        added = api.post(entries, json={"key": vip, "value": "be_b"})
        assert (added.status_code, added.json()) == (201, {"key": vip, "value": "be_b"})
        assert routes(vip, port) == {"b"}  # the Host header is vip:port
        error(api.post(entries, json={"key": vip, "value": "be_a"}), 409)

        replaced = api.put(
            f"{entries}/{vip}", json={"value": "be_a"}, params={"force_sync": "true"}
        )
        assert (replaced.status_code, replaced.json()) == (200, {"key": vip, "value": "be_a"})
        assert routes(vip, port) == {"a"}
        assert hosts.read_text() == f"example.org be_b\n{vip} be_a\n"
        assert api.get(f"{entries}/{vip}").json() == {"key": vip, "value": "be_a"}

        assert api.delete(f"{entries}/{vip}").status_code == 204
        error(api.delete(f"{entries}/{vip}"), 404)
        error(api.put(f"{entries}/{vip}", json={"value": "be_b"}), 404)
        assert [e["key"] for e in api.get(entries).json()] == ["example.org"]
        error(api.get(emu.url + "/v3/services/haproxy/runtime/maps/nope/entries"), 404)
        assert emu.haproxy.processes().reloads == reloads and emu.version == 1


def test_stored_map_files_are_uploaded_listed_and_deleted_once_unused(
    emulator: DataplaneEmulator, api: requests.Session, backend: Callable[[str], Backend]
) -> None:
    storage = emulator.url + "/v3/services/haproxy/storage/maps"
    site = Site(emulator)
    uploaded = api.post(storage, files={"file_upload": ("hosts", b"example.org be_b\n")})
    path = emulator.maps_dir / "hosts.map"  # `.map` appended, in the API's maps_dir
    assert (uploaded.status_code, uploaded.json()) == (
        201,
        {
            "description": "managed but not loaded map file (no runtime ID)",
            "file": str(path),
            "size": 17,
            "storage_name": "hosts.map",
        },
    )
    assert path.read_text() == "example.org be_b\n"
    again = api.post(storage, files={"file_upload": ("hosts.map", b"other\n")})
    assert error(again, 409) == f"file {path} already exists"
    assert api.get(storage).json() == [
        {"description": "managed map file", "file": str(path), "storage_name": "hosts.map"}
    ]
    raw = api.get(f"{storage}/hosts.map")
    assert (raw.status_code, raw.headers["Content-Type"], raw.content) == (
        200,
        "application/octet-stream",
        b"example.org be_b\n",
    )
    untyped = api.post(storage, data=b"x", headers={"Content-Type": "text/plain"})
    error(untyped, 415)

    # A config that names it: deleting it is refused while it does, and it routes.
    named = site.config(backend("a")).replace(
        "    default_backend web\n",
        f"    use_backend %[src,map({path},web)]\n    default_backend web\n",
    )
    load(api, emulator, named)
    assert site.answers() == {"a"}
    refused = error(api.delete(f"{storage}/hosts.map"), 409)
    assert refused.startswith(f"rejecting attempt to delete file {path} referenced in haproxy")
    load(api, emulator, site.config(backend("a"), extra=f"# no longer uses {path}\n"))
    assert api.delete(f"{storage}/hosts.map").status_code == 204
    assert not path.exists()
    error(api.delete(f"{storage}/hosts.map"), 404)
    error(api.get(f"{storage}/hosts.map"), 404)
    error(api.put(f"{storage}/hosts.map", data=b"x", headers=TEXT), 405)


def test_injected_faults_answer_instead_and_every_request_is_recorded(
    emulator: DataplaneEmulator, api: requests.Session
) -> None:
    emulator.fail_next(500, "injected", path_prefix=RAW)
    assert error(api.get(emulator.url + RAW), 500) == "injected"
    assert api.get(emulator.url + RAW).status_code == 200
    emulator.fail_next(409, "another writer won", method="POST")
    text = emulator.config_text()
    assert error(post_raw(api, emulator, text, version=1, skip_reload=True), 409)
    assert emulator.version == 1  # the fault did nothing else
    written = post_raw(api, emulator, text, version=1, skip_reload=True)
    assert (written.status_code, emulator.version) == (201, 2)
    requests.get(emulator.url + VERSION)

    recorded = [(r.method, r.path, r.status) for r in emulator.requests]
    assert recorded == [
        ("GET", RAW, 500),
        ("GET", RAW, 200),
        ("POST", RAW, 409),
        ("POST", RAW, 201),
        ("GET", VERSION, 401),
    ]
    assert emulator.requests[3].query == {"version": "1", "skip_reload": "true"}


def test_protocol_errors_are_answered_as_dataplaneapi(
    emulator: DataplaneEmulator, api: requests.Session
) -> None:
    assert error(api.get(emulator.url + "/v3/nope"), 404) == "path /v3/nope was not found"
    not_allowed = api.delete(emulator.url + VERSION)
    error(not_allowed, 405)
    assert not_allowed.headers["Allow"] == "GET"
    text = emulator.config_text()
    untyped = api.post(emulator.url + RAW, params={"version": "1"}, data=text)
    assert error(untyped, 415) == 'header Content-Type has unexpected value ""'
    one_line = post_raw(api, emulator, "global", version=1)
    assert error(one_line, 400) == "invalid configuration: no newline character found"
    assert "boolean" in error(post_raw(api, emulator, text, version=1, force_reload="yes"), 400)
    error(api.get(f"{emulator.url}{RELOADS}/latest"), 400)
    missing = api.get(f"{emulator.url}{RELOADS}/2020-01-01-99")
    assert error(missing, 404) == "Reload with ID 2020-01-01-99 does not exist"
    error(api.get(emulator.url + "/v3/info", headers={"Accept": "application/xml"}), 406)

    validated = post_raw(api, emulator, text + "backend b\n", only_validate=True)
    assert (validated.status_code, validated.text) == (202, text)
    error(post_raw(api, emulator, text + "bogus\n", only_validate=True), 400)
    assert emulator.version == 1

    emulator.haproxy.stop()
    assert api.get(emulator.url + "/v3/health").json() == {"haproxy": "down"}
