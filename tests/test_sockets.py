"""sockets: the kernel's tables of listening sockets and the descriptors of processes, read from
a /proc laid out as Linux lays it out (net/tcp, net/tcp6, <pid>/fd links). A real listener beside
a real HAProxy: tests/test_faults.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kube2haproxy import sockets

HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode"
)


def row(local: str, state: str, inode: int) -> str:
    return (
        f"   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000     0        "
        f"0 {inode} 1 0000000000000000 100 0 0 10 0"
    )


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """127.0.0.1:8080 (inode 111); 10.96.0.10:80 twice (222, HAProxy's, and 333, pid 200's);
    a connected socket (444); ::ffff:10.96.0.11:80 (555, HAProxy's) and [fd00::1]:443 (666)."""
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(
        "\n".join(
            [
                HEADER,
                row("0100007F:1F90", "0A", 111),
                row("0A00600A:0050", "0A", 222),
                row("0A00600A:0050", "0A", 333),
                row("0A00600A:0050", "01", 444),
            ]
        )
        + "\n"
    )
    (root / "net" / "tcp6").write_text(
        "\n".join(
            [
                HEADER,
                row("0000000000000000FFFF00000B00600A:0050", "0A", 555),
                row("000000FD000000000000000001000000:01BB", "0A", 666),
            ]
        )
        + "\n"
    )
    for pid, links in {
        100: {3: "socket:[222]", 4: "socket:[555]"},
        200: {7: "socket:[333]"},
    }.items():
        fd = root / str(pid) / "fd"
        fd.mkdir(parents=True)
        for number, target in links.items():
            os.symlink(target, fd / str(number))
        os.symlink("pipe:[9]", fd / "99")
    (root / "self").mkdir()  # not a pid
    return root


def test_listening_sockets_are_read_from_both_tables(proc: Path) -> None:
    assert sockets.listening(proc) == {
        ("127.0.0.1", 8080): [111],
        ("10.96.0.10", 80): [222, 333],
        ("10.96.0.11", 80): [555],
        ("fd00::1", 443): [666],
    }


def test_a_socket_of_another_process_is_named_with_its_pid(proc: Path) -> None:
    wanted = {("10.96.0.10", 80), ("10.96.0.11", 80), ("127.0.0.1", 8080)}
    assert sockets.shared(wanted, own_pids={100}, proc=proc) == {
        ("10.96.0.10", 80): "another process listens there too (pid 200)",
        # held by no process this /proc shows (another pid namespace's)
        ("127.0.0.1", 8080): "another process listens there too (socket inode 111)",
    }
    assert sockets.shared({("10.96.0.11", 80)}, own_pids={100}, proc=proc) == {}


def test_without_haproxy_s_processes_a_second_socket_is_reported(proc: Path) -> None:
    wanted = {("10.96.0.10", 80), ("10.96.0.11", 80)}
    assert sockets.shared(wanted, own_pids=None, proc=proc) == {
        ("10.96.0.10", 80): "2 sockets listen there (HAProxy holds one)"
    }


def test_descriptors_are_read_by_process(proc: Path) -> None:
    assert sockets.socket_inodes({100}, proc) == {222, 555}
    assert sockets.socket_inodes({100, 404}, proc) is None  # a process gone
    assert sockets.holders({333, 555}, proc) == {333: 200, 555: 100}
    assert sockets.holders(set(), proc) == {}


@pytest.mark.parametrize(
    "text",
    ["0x00007F:0050", "+100007F:0050", "0100_07F:0050", " 100007F:0050", "0100007:0050", ""],
)
def test_an_address_the_kernel_would_not_print_is_no_address(text: str) -> None:
    assert sockets._address(text) is None
