"""HAProxy versions: what each says, recorded from the real binaries (2.6.12 from Debian
bookworm; 3.0.11, 3.2.0, 3.3.0 and 3.4.0 built from their sources), and how the controller
reads it: the version itself, the capabilities derived from it, the replies of `set server`
and of the master's `reload`. The master CLI is served here by a real UNIX socket that answers
as each version answered."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kube2haproxy.appliers.master import MasterCLI, parse_processes
from kube2haproxy.appliers.runtime import unexpected_reply
from kube2haproxy.capabilities import Version, capabilities, parse_version
from kube2haproxy.errors import ConfigRefused, HAProxyUnavailable, UnsupportedVersion
from kube2haproxy.linestate import ServerStatus

# `haproxy -vv`'s first line and the master CLI's `show version`, as each version printed them.
VERSIONS = {
    "2.6.12": (
        "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/",
        "2.6.12-1+deb12u4\n\n",
    ),
    "3.0.11": (
        "HAProxy version 3.0.11-9e587df 2025/06/02 - https://haproxy.org/",
        "3.0.11-9e587df\n\n",
    ),
    "3.2.0": (
        "HAProxy version 3.2.0-e134140d2 2025/05/28 - https://haproxy.org/",
        "3.2.0-e134140d2\n\n",
    ),
    "3.3.0": (
        "HAProxy version 3.3.0-7832fb21f 2025/11/26 - https://haproxy.org/",
        "3.3.0-7832fb21f\n\n",
    ),
    "3.4.0": (
        "HAProxy version 3.4.0-64a335366 2026/06/03 - https://haproxy.org/",
        "3.4.0-64a335366\n\n",
    ),
}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_version_is_read_from_either_form(version):
    vv, show = VERSIONS[version]
    from_vv, from_cli = parse_version(vv), parse_version(show)
    assert from_vv == from_cli
    assert str(from_vv) == show.strip()
    assert (from_vv.major, from_vv.minor, from_vv.patch) == tuple(map(int, version.split(".")))


@pytest.mark.parametrize(
    ("version", "reply", "busy", "early", "changed_only", "backends", "delete", "root"),
    [
        ("2.6.12", False, False, False, False, False, False, False),
        ("2.7.0", True, False, False, False, False, False, False),  # `reload` answers Success=
        ("2.9.0", True, False, False, False, False, False, False),
        ("3.0.11", True, False, False, True, False, True, False),  # set server: what changed
        ("3.1.0", True, True, True, True, False, True, False),  # busy reply; listed early
        ("3.2.0", True, True, True, True, False, True, False),
        ("3.3.0", True, True, True, True, False, True, True),  # warns about root workers
        ("3.4.0", True, True, True, True, True, True, True),  # add backend
    ],
)
def test_capabilities_follow_the_version(
    version, reply, busy, early, changed_only, backends, delete, root
):
    found = capabilities(parse_version(version))
    assert (
        found.reload_reply,
        found.reload_busy_reply,
        found.workers_listed_early,
        found.addr_reply_changed_only,
        found.dynamic_backends,
        found.safe_server_delete,
        found.warns_as_root,
    ) == (reply, busy, early, changed_only, backends, delete, root)


@pytest.mark.parametrize("text", ["2.5.14", "HAProxy version 1.8.30 2021/04/12", "2.4.22-f8e3218"])
def test_a_version_before_26_is_refused(text):
    with pytest.raises(UnsupportedVersion, match=r"needs 2\.6\.0 or newer"):
        capabilities(parse_version(text))


def test_something_that_is_no_version_is_refused():
    with pytest.raises(ValueError, match="not an HAProxy version"):
        parse_version("Unknown command\n")


# --- set server replies ----------------------------------------------------------------------

CMD_BOTH = "set server web/s2 addr 127.0.0.5 port 8080"
CMD_IP = "set server web/s2 addr 127.0.0.6 port 8080"
CMD_PORT = "set server web/s2 addr 127.0.0.6 port 9090"
CMD_NONE = CMD_PORT
# What each version answered, in the order above (IP and port, IP only, port only, nothing).
ADDR_REPLIES = {
    "2.6.12": (
        "IP changed from '127.0.0.1' to '127.0.0.5', port changed from '2' to '8080' by 'stats "
        "socket command'",
        "IP changed from '127.0.0.5' to '127.0.0.6', no need to change the port by 'stats socket "
        "command'",
        "no need to change the addr, port changed from '8080' to '9090' by 'stats socket command'",
        "no need to change the addr, no need to change the port by 'stats socket command'",
    ),
    **dict.fromkeys(
        ("3.0.11", "3.2.0", "3.3.0", "3.4.0"),
        (
            "IP changed from '127.0.0.1' to '127.0.0.5', port changed from '2' to '8080' by "
            "'stats socket command'",
            "IP changed from '127.0.0.5' to '127.0.0.6' by 'stats socket command'",
            "port changed from '8080' to '9090' by 'stats socket command'",
            "nothing changed",
        ),
    ),
}
ERROR_REPLIES = {
    "2.6.12": ("No such server.", "Invalid addr '999.1.1.1' by 'stats socket command'"),
    "3.4.0": ("No such server.", "Invalid addr '999.1.1.1'"),
}


@pytest.mark.parametrize("version", ADDR_REPLIES)
def test_every_success_reply_of_each_version_is_understood(version):
    caps = capabilities(parse_version(version))
    for command, reply in zip(
        (CMD_BOTH, CMD_IP, CMD_PORT, CMD_NONE), ADDR_REPLIES[version], strict=True
    ):
        assert unexpected_reply(command, reply, caps) is None, (command, reply)
    assert unexpected_reply("set server web/s1 state ready", "", caps) is None


@pytest.mark.parametrize("version", ADDR_REPLIES)
def test_the_other_versions_replies_and_errors_fall_back_to_a_reload(version):
    caps = capabilities(parse_version(version))
    other = "3.4.0" if version == "2.6.12" else "2.6.12"
    # The two forms differ for the changes that leave one part unchanged.
    for command, reply in zip((CMD_IP, CMD_PORT, CMD_NONE), ADDR_REPLIES[other][1:], strict=True):
        assert unexpected_reply(command, reply, caps) is not None, (command, reply)
    for reply in ERROR_REPLIES.get(version, ERROR_REPLIES["3.4.0"]):
        assert unexpected_reply(CMD_BOTH, reply, caps) is not None
    assert unexpected_reply("set server web/nope state ready", "No such server.", caps)
    # A reply naming another address or port than asked is not a success either.
    wrong = ADDR_REPLIES[version][0].replace("'8080'", "'8081'")
    assert "HAProxy set the port '8081'" in (unexpected_reply(CMD_BOTH, wrong, caps) or "")


# --- the master's reload, as each version answers it -------------------------------------------

SHOW_PROC = (
    "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
    "{master}           master          {reloads} [failed: {failed}]   0d00h00m03s"
    "     3.2.0-e134140d2\n"
    "# workers\n"
    "{worker}           worker          0               0d00h00m02s     3.2.0-e134140d2\n\n"
)
RELOAD_OK_32 = (
    "Success=1\n--\n[NOTICE]   (16314) : Initializing new worker (16319)\n[NOTICE]   (16314) : "
    "Loading success.\n\n"
)
RELOAD_REFUSED_32 = (
    "Success=0\n--\n[NOTICE]   (16314) : Initializing new worker (16324)\n[ALERT]    (16324) : "
    "Binding [/tmp/hx-3.2.0/haproxy.cfg:19] for frontend x: protocol tcpv4: cannot bind socket "
    "(Cannot assign requested address) for [192.0.2.1:1].\n[WARNING]  (16314) : Failed to load "
    "worker!\n\n"
)
RELOAD_BUSY_32 = "Success=0\n--\nAnother reload is still in progress.\n\n"


class FakeMaster:
    """A master CLI on a real UNIX socket, answering as a recorded version did: `show proc`
    lists the master and one worker (a new one after a successful reload), `@!<pid> show info`
    answers for the listed worker, `reload` answers `reload_reply`."""

    def __init__(self, path: Path, reload_reply: str) -> None:
        self.path = str(path)
        self.reload_reply = reload_reply
        self.worker, self.reloads, self.failed = 16316, 0, 0
        self.commands: list[str] = []
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(self.path)
        self._server.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with connection:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                command = data.decode().strip()
                self.commands.append(command)
                connection.sendall(self._answer(command).encode())

    def _answer(self, command: str) -> str:
        if command == "show proc":
            return SHOW_PROC.format(
                master=16314, reloads=self.reloads, failed=self.failed, worker=self.worker
            )
        if command == f"@!{self.worker} show info":
            return f"Name: HAProxy\nVersion: 3.2.0-e134140d2\nPid: {self.worker}\n\n"
        if command.startswith("@!"):
            return (
                f"Can't find the target PID matching the prefix '{command.split(maxsplit=1)[0]}'\n"
            )
        if command == "reload":
            self.reloads += 1
            if self.reload_reply.startswith("Success=1"):
                self.worker, self.failed = 16319, 0
            elif "Another reload" not in self.reload_reply:
                self.failed += 1
            return self.reload_reply
        return "Unknown command.\n"

    def close(self) -> None:
        self._server.close()


@contextmanager
def fake_master(tmp_path: Path, reply: str) -> Iterator[FakeMaster]:
    master = FakeMaster(tmp_path / "master.sock", reply)
    try:
        yield master
    finally:
        master.close()


CAPS_32 = capabilities(Version(3, 2, 0))


def test_a_successful_reload_is_confirmed_by_its_reply_and_the_new_worker(tmp_path):
    with fake_master(tmp_path, RELOAD_OK_32) as master:
        after = MasterCLI(master.path).reload(CAPS_32, timeout_s=5)
    assert after.current_worker == 16319
    # The new worker is asked only once the reload said it loaded (asking one that still
    # loads can leave a master CLI connection open for good on 3.x).
    asked = [c for c in master.commands if c.startswith("@!")]
    assert asked == ["@!16319 show info"]
    assert master.commands.index("reload") < master.commands.index("@!16319 show info")


def test_a_refused_reload_carries_haproxys_startup_log(tmp_path):
    with fake_master(tmp_path, RELOAD_REFUSED_32) as master, pytest.raises(ConfigRefused) as caught:
        MasterCLI(master.path).reload(CAPS_32, timeout_s=5)
    assert "cannot bind socket" in caught.value.output
    assert "Failed to load worker!" in caught.value.output
    assert not [c for c in master.commands if c.startswith("@!")]


def test_a_reload_while_another_loads_is_retried_later(tmp_path):
    with (
        fake_master(tmp_path, RELOAD_BUSY_32) as master,
        pytest.raises(HAProxyUnavailable, match="another reload is still loading"),
    ):
        MasterCLI(master.path).reload(CAPS_32, timeout_s=5)


def test_show_proc_of_each_version_is_read():
    """2.6 and 3.0 list a `# programs` section, 3.2 and later do not; after a refused reload
    3.2 and later list the worker that serves on under `# old workers`."""
    refused_34 = (
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
        "16434           master          2 [failed: 1]   0d00h00m07s     3.4.0-64a335366\n"
        "# workers\n# old workers\n"
        "16448           worker          1               0d00h00m07s     3.4.0-64a335366\n\n"
    )
    processes = parse_processes(refused_34)
    assert (processes.reloads, processes.failed, processes.current_worker) == (2, 1, None)
    assert processes.serving_worker == 16448
    with_programs_26 = (
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
        "16188           master          0 [failed: 0]   0d00h00m01s     2.6.12-1+deb12u4\n"
        "# workers\n"
        "16190           worker          0               0d00h00m01s     2.6.12-1+deb12u4\n"
        "# programs\n\n"
    )
    assert parse_processes(with_programs_26).current_worker == 16190


@pytest.mark.parametrize(
    ("addr", "port", "op", "admin", "weight", "state"),
    [
        ("127.0.0.1", 1, 0, 0x04, 1, "parked"),  # a free slot as loaded: `disabled`
        ("127.0.0.1", 1, 0, 0x05, 1, "parked"),  # ... and put in maintenance at runtime
        ("10.1.0.1", 8080, 0, 0x01, 1, "parked"),  # maintenance at runtime, endpoint kept
        ("10.1.0.1", 8080, 2, 0x04, 1, "ready"),  # a slot loaded disabled, readied: running
        ("10.1.0.1", 8080, 0, 0x04, 1, "ready"),  # ... whose health check fails: down, not parked
        ("10.1.0.1", 8080, 2, 0x00, 0, "drain"),  # loaded draining (`weight 0`)
        ("10.1.0.1", 8080, 2, 0x08, 1, "drain"),  # drained at runtime
        ("10.1.0.1", 8080, 2, 0x00, 1, "ready"),
    ],
)
def test_server_states_are_read_as_the_model_has_them(addr, port, op, admin, weight, state):
    """`show servers state` as each case prints it (srv_op_state, srv_admin_state bits,
    srv_uweight), read back as the model's line."""
    status = ServerStatus(addr, port, op, admin, weight)
    assert status.as_server("s1").state.value == state
