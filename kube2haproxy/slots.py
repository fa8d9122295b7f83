"""slots: how many server lines a backend has, and which endpoint sits in which line.

Every backend is rendered with its endpoints plus spare "slots" (parked, disabled server lines),
so that endpoint churn fills and empties slots through the runtime API instead of reloading.
Both answers are pure functions of the current endpoints, so that the file the controller keeps
after runtime changes is exactly what `render` gives for the same cluster, and every replica of
an HA pool renders byte-identical output with no shared history:

- the slot count grows in blocks with the number of endpoints *listed* for the port (ready or
  not, terminating included), plus a minimum of free slots. Counting listed endpoints, not ready
  ones, keeps a crash-looping pod from flapping the count across a block boundary;
- an endpoint's slot comes from a hash of its address:port (CRC-32, stable everywhere; its
  preferred slot), with linear probing over the endpoints taken in order of preferred slot.
  An endpoint keeps its slot while it exists, except when a collision in front of it clears
  (rare with the default headroom); then it moves, exactly as a reload of the same cluster
  would place it.

A slot count that grows or shrinks needs no reload either: lines are added at runtime (`add
server`, with the options the rendered lines carry), and those beyond a smaller count are parked
(and deleted where the version does it safely). What HAProxy runs may then keep parked lines the
file no longer has (deployed.py); the file itself is always this function of the cluster.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from kube2haproxy import names
from kube2haproxy.model import Server, ServerState, hostport

PARKED_IP = "127.0.0.1"
PARKED_PORT = 1
PARKED_ADDRESS = hostport(PARKED_IP, PARKED_PORT)


def slot_count(listed: int, *, free: int, block: int) -> int:
    """Server lines for a port with `listed` endpoints: at least `free` spare, in whole blocks
    (and at least one block: an empty service still gets slots to grow into)."""
    wanted = listed + free
    return max(block, -(-wanted // block) * block)


def preferred_slot(ip: str, port: int, slots: int) -> int:
    return zlib.crc32(f"{ip}:{port}".encode()) % slots


def assign(endpoints: Sequence[tuple[str, int]], slots: int) -> list[int]:
    """The slot (0-based) of each endpoint, in the order given. len(endpoints) <= slots."""
    if len(endpoints) > slots:
        raise ValueError(f"{len(endpoints)} endpoints do not fit in {slots} slots")
    preferred = [preferred_slot(ip, port, slots) for ip, port in endpoints]
    order = sorted(range(len(endpoints)), key=lambda i: (preferred[i], endpoints[i]))
    taken = [False] * slots
    placed = [0] * len(endpoints)
    for i in order:
        slot = preferred[i]
        while taken[slot]:
            slot = (slot + 1) % slots
        taken[slot] = True
        placed[i] = slot
    return placed


_new = tuple.__new__  # builds a Server in C; its generated __new__ is a Python function
_parked: list[Server] = []  # slot i's parked line, shared by every backend: immutable


def parked_line(slot: int) -> Server:
    """Slot `slot`'s (0-based) line while it holds no endpoint."""
    while len(_parked) <= slot:
        index = len(_parked)
        _parked.append(
            _new(
                Server,
                (
                    names.server_name(index + 1),
                    PARKED_IP,
                    PARKED_PORT,
                    PARKED_ADDRESS,
                    ServerState.PARKED,
                ),
            )
        )
    return _parked[slot]


def layout(endpoints: Sequence[tuple[str, int, ServerState]], count: int) -> tuple[Server, ...]:
    """The `count` server lines of a backend: each endpoint in its slot (what `assign` gives),
    the other slots parked. The hot path of translation (once per endpoint): one pass keyed
    by preferred slot, the address text formatted once for the hash and the line."""
    if len(endpoints) > count:
        raise ValueError(f"{len(endpoints)} endpoints do not fit in {count} slots")
    parked_line(count - 1)
    lines = _parked[:count]
    crc32 = zlib.crc32
    keyed = []
    for ip, port, state in endpoints:
        text = f"{ip}:{port}"
        keyed.append((crc32(text.encode()) % count, ip, port, state, text))
    keyed.sort()  # as `assign`: by preferred slot, then address (unique: never the state)
    taken = [False] * count
    for preferred, ip, port, state, text in keyed:
        slot = preferred
        while taken[slot]:
            slot = (slot + 1) % count
        taken[slot] = True
        address = text if ":" not in ip else hostport(ip, port)
        lines[slot] = _new(Server, (_parked[slot].name, ip, port, address, state))
    return tuple(lines)
