"""Both VIP modes and both frontend layouts with the real HAProxy and real traffic: the same cluster
routes the same way whether each service port has its own listening sockets or one socket per
port routes on the destination address; pool addresses are served and cluster IPs are not."""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube2haproxy.settings import RenderSettings, Settings, TimingSettings, TranslateSettings
from kube2haproxy.translate import addresses as vips
from testkit.backends import Backend, fleet, free_port, get, loopback_ip, responders, serves
from testkit.builders import service, slice_of
from tests.live import Traffic, wait_for
from tests.test_serve import serving

TIMING = TimingSettings(
    debounce_ms=20,
    max_delay_ms=200,
    runtime_debounce_ms=5,
    retry_interval_ms=300,
    drift_check_interval_ms=0,
)


def settings(layout: str = "per-service", **translate: str) -> Settings:
    return Settings(
        translate=TranslateSettings(allow_loopback_endpoints=True, **translate),  # type: ignore[arg-type]
        render=RenderSettings(frontend_layout=layout),
        timing=TIMING,
    )


def listening(port: int) -> set[str]:
    """The IPv4 addresses with a listening TCP socket on this port (from the kernel's table)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1])))
    return found


def refused(ip: str, port: int) -> bool:
    """No HTTP answer: the connection is refused, reset or closed without a response."""
    try:
        get(ip, port, timeout=3)
    except (OSError, http.client.HTTPException):
        return True
    return False


@pytest.fixture
def pods() -> Iterator[dict[str, Backend]]:
    with fleet(("web1", "web2", "api1", "guard1")) as made:
        yield {backend.name: backend for backend in made}


@pytest.mark.parametrize("layout", ["per-service", "per-port"])
def test_both_layouts_route_the_same(tmp_path, haproxy_bin, pods, layout):
    web, api, guarded, nobody = (loopback_ip() for _ in range(4))
    port = free_port("0.0.0.0")  # the per-port layout listens on every address
    other = free_port("0.0.0.0")
    with serving(tmp_path, haproxy_bin, settings(layout)) as (controller, source, supervisor):
        source.put(service("web", cluster_ips=[web], ports=[("http", port)]))
        source.put(slice_of("web", pods["web1"]))
        source.put(service("api", cluster_ips=[api], ports=[("http", port), ("alt", other)]))
        source.put(slice_of("api", pods["api1"], ports=("http", "alt")))
        source.put(
            service(
                "guarded",
                cluster_ips=[guarded],
                ports=[("http", port)],
                annotations={"kube2haproxy.io/source-ranges": "10.0.0.0/8"},
            )
        )
        source.put(slice_of("guarded", pods["guard1"]))
        source.synced()
        wait_for(controller.ready.is_set, timeout=20, what="the first config")

        assert responders(web, port, requests=10) == {"web1"}
        assert responders(api, port, requests=10) == {"api1"}
        assert responders(api, other, requests=10) == {"api1"}
        assert refused(guarded, port), "source-ranges must hold in every layout"
        assert refused(nobody, port), "an address no service uses reaches nothing"
        assert refused(web, other), "web does not listen on api's other port"

        sockets = listening(port)
        if layout == "per-port":
            assert sockets == {"0.0.0.0"}  # one socket for three services
        else:
            assert sockets == {web, api, guarded}

        # Endpoint churn still goes through the runtime API, without a reload.
        reloads = supervisor.master.processes().reloads
        with Traffic(web, port) as traffic:
            wait_for(lambda: traffic.ok > 10, what="traffic")
            updates = controller.runtime_updates
            source.put(slice_of("web", pods["web1"], pods["web2"]))
            wait_for(lambda: controller.runtime_updates > updates, what="the new endpoint")
            wait_for(lambda: traffic.seen.get("web2", 0) > 3, what="traffic to the new endpoint")
        assert traffic.failures == []
        assert supervisor.master.processes().reloads == reloads

        # A new service on a port already listened on: per-port routes it at runtime (a spare
        # backend and a map entry); per-service reloads (a socket for its VIP).
        late = loopback_ip()
        source.put(service("late", cluster_ips=[late], ports=[("http", port)]))
        source.put(slice_of("late", pods["api1"]))
        wait_for(lambda: not refused(late, port), timeout=20, what="the late service")
        assert responders(late, port, requests=5) == {"api1"}
        assert serves(web, port, {"web1", "web2"}) == {"web1", "web2"}
        reloaded = supervisor.master.processes().reloads - reloads
        if layout == "per-port":
            assert reloaded == 0, "a new service on a listened port needs no reload"
            assert listening(port) == {"0.0.0.0"}
            # The file is what a reload would load: the service's own backend in the map.
            wait_for(
                lambda: f"{late} default_late_http" in current_map(tmp_path, port),
                what="the config on disk to route the late service",
            )
            maps = list((tmp_path / "maps").glob(f"port-{port}-*.map"))
            assert len(maps) <= 2, "only the running file's map and its predecessor's are kept"
        else:
            assert reloaded == 1


def current_map(tmp_path: Path, port: int) -> list[str]:
    """The entries of the map the config file on disk names for a port."""
    text = (tmp_path / "haproxy.cfg").read_text()
    found = re.search(rf"port-{port}-[0-9a-f]+\.map", text)
    assert found is not None, text
    return (tmp_path / "maps" / found.group(0)).read_text().splitlines()


def test_pool_mode_serves_pool_addresses_and_not_cluster_ips(tmp_path, haproxy_bin, pods):
    pool = ipaddress.ip_network("127.77.0.0/24")
    cluster_ip, port = loopback_ip(), free_port("127.0.0.1")
    requested = "127.77.0.250"
    assert vips.preferred("default", "web", pool) != ipaddress.ip_address(requested)
    configured = settings(vip_mode="pool", vip_cidr=str(pool))
    with serving(tmp_path, haproxy_bin, configured) as (controller, source, _):
        source.put(service("web", cluster_ips=[cluster_ip], ports=[("http", port)]))
        source.put(slice_of("web", pods["web1"]))
        source.put(
            service(
                "api",
                cluster_ips=[loopback_ip()],
                ports=[("http", port)],
                annotations={"kube2haproxy.io/vip": requested},
            )
        )
        source.put(slice_of("api", pods["api1"]))
        source.synced()
        wait_for(controller.ready.is_set, timeout=20, what="the first config")

        address = str(vips.preferred("default", "web", pool))
        assert responders(address, port, requests=5) == {"web1"}
        assert responders(requested, port, requests=5) == {"api1"}
        assert refused(cluster_ip, port), "pool mode does not listen on cluster IPs"
        assert controller.applied_model is not None
        entries = {e.name: e.primary for e in controller.applied_model.services}
        assert entries == {"web": (address,), "api": (requested,)}


def test_an_unbindable_wildcard_port_leaves_the_others_serving(tmp_path, haproxy_bin, pods):
    """Per-port listens on every address: a port some other program holds on the wildcard
    address cannot be listened on; its services are reported and the rest are served."""
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))  # a port the kernel picks: held from the start, no race
    holder.listen()
    taken = holder.getsockname()[1]
    port = free_port("0.0.0.0")  # the per-port layout listens on every address
    try:
        with serving(tmp_path, haproxy_bin, settings("per-port")) as (controller, source, _):
            vip = loopback_ip()
            source.put(service("web", cluster_ips=[vip], ports=[("http", port), ("x", taken)]))
            source.put(slice_of("web", pods["web1"], ports=("http", "x")))
            source.synced()
            wait_for(controller.ready.is_set, timeout=20, what="the first config")
            assert responders(vip, port, requests=5) == {"web1"}
            assert controller.applied_model is not None
            binds = {b.port for f in controller.applied_model.frontends for b in f.binds}
            assert binds == {port}
    finally:
        holder.close()
