"""The HAProxy edge against the real binary: master CLI, confirmed reloads (and refused ones),
supervision (start, crash and restart, graceful stop), and the applier's guarantee that the file
on disk is always a config HAProxy accepted."""

from __future__ import annotations

import http.client
import logging
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kube2haproxy.appliers.cli_socket import unix_command, unix_lines
from kube2haproxy.appliers.master import MasterCLI, parse_processes
from kube2haproxy.appliers.master_cli import MasterCLIApplier
from kube2haproxy.appliers.runtime import RuntimeAPI, parse_servers_state
from kube2haproxy.appliers.supervisor import Supervisor, output_level
from kube2haproxy.errors import CheckError, ConfigRefused, EnvironmentProblem, HAProxyUnavailable
from testkit.backends import Backend, fleet, free_port, get, loopback_ip, routes
from tests.live import applier_for, capabilities_of, load, wait_for
from tests.live import haproxy_config as config
from tests.test_status import HEADER

SHOW_PROC = textwrap.dedent("""\
    #<PID>          <type>          <reloads>       <uptime>        <version>
    1200            master          3 [failed: 1]   0d00h00m05s     2.6.12-1+deb12u4
    # workers
    1302            worker          1               0d00h00m04s     2.6.12-1+deb12u4
    1310            worker          0               0d00h00m01s     2.6.12-1+deb12u4
    # old workers
    1250            worker          2               0d00h00m09s     2.6.12-1+deb12u4
    # programs

    """)


def test_parse_show_proc():
    processes = parse_processes(SHOW_PROC)
    assert (processes.master_pid, processes.reloads, processes.failed) == (1200, 3, 1)
    assert processes.workers == ((1302, 1), (1310, 0))
    assert processes.old_workers == ((1250, 2),)
    assert processes.current_worker == processes.serving_worker == 1310


def test_parse_rejects_something_else():
    with pytest.raises(HAProxyUnavailable, match="unexpected answer"):
        parse_processes("Unknown command\n")


@pytest.fixture
def world(tmp_path):
    vip = loopback_ip()
    with fleet("abc") as backends:
        yield tmp_path, vip, free_port(vip), backends


@pytest.fixture
def supervisor(tmp_path, haproxy_bin):
    made: list[Supervisor] = []

    def make(config: Path) -> Supervisor:
        sup = Supervisor(
            binary=haproxy_bin,
            config=str(config),
            master_socket=str(tmp_path / "master.sock"),
            restart_backoff_s=(0.2, 1.0),
        )
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop(grace_s=2)


def test_supervised_start_reload_and_graceful_stop(world, supervisor, haproxy_bin):
    tmp, vip, port, (a, b, _) = world
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(config(tmp, vip, port, [a]))
    sup = supervisor(cfg)
    sup.start(ready_timeout_s=10)
    assert get(vip, port) == "a"
    before = sup.master.processes()

    cfg.write_text(config(tmp, vip, port, [b]))
    after = sup.master.reload(capabilities_of(haproxy_bin), timeout_s=10)
    assert after.reloads == before.reloads + 1 and after.failed == 0
    assert after.current_worker not in {pid for pid, _ in before.workers}
    assert {get(vip, port) for _ in range(10)} == {"b"}

    pid = sup.pid
    sup.stop(grace_s=5)
    assert not sup.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_refused_reload_is_reported_and_the_old_worker_serves_on(world, supervisor, haproxy_bin):
    tmp, vip, port, (a, _, _) = world
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(config(tmp, vip, port, [a]))
    sup = supervisor(cfg)
    sup.start(ready_timeout_s=10)
    # Passes `haproxy -c`, but cannot start: the address belongs to no interface.
    cfg.write_text(config(tmp, vip, port, [a], extra="frontend x\n    bind 192.0.2.1:1\n"))
    with pytest.raises(ConfigRefused, match="refused the new config"):
        sup.master.reload(capabilities_of(haproxy_bin), timeout_s=10)
    assert get(vip, port) == "a"


def test_a_crashed_haproxy_is_restarted(world, supervisor):
    tmp, vip, port, (a, _, _) = world
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(config(tmp, vip, port, [a]))
    exits: list[int] = []
    sup = supervisor(cfg)
    sup._on_exit = exits.append
    sup.start(ready_timeout_s=10)
    first = sup.pid
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: sup.pid != first and sup.master.alive(), what="a restarted haproxy")
    wait_for(lambda: routes(vip, port, requests=1) == {"a"}, what="traffic after the restart")
    assert exits == [-signal.SIGKILL] and sup.restarts == 1


def test_start_failure_reports_haproxy_output(world, supervisor):
    tmp, vip, port, (a, _, _) = world
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(config(tmp, vip, port, [a]) + "frontend x\n    bind 192.0.2.1:1\n")
    with pytest.raises(ConfigRefused, match="exited with code 1 while starting") as caught:
        supervisor(cfg).start(ready_timeout_s=10)
    assert "cannot bind socket" in caught.value.output


def test_applier_never_leaves_a_refused_config_on_disk(world, supervisor, haproxy_bin):
    tmp, vip, port, (a, b, c) = world
    cfg = tmp / "haproxy.cfg"
    sup = supervisor(cfg)
    applier = applier_for(sup, binary=haproxy_bin, reload_timeout_s=10)
    good = config(tmp, vip, port, [a])
    assert load(applier, good).outcome == "started"
    assert load(applier, good).outcome == "unchanged"

    with pytest.raises(CheckError, match="rejected"):
        load(applier, good + "    bogus_keyword\n")
    assert cfg.read_text() == good
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp")]

    with pytest.raises(ConfigRefused):
        load(applier, good + "frontend x\n    bind 192.0.2.1:1\n")
    assert cfg.read_text() == good  # restored: a restart would load what works
    assert get(vip, port) == "a"

    better = config(tmp, vip, port, [b, c])
    assert load(applier, better).outcome == "reloaded"
    assert cfg.read_text() == better
    assert {get(vip, port) for _ in range(20)} == {"b", "c"}


def test_attached_applier_reads_what_haproxy_runs(world, supervisor, haproxy_bin):
    tmp, vip, port, (a, _, _) = world
    cfg = tmp / "haproxy.cfg"
    text = config(tmp, vip, port, [a])
    cfg.write_text(text)
    sup = supervisor(cfg)
    sup.start(ready_timeout_s=10)
    attached = MasterCLIApplier(
        config=cfg,
        maps_dir=tmp / "maps",
        binary=haproxy_bin,
        check_timeout_s=30,
        reload_timeout_s=10,
        master=MasterCLI(sup.master.path),
        runtime=RuntimeAPI(str(tmp / "admin.sock")),
        check_capabilities=capabilities_of(haproxy_bin),
    )
    reloads = sup.master.processes().reloads
    assert load(attached, text).outcome == "unchanged"  # a restarted controller: no reload
    assert sup.master.processes().reloads == reloads
    assert attached.healthy()


def test_unix_command_times_out_on_a_silent_peer(tmp_path):
    import socket

    path = str(tmp_path / "silent.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with pytest.raises(HAProxyUnavailable, match="timed out"):
            unix_command(path, "show proc", timeout_s=0.3, half_close=True)
    with pytest.raises(HAProxyUnavailable):
        unix_command(str(tmp_path / "absent.sock"), "show proc", timeout_s=0.3, half_close=True)


def _dump(lines: int) -> str:
    """A `show servers state` of `lines` lines over a few backends, every fifth line parked."""
    rows = [
        f"{3 + i // 16} be_{i // 16} {i % 16 + 1} s{i % 16 + 1} "
        + (
            "127.0.0.1 0 5 1 1 3 1 0 0 8 0 0 0 - 1 - 0 0 - - 0"
            if i % 5 == 4
            else f"10.1.{i // 250}.{i % 250 + 1} 2 0 1 1 3 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0"
        )
        for i in range(lines)
    ]
    return "1\n" + HEADER + "\n" + "\n".join(rows) + "\n\n"


def _serve_once(
    path: str, text: str, pieces: list[int], *, wait_s: float = 0.0
) -> threading.Thread:
    """A stats socket that answers one command with `text`, written in pieces of the given
    sizes (cycled; cutting lines anywhere), `wait_s` apart."""
    import socket

    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()

    def answer() -> None:
        with server, server.accept()[0] as conn:
            conn.recv(1024)
            data, start, n = text.encode(), 0, 0
            while start < len(data):
                size = pieces[n % len(pieces)]
                conn.sendall(data[start : start + size])
                start, n = start + size, n + 1
                time.sleep(wait_s)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_servers_state_is_read_and_parsed_as_it_arrives(tmp_path):
    """A dump of 160,000 lines is parsed as it arrives, line by line whatever the pieces the
    socket gives, calling `pause` every 256 lines (a drift check yields the CPU there); the
    result is the whole text's."""
    text = _dump(3000)  # 200 KB: several reads of the socket
    path = str(tmp_path / "admin.sock")
    thread = _serve_once(path, text, [65536, 7, 1, 40000, 13])
    paused = []
    states = RuntimeAPI(path).states(pause=lambda: paused.append(1))
    thread.join(5)
    assert states == parse_servers_state(text)
    assert len(states) == 3000 and len(paused) == 3002 // 256 + 1
    assert states[("be_0", "s5")].addr == "127.0.0.1" and states[("be_0", "s1")].port == 8080


def test_a_dump_that_keeps_coming_is_read_to_its_end(tmp_path):
    """The socket's timeout bounds each wait for HAProxy, not the whole reading: a dump that
    takes longer than it (160,000 lines read by a paced drift check) is not cut off."""
    text = _dump(2000)  # 120 KB, in ten pieces 50 ms apart: 0.5 s in all
    path = str(tmp_path / "admin.sock")
    thread = _serve_once(path, text, [12000], wait_s=0.05)
    lines = list(unix_lines(path, "show servers state", timeout_s=0.3))
    thread.join(5)
    assert lines == text[:-1].split("\n")  # the version, the header, the lines, the empty one
    import socket

    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(tmp_path / "silent.sock"))
        silent.listen()
        with pytest.raises(HAProxyUnavailable, match="timed out"):
            list(unix_lines(str(tmp_path / "silent.sock"), "show servers state", timeout_s=0.3))


def test_an_haproxy_left_running_is_adopted_not_doubled(world, supervisor, haproxy_bin):
    """A controller killed with SIGKILL leaves its HAProxy running (its own session); the next
    controller must take it over, not start a second master on the same ports."""
    tmp, vip, port, (a, b, _) = world
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(config(tmp, vip, port, [a]))
    first = supervisor(cfg)
    first.start(ready_timeout_s=10)
    orphan = first.pid
    first._stopping.set()  # the first controller "dies" without stopping its HAProxy

    second = supervisor(cfg)
    applier = applier_for(second, binary=haproxy_bin, reload_timeout_s=10)
    assert load(applier, config(tmp, vip, port, [b])).outcome == "adopted and reloaded"
    assert second.adopted and second.pid == orphan
    assert {get(vip, port) for _ in range(10)} == {"b"}  # reloaded, one master
    assert load(applier, config(tmp, vip, port, [a, b])).outcome == "reloaded"
    second.stop(grace_s=5)
    wait_for(lambda: not _alive(orphan), what="the adopted haproxy stopped")


def test_a_foreign_haproxy_on_our_socket_is_refused(world, supervisor, haproxy_bin):
    tmp, vip, port, (a, _, _) = world
    other = tmp / "other.cfg"
    other.write_text(config(tmp, vip, port, [a]))
    foreign = supervisor(other)
    foreign.start(ready_timeout_s=10)
    ours = supervisor(tmp / "haproxy.cfg")
    with pytest.raises(EnvironmentProblem, match="another command line"):
        ours.start(ready_timeout_s=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_an_apply_during_a_pending_restart_starts_one_master_only(world, supervisor, haproxy_bin):
    """HAProxy dies; while the supervisor waits out its restart backoff, an apply starts it.
    The supervisor must then watch that master, not start a second one beside it."""
    tmp, vip, port, (a, b, _) = world
    cfg = tmp / "haproxy.cfg"
    sup = Supervisor(
        binary=haproxy_bin,
        config=str(cfg),
        master_socket=str(tmp / "master.sock"),
        restart_backoff_s=(1.0, 1.0),
    )
    applier = applier_for(sup, binary=haproxy_bin, reload_timeout_s=10)
    try:
        load(applier, config(tmp, vip, port, [a]))
        assert sup.pid is not None
        os.kill(sup.pid, signal.SIGKILL)
        wait_for(lambda: not sup.running, what="the master gone")
        assert load(applier, config(tmp, vip, port, [b])).outcome == "started"
        time.sleep(1.5)  # the watcher's backoff ends
        masters = [p for p in _haproxy_masters() if str(tmp) in p[1]]
        assert len(masters) == 1, masters
        assert {get(vip, port) for _ in range(20)} == {"b"}
    finally:
        sup.stop(grace_s=2)
    assert [p for p in _haproxy_masters() if str(tmp) in p[1]] == []


def test_a_config_that_cannot_start_leaves_nothing_behind(world, supervisor, haproxy_bin):
    tmp, vip, port, (a, _, _) = world
    cfg = tmp / "haproxy.cfg"
    sup = supervisor(cfg)
    applier = applier_for(sup, binary=haproxy_bin, reload_timeout_s=10)
    unbindable = config(tmp, vip, port, [a]) + "frontend x\n    bind 192.0.2.1:1\n"
    with pytest.raises(ConfigRefused, match=r"haproxy\.cfg\.rejected") as caught:
        load(applier, unbindable)
    assert "cannot bind socket" in caught.value.output
    assert (tmp / "haproxy.cfg.rejected").read_text() == unbindable  # kept for the operator
    time.sleep(1.5)  # no restart loop on a config that cannot start
    assert not sup.running and [p for p in _haproxy_masters() if str(tmp) in p[1]] == []
    assert not cfg.exists()  # nothing HAProxy refused stays on disk
    assert load(applier, config(tmp, vip, port, [a])).outcome == "started"


def _haproxy_masters() -> list[tuple[int, str]]:
    """Running HAProxy masters (workers share the master's command line: they are the ones
    whose parent is another HAProxy)."""
    found: dict[int, tuple[int, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if " -W " in argv and "haproxy" in argv.split(" ", 1)[0] and stat[0] != "Z":
            found[int(proc.name)] = (int(stat[1]), argv)
    return [(pid, argv) for pid, (parent, argv) in found.items() if parent not in found]


@pytest.mark.parametrize(
    ("line", "level"),
    [
        # What HAProxy 2.6.12 printed for the runtime commands we send and a normal stop.
        (
            "[WARNING]  (24545) : Server b/s1 is going DOWN for maintenance. 0 active and 0 "
            "backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.",
            logging.INFO,
        ),
        (
            "[WARNING]  (24545) : Server b/s2 is UP/READY (leaving forced maintenance).",
            logging.INFO,
        ),
        (
            "[WARNING]  (24545) : Server b/s1 is UP/DRAIN (leaving forced maintenance).",
            logging.INFO,
        ),
        ("[WARNING]  (24545) : Server b/s1 remains in forced drain mode.", logging.INFO),
        ("[WARNING]  (24545) : Server b/s1 is UP (leaving forced drain).", logging.INFO),
        ("[WARNING]  (24542) : Exiting Master process...", logging.INFO),
        ("[WARNING]  (24542) : Current worker (24545) exited with code 0 (Exit)", logging.INFO),
        ("[WARNING]  (24542) : All workers exited. Exiting... (0)", logging.INFO),
        ("[NOTICE]   (24542) : Loading success.", logging.INFO),
        ("[WARNING]  (24545) : Proxy f stopped (cumulated conns: FE: 0, BE: 0).", logging.DEBUG),
        # What is worth a look stays where it was.
        ("[ALERT]    (24545) : backend 'b' has no server available!", logging.ERROR),
        (
            "[WARNING]  (24545) : Server b/s1 is DOWN, reason: Layer4 connection problem, info: "
            '"Connection refused", check duration: 0ms.',
            logging.WARNING,
        ),
        (
            "[WARNING]  (24542) : Current worker (24545) exited with code 139 (Segmentation fault)",
            logging.WARNING,
        ),
    ],
)
def test_haproxy_output_levels(line, level):
    assert output_level(line) == level


def test_a_reload_slower_than_any_socket_timeout_is_confirmed(world, supervisor, haproxy_bin):
    """From 2.7 the master answers `reload` once the new worker loaded: a config that takes
    longer than the master CLI's usual 5 s timeout (a Lua file that sleeps while it loads) is
    still confirmed as reloaded, within the reload timeout."""
    tmp, vip, port, (a, b, _) = world
    sup = supervisor(tmp / "haproxy.cfg")
    applier = applier_for(sup, binary=haproxy_bin, reload_timeout_s=60)
    assert load(applier, config(tmp, vip, port, [a])).outcome == "started"
    slow = tmp / "slow.lua"
    slow.write_text('os.execute("sleep 6")\n')
    text = config(tmp, vip, port, [b]).replace("global\n", f"global\n    lua-load {slow}\n", 1)
    report = load(applier, text)
    assert report.outcome == "reloaded"
    assert report.apply_s > 5
    assert {get(vip, port) for _ in range(10)} == {"b"}


def test_a_refused_reload_never_looks_ready_and_drops_no_open_connection(
    world, supervisor, haproxy_bin
):
    """A config that passes `haproxy -c` but cannot start: the applier reports it refused (not
    a worker that was merely listed), the worker that served goes on serving, and a client's
    open connection through it sees no error while HAProxy tries and fails."""
    tmp, vip, port, _ = world
    keepalive = Backend("k", keepalive=True)
    try:
        sup = supervisor(tmp / "haproxy.cfg")
        applier = applier_for(sup, binary=haproxy_bin, reload_timeout_s=30)
        good = config(tmp, vip, port, [keepalive])
        load(applier, good)
        serving = sup.master.processes().serving_worker
        connection = http.client.HTTPConnection(vip, port, timeout=5)
        failures: list[str] = []
        answered = 0
        stop = threading.Event()

        def client() -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    connection.request("GET", "/")
                    response = connection.getresponse()
                    assert response.read() == b"k"
                    answered += 1
                except (OSError, http.client.HTTPException, AssertionError) as exc:
                    failures.append(repr(exc))
                    return

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        try:
            wait_for(lambda: answered > 10, what="the open connection in use")
            with pytest.raises(ConfigRefused):
                load(applier, good + "frontend x\n    bind 192.0.2.1:1\n")
            seen = answered
            wait_for(lambda: answered > seen + 10, what="the connection still answered")
        finally:
            stop.set()
            thread.join(timeout=10)
            connection.close()
        assert failures == []
        assert sup.master.processes().serving_worker == serving
        assert (tmp / "haproxy.cfg").read_text() == good
    finally:
        keepalive.close()
