"""sockets: what this host can listen on, and who else listens where HAProxy listens.

Before a reload adds a socket, it is test-bound as HAProxy would bind it (`bind_problem`): HAProxy
2.6 pauses every listener for about 2 s on a reload it refuses, so a bad address is better found
first.

HAProxy binds with SO_REUSEPORT, so the kernel lets any process of the same user listen on the
same address:port too (another HAProxy, a forgotten test server) and then silently splits new
connections between the sockets; a process listening on a VIP:port that the per-port layout
serves through a wildcard takes that VIP's connections outright. Neither shows in HAProxy.
This reads the kernel's table of listening TCP sockets (/proc/net/tcp, /proc/net/tcp6) and
the descriptors of HAProxy's processes (/proc/<pid>/fd) to tell our sockets from others.

Limits (docs/serving.md): only sockets of this network namespace are visible; a socket is attributed
to a process only where /proc shows that process's descriptors (same user or root, same pid
namespace). Where HAProxy's own processes are not visible (attached to an HAProxy in another
container), an address with more than one listening socket is reported instead.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

LISTEN = "0A"  # TCP_LISTEN in the st column

Address = tuple[str, int]


def listening(proc: Path = Path("/proc")) -> dict[Address, list[int]]:
    """Every listening TCP socket of this network namespace: (ip, port) -> socket inodes."""
    out: dict[Address, list[int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            address = _address(fields[1])
            if address is not None:
                out.setdefault(address, []).append(int(fields[9]))
    return out


def _address(text: str) -> Address | None:
    """`0100007F:1F90` -> ("127.0.0.1", 8080): the kernel prints each 32-bit word of the
    address in host byte order (little-endian here) and the port in hex."""
    raw, _, port = text.partition(":")
    try:
        words = bytes.fromhex(raw)
    except ValueError:
        return None
    if len(words) == 4:  # IPv4 (/proc/net/tcp): one word, read without ipaddress (10,000 lines)
        return f"{words[3]}.{words[2]}.{words[1]}.{words[0]}", int(port, 16)
    packed = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
    try:
        ip = ipaddress.ip_address(packed)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def socket_inodes(pids: Iterable[int], proc: Path = Path("/proc")) -> set[int] | None:
    """The socket inodes the given processes hold, or None when any of them cannot be read
    (gone, another user's, another pid namespace)."""
    inodes: set[int] = set()
    for pid in pids:
        directory = f"{proc}/{pid}/fd"  # text, not Path: HAProxy holds 10,000 descriptors
        try:
            names = os.listdir(directory)
        except OSError:
            return None
        for name in names:
            try:
                target = os.readlink(f"{directory}/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def holders(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, int]:
    """inode -> pid of a process holding it, for the inodes found (a scan of /proc)."""
    found: dict[int, int] = {}
    if not inodes:
        return found
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        directory = f"{proc}/{entry}/fd"
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            try:
                inode = wanted.get(os.readlink(f"{directory}/{name}"))
            except OSError:
                continue
            if inode is not None and inode not in found:
                found[inode] = int(entry)
        if len(found) == len(wanted):
            break
    return found


def process_tree(root: int, proc: Path = Path("/proc")) -> set[int]:
    """`root` and its descendants (HAProxy's master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    return tree


def shared(
    addresses: Iterable[Address],
    *,
    own_pids: set[int] | None,
    proc: Path = Path("/proc"),
) -> dict[Address, str]:
    """The addresses among `addresses` where a socket that is not HAProxy's listens, each with
    who holds it. `own_pids`: HAProxy's processes (None: not visible here)."""
    table = listening(proc)
    wanted = {a: table[a] for a in addresses if a in table}
    if not wanted:
        return {}
    own = socket_inodes(own_pids, proc) if own_pids else None
    out: dict[Address, str] = {}
    if own is None:
        for address, inodes in wanted.items():
            if len(inodes) > 1:
                out[address] = f"{len(inodes)} sockets listen there (HAProxy holds one)"
        return out
    foreign = {a: [i for i in inodes if i not in own] for a, inodes in wanted.items()}
    pids = holders({i for inodes in foreign.values() for i in inodes}, proc)
    for address, inodes in foreign.items():
        if inodes:
            who = sorted({f"pid {pids[i]}" if i in pids else f"socket inode {i}" for i in inodes})
            out[address] = "another process listens there too (" + ", ".join(who) + ")"
    return out


def addresses_of(sockets: Mapping[Address, Iterable[Address]]) -> set[Address]:
    """What to look at for a model's listeners (model.listeners): every socket HAProxy binds
    and every VIP:port it serves through them (a wildcard socket's VIPs can be taken by a more
    specific one)."""
    out = set(sockets)
    for binds in sockets.values():
        out.update(binds)
    return out


def is_haproxy(pid: int, proc: Path = Path("/proc")) -> bool:
    """The process `pid` of this pid namespace is an HAProxy."""
    try:
        return (proc / str(pid) / "comm").read_text().strip() == "haproxy"
    except OSError:
        return False


_IP_FREEBIND, _IPV6_FREEBIND = 15, 78  # linux/in.h, linux/in6.h


def bind_problem(ip: str, port: int, *, transparent: bool) -> str | None:
    """Why HAProxy could not listen on ip:port on this host, or None. Binds a test socket as
    HAProxy would: SO_REUSEPORT (so HAProxy's own listeners, same user, do not count as a
    conflict) and, for `transparent` binds, FREEBIND (an address the host does not hold)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # HAProxy's IPv6 wildcard bind is v6only (ports.j2); a specific address is
                # the same either way.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if transparent:
                level, option = (
                    (socket.IPPROTO_IPV6, _IPV6_FREEBIND)
                    if family == socket.AF_INET6
                    else (socket.IPPROTO_IP, _IP_FREEBIND)
                )
                sock.setsockopt(level, option, 1)
            sock.bind((ip, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class LocalHost:
    """HAProxy runs on this host: its sockets can be test-bound and its neighbours seen.
    `pids` gives HAProxy's processes (None: not visible from here)."""

    def __init__(self, *, pids: Callable[[], frozenset[int] | None], transparent: bool) -> None:
        self._pids = pids
        self._transparent = transparent

    def unbindable(self, wanted: Iterable[Address]) -> dict[Address, str]:
        """The sockets among `wanted` this host cannot listen on, with why."""
        return {
            key: why for key in wanted if (why := bind_problem(*key, transparent=self._transparent))
        }

    def shared(self, listening: Mapping[Address, Iterable[Address]]) -> dict[Address, str]:
        """Of HAProxy's sockets and the VIP:ports they serve, those where another process
        listens too, with who."""
        pids = self._pids()
        return shared(addresses_of(listening), own_pids=set(pids) if pids else None)
