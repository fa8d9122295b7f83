"""The VRRP configuration of the pool: checked by Debian's keepalived itself (`keepalived -t`),
kept up to date by the publisher, which reloads a real process with SIGHUP."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kube2haproxy import keepalived
from kube2haproxy.errors import EnvironmentProblem, KeepalivedError
from kube2haproxy.publish import Publisher
from kube2haproxy.settings import PublishSettings
from testkit.builders import service
from tests.live import wait_for
from tests.pipeline import run

VIPS = ["10.200.0.9", "10.200.0.10", "10.96.0.1", "fd00:200::5", "fd00:200::1"]


@pytest.fixture(scope="session")
def keepalived_bin() -> str:
    """Missing is a failure: scripts/install installs it (Debian's keepalived)."""
    path = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")
    assert path, "keepalived is not installed: run scripts/install (apt-get install keepalived)"
    return path


@pytest.fixture(scope="session")
def interface() -> str:
    """A non-loopback interface of this machine: keepalived refuses VRRP on lo, and one that
    does not exist."""
    for path in sorted(Path("/sys/class/net").iterdir()):
        if path.name != "lo" and (path / "type").read_text().strip() == "1":  # ARPHRD_ETHER
            return path.name
    pytest.skip("this machine has no Ethernet interface for keepalived to check against")


def keepalived_check(binary: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    return subprocess.run(
        [binary, "-t", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )


def test_keepalived_accepts_the_config(keepalived_bin, interface, tmp_path):
    vrrp = keepalived.Vrrp(interface, 51, 150, "pool-a", "s3cr3t")
    text = keepalived.render(VIPS, vrrp)
    result = keepalived_check(keepalived_bin, text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # One instance per family, each advertising a link-local address derived from its router
    # id; every VIP excluded from the adverts, in address order.
    assert text.count("vrrp_instance") == 2
    assert "virtual_router_id 51\n    priority 150\n    advert_int 1\n    authentication" in text
    assert "virtual_router_id 52" in text
    excluded = "    }\n    virtual_ipaddress_excluded {\n"
    assert (
        f"        169.254.51.1/32 dev {interface}\n{excluded}"
        f"        10.96.0.1/32 dev {interface}\n        10.200.0.9/32 dev {interface}\n"
        f"        10.200.0.10/32 dev {interface}\n    }}\n"
    ) in text
    assert (
        f"        fe80::200:5eff:fe00:234/64 dev {interface}\n{excluded}"
        f"        fd00:200::1/128 dev {interface}\n        fd00:200::5/128 dev {interface}\n"
    ) in text
    assert text.count("auth_pass s3cr3t") == 1  # VRRPv3 (IPv6) has no authentication


def test_keepalived_would_refuse_a_broken_config(keepalived_bin, interface, tmp_path):
    """The check above can fail: keepalived does reject what is wrong."""
    text = keepalived.render(VIPS, keepalived.Vrrp(interface, 51, 100, "pool-a"))
    result = keepalived_check(keepalived_bin, text.replace(interface, "nosuch0"), tmp_path)
    assert result.returncode != 0


def test_no_vips_is_still_a_valid_config(keepalived_bin, interface, tmp_path):
    text = keepalived.render([], keepalived.Vrrp(interface, 51, 100, "pool-a"))
    assert "vrrp_instance" not in text
    assert keepalived_check(keepalived_bin, text, tmp_path).returncode == 0


def test_many_vips_fit(keepalived_bin, interface, tmp_path):
    many = [f"10.200.{i // 250}.{i % 250 + 1}" for i in range(5000)]
    text = keepalived.render(many, keepalived.Vrrp(interface, 51, 100, "pool-a"))
    result = keepalived_check(keepalived_bin, text, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interface", "eth0\n}\nvrrp_script x {"),
        ("interface", "eth 0"),
        ("interface", "eth0/1"),
        ("interface", "a-very-long-interface-name"),
        ("interface", ".."),
        ("interface", ""),
        ("router_id", 0),
        ("router_id", 255),  # the IPv6 instance would be 256
        ("priority", 0),
        ("priority", 255),  # 255 is reserved for the address owner
        ("password", "123456789"),  # VRRPv2 PASS is 8 characters at most
        ("password", "pw}\n"),
        ("password", "pass word"),
        ("password", ""),
        ("host", "host\nname"),
    ],
)
def test_every_value_is_checked_against_its_grammar(field, value):
    values = {
        "interface": "eth0",
        "router_id": 51,
        "priority": 100,
        "host": "pool-a",
        "password": "ok",
        field: value,
    }
    with pytest.raises(KeepalivedError):
        keepalived.render(["10.0.0.1"], keepalived.Vrrp(**values))


# The publisher: the file follows the VIP set, keepalived is told.

HUP_RECORDER = """
import signal, sys, time
count = 0
def hup(*_):
    global count
    count += 1
    print(count, flush=True)
signal.signal(signal.SIGHUP, hup)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def hups(process: subprocess.Popen[bytes], expected: int) -> None:
    """Wait until the process reports `expected` SIGHUPs in all (and no more)."""
    assert process.stdout is not None
    seen = 0
    deadline = time.monotonic() + 10
    while seen < expected:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, remaining))
        if not ready:
            break  # no SIGHUP reported in time
        seen = int(process.stdout.readline())
    assert seen == expected
    # No more: a signal is sent before publish() returns, and reported within milliseconds.
    more, _, _ = select.select([process.stdout], [], [], 0.3)
    assert not more, f"more than {expected} SIGHUPs: {process.stdout.readline()!r}"


@pytest.fixture
def fake_keepalived(tmp_path):
    with subprocess.Popen(
        # Unbuffered: readline() reads byte by byte, so select() sees every line not yet read.
        [sys.executable, "-c", HUP_RECORDER],
        stdout=subprocess.PIPE,
        bufsize=0,
    ) as process:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        pidfile = tmp_path / "keepalived.pid"
        pidfile.write_text(f"{process.pid}\n")
        yield process, pidfile
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_the_publisher_rewrites_and_reloads_only_when_the_vips_change(
    tmp_path, fake_keepalived, keepalived_bin, interface
):
    process, pidfile = fake_keepalived
    password = tmp_path / "vrrp-password"
    password.write_text("s3cr3t\n")
    config = tmp_path / "keepalived.conf"
    publisher = Publisher(
        PublishSettings(
            keepalived_config=str(config),
            keepalived_interface=interface,
            keepalived_priority=120,
            keepalived_password_file=str(password),
            keepalived_pidfile=str(pidfile),
        )
    )
    one = run(service("a", cluster_ips=["10.96.0.1"], externalIPs=["192.0.2.1"])).model
    publisher.publish(one)
    hups(process, 1)
    text = config.read_text()
    assert "10.96.0.1/32" in text
    # Never an external IP: a Service's author could name the gateway's address.
    assert "192.0.2.1" not in text
    assert "auth_pass s3cr3t" in text
    assert config.stat().st_mode & 0o777 == 0o600  # it holds the password
    assert keepalived_check(keepalived_bin, text, tmp_path).returncode == 0

    publisher.publish(run(service("a", cluster_ips=["10.96.0.1"], externalIPs=["192.0.2.1"])).model)
    two = run(
        service("a", cluster_ips=["10.96.0.1"], externalIPs=["192.0.2.1"]),
        service("b", cluster_ips=["10.96.0.2"]),
    ).model
    publisher.publish(two)
    hups(process, 2)  # the unchanged model sent none
    assert "10.96.0.2/32" in config.read_text()


def test_a_restarted_publisher_does_not_reload_for_an_identical_file(tmp_path, fake_keepalived):
    process, pidfile = fake_keepalived
    settings = PublishSettings(
        keepalived_config=str(tmp_path / "keepalived.conf"),
        keepalived_interface="eth0",
        keepalived_pidfile=str(pidfile),
    )
    model = run(service("a")).model
    Publisher(settings).publish(model)
    Publisher(settings).publish(model)
    Publisher(settings).publish(run(service("b", cluster_ips=["10.96.0.99"])).model)
    hups(process, 2)


def test_a_missing_keepalived_is_a_warning_not_a_failure(tmp_path, caplog):
    config = tmp_path / "keepalived.conf"
    publisher = Publisher(
        PublishSettings(
            keepalived_config=str(config),
            keepalived_interface="eth0",
            keepalived_pidfile=str(tmp_path / "none.pid"),
        )
    )
    publisher.publish(run(service("a")).model)
    assert "10.96.0.10/32" in config.read_text()
    assert "keepalived was not reloaded" in caplog.text


def test_a_reload_that_failed_is_sent_with_the_next_publish(tmp_path, fake_keepalived):
    process, pidfile = fake_keepalived
    waiting = tmp_path / "later.pid"
    settings = PublishSettings(
        keepalived_config=str(tmp_path / "keepalived.conf"),
        keepalived_interface="eth0",
        keepalived_pidfile=str(waiting),
    )
    publisher = Publisher(settings)
    model = run(service("a")).model
    publisher.publish(model)  # keepalived has not written its pid file yet
    waiting.write_text(pidfile.read_text())
    publisher.publish(model)  # the same VIPs, but the reload is still owed
    hups(process, 1)
    publisher.publish(model)
    publisher.publish(run(service("b", cluster_ips=["10.96.0.99"])).model)
    hups(process, 2)


def test_no_signal_when_keepalived_reloads_itself(tmp_path, caplog):
    config = tmp_path / "keepalived.conf"
    settings = PublishSettings(
        keepalived_config=str(config), keepalived_interface="eth0", keepalived_pidfile="none"
    )
    Publisher(settings).publish(run(service("a")).model)
    assert "10.96.0.10/32" in config.read_text()
    assert "not reloaded" not in caplog.text
    assert not (Path.cwd() / "none").exists()


@pytest.mark.parametrize("content", ["toolongpassword\n", "pass word\n", "a}\n"])
def test_a_bad_password_file_stops_the_start(tmp_path, content):
    password = tmp_path / "vrrp-password"
    password.write_text(content)
    settings = PublishSettings(
        keepalived_config=str(tmp_path / "k.conf"),
        keepalived_interface="eth0",
        keepalived_password_file=str(password),
    )
    with pytest.raises(EnvironmentProblem) as raised:
        Publisher(settings)
    assert content.strip() not in str(raised.value), "the password is never echoed"


# The real thing: keepalived in network namespaces of its own, two hosts on one link. It takes
# the VIPs, follows the publisher's changes on SIGHUP, and fails over.


@dataclass
class Host:
    netns: str
    interface: str
    tmp: Path
    process: subprocess.Popen[str] | None = None

    def addresses(self) -> set[str]:
        out = subprocess.run(
            ["ip", "-n", self.netns, "-o", "addr", "show", "dev", self.interface],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()}

    def publisher(self, priority: int) -> Publisher:
        return Publisher(
            PublishSettings(
                keepalived_config=str(self.tmp / "keepalived.conf"),
                keepalived_interface=self.interface,
                keepalived_priority=priority,
                keepalived_pidfile=str(self.tmp / "keepalived.pid"),
            )
        )

    def start(self, keepalived_bin: str) -> None:
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                keepalived_bin,
                "--dont-fork",
                "--log-console",
                "--no-syslog",
                "--vrrp",
                "--use-file",
                str(self.tmp / "keepalived.conf"),
                "--pid",
                str(self.tmp / "keepalived.pid"),
                "--vrrp_pid",
                str(self.tmp / "vrrp.pid"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(self) -> str:
        if self.process is None:
            return ""
        self.process.terminate()
        output, _ = self.process.communicate(timeout=20)
        self.process = None
        return output


@pytest.fixture
def link(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    """Two network namespaces joined by a veth pair, 192.0.2.1/24 and 192.0.2.2/24 (root)."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is not installed")
    names = (f"k2h-a-{os.getpid()}", f"k2h-b-{os.getpid()}")
    made = []
    try:
        for name in names:
            result = subprocess.run(
                ["ip", "netns", "add", name], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {result.stderr.strip()}")
            made.append(name)
        a, b = names
        commands = [
            ["ip", "link", "add", "k2ha", "netns", a, "type", "veth", "peer", "k2hb", "netns", b],
            ["ip", "-n", a, "addr", "add", "192.0.2.1/24", "dev", "k2ha"],
            ["ip", "-n", b, "addr", "add", "192.0.2.2/24", "dev", "k2hb"],
            ["ip", "-n", a, "link", "set", "k2ha", "up"],
            ["ip", "-n", b, "link", "set", "k2hb", "up"],
        ]
        for command in commands:
            subprocess.run(command, check=True)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        hosts = (Host(a, "k2ha", tmp_path / "a"), Host(b, "k2hb", tmp_path / "b"))
        yield hosts
        for host in hosts:
            host.stop()
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_keepalived_takes_the_vips_and_follows_changes(keepalived_bin, link):
    host, _ = link
    publisher = host.publisher(100)
    publisher.publish(run(service("a", cluster_ips=["10.96.0.1"]), service("b")).model)
    host.start(keepalived_bin)
    # Alone on its link, it becomes master after the master-down interval (~3 s).
    wait_for(
        lambda: {"10.96.0.1", "10.96.0.10"} <= host.addresses(),
        timeout=20,
        what="keepalived holding the VIPs",
    )
    wait_for((host.tmp / "keepalived.pid").exists, what="keepalived's pid file")
    publisher.publish(
        run(service("a", cluster_ips=["10.96.0.1"]), service("c", cluster_ips=["10.96.0.30"])).model
    )
    wait_for(
        lambda: "10.96.0.30" in host.addresses() and "10.96.0.10" not in host.addresses(),
        timeout=20,
        what="keepalived following the new VIP set",
    )
    assert "10.96.0.1" in host.addresses()
    assert "Entering MASTER STATE" in host.stop()


def test_one_master_even_while_the_hosts_vip_sets_differ_and_failover(keepalived_bin, link):
    """One host has reloaded with a new service, the other not yet: adverts must still agree,
    or the backup would make itself master too. Then the master goes away: the backup takes
    every VIP."""
    a, b = link
    a.publisher(150).publish(
        run(service("x", cluster_ips=["10.96.0.5"]), service("y", cluster_ips=["10.96.0.9"])).model
    )
    b.publisher(100).publish(run(service("y", cluster_ips=["10.96.0.9"])).model)
    a.start(keepalived_bin)
    b.start(keepalived_bin)
    wait_for(lambda: {"10.96.0.5", "10.96.0.9"} <= a.addresses(), timeout=20, what="a master")
    time.sleep(4)  # longer than the master-down interval: b had every chance to take over
    assert "10.96.0.9" not in b.addresses()
    assert "Entering MASTER STATE" in a.stop()
    wait_for(lambda: "10.96.0.9" in b.addresses(), timeout=20, what="failover to b")
    assert b.stop().count("Entering MASTER STATE") == 1  # once: after a left
