"""unbindable: the addresses this host cannot listen on, left out of the model until they can.

HAProxy 2.6 pauses every listener for about 2 s on a reload it refuses, and the commonest cause
is an address the host cannot listen on (an external IP it does not hold, a port in use). So the
sockets a reload would add are test-bound first; the VIP:ports of one that fails are left out of
the model (a warning names their service) and the socket is tried again later. One unbindable
VIP must never block every later reload. Pure bookkeeping: the test binds are the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Socket = tuple[str, int]


class Unbindable:
    def __init__(self) -> None:
        self.binds: dict[Socket, str] = {}  # VIP:ports left out of the model, and why
        self._by_socket: dict[Socket, tuple[Socket, ...]] = {}  # the binds behind each socket

    @property
    def sockets(self) -> tuple[Socket, ...]:
        """The sockets to test again."""
        return tuple(self._by_socket)

    def exclude(
        self, failed: Mapping[Socket, str], needed: Mapping[Socket, Iterable[Socket]]
    ) -> None:
        """Sockets that failed their test bind (with why): leave out the binds they serve."""
        for socket_, why in failed.items():
            binds = tuple(needed[socket_])
            self.binds.update(dict.fromkeys(binds, why))
            # Binds left out at an earlier test of this socket are no longer in the model: keep
            # them, or a later retest that succeeds would never bring them back.
            earlier = self._by_socket.get(socket_, ())
            self._by_socket[socket_] = tuple(dict.fromkeys((*earlier, *binds)))

    def usable_again(self, still_failing: Iterable[Socket]) -> int:
        """After a retest: bring back the binds of the sockets that no longer fail; how many
        sockets that was."""
        failing = set(still_failing)
        usable = [s for s in self._by_socket if s not in failing]
        for socket_ in usable:
            for bind in self._by_socket.pop(socket_):
                self.binds.pop(bind, None)
        return len(usable)
