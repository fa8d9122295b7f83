"""linestate: what HAProxy says of one of its server lines, decoded from `show servers state`.

Two readings of the same numbers: the model's (a line in maintenance is a parked slot, one at
weight 0 or draining drains: what drift compares), and the operator's, as HAProxy's own stats
page words it (UP, DOWN, MAINT, DRAIN, and the last health check's result: what `status` and
`explain` show). The bits and codes are HAProxy's (SRV_ADMF_*, SRV_ST_*, HCHK_STATUS_*, CHK_ST_*),
the same from 2.6 to 3.4 (checked against `show stat` on 2.6.12 and 3.4.0). The text is parsed
in appliers/runtime.py; this module only reads values. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from kube2haproxy.model import Server, ServerState, hostport
from kube2haproxy.slots import PARKED_IP, PARKED_PORT

# srv_admin_state bits (HAProxy's SRV_ADMF_*) and srv_op_state values (SRV_ST_*).
ADMIN_FORCED_MAINT, ADMIN_INHERITED_MAINT, ADMIN_CONFIG_MAINT = 0x01, 0x02, 0x04
ADMIN_FORCED_DRAIN, ADMIN_INHERITED_DRAIN = 0x08, 0x10
ADMIN_RESOLVE_MAINT, ADMIN_HOSTNAME_MAINT = 0x20, 0x40
OP_STOPPED, OP_STARTING, OP_RUNNING, OP_STOPPING = 0, 1, 2, 3
CHECK_CONFIGURED = 0x02  # srv_check_state: CHK_ST_CONFIGURED (the line has `check`)

# srv_check_status (HCHK_STATUS_*), named as `show stat` names them in check_status.
CHECK_STATUS = (
    "UNK",  # 0: unknown
    "INI",  # initializing
    "START",  # a check under way
    "CHECKED",
    "HANA",  # health analysis: too many errors on live traffic
    "SOCKERR",
    "L4OK",  # 6: connected
    "L4TOUT",
    "L4CON",  # 8: connection refused or unreachable
    "L6OK",
    "L6TOUT",
    "L6RSP",
    "L7TOUT",
    "L7RSP",
    "L57DATA",
    "L7OK",  # 15: an HTTP check passed
    "L7OKC",
    "L7STS",  # an HTTP check answered with an error status
    "PROCERR",
    "PROCTOUT",
    "PROCOK",
)

# What `status` and `explain` call a line's state; "?" when HAProxy was not asked about it
# since it got its endpoint.
UP, DOWN, MAINT, DRAIN, NOLB, UNKNOWN = "UP", "DOWN", "MAINT", "DRAIN", "NOLB", "?"
STATES = (UP, DOWN, MAINT, DRAIN, NOLB, UNKNOWN)
NO_CHECK = "no check"


class LineView(NamedTuple):
    """HAProxy's view of a line, as its stats page shows it: `state` (UP, DOWN, MAINT, DRAIN,
    NOLB) and `check`, the last health check's result (L4OK, L4CON, L7STS, ...; "no check")."""

    state: str
    check: str


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One line of `show servers state`."""

    addr: str
    port: int
    op_state: int
    admin: int
    weight: int
    check_status: int = 0
    check_state: int = 0

    @property
    def in_maintenance(self) -> bool:
        """Forced or inherited maintenance; `disabled` in the config (CMAINT) counts only for a
        line still at the parked address and stopped: `set server state ready` makes a line
        run but leaves the bit set, so a readied line whose health check fails is stopped with
        the bit too, and is down, not parked."""
        forced = (
            ADMIN_FORCED_MAINT | ADMIN_INHERITED_MAINT | ADMIN_RESOLVE_MAINT | ADMIN_HOSTNAME_MAINT
        )
        return bool(self.admin & forced) or bool(
            self.admin & ADMIN_CONFIG_MAINT
            and self.op_state == OP_STOPPED
            and (self.addr, self.port) == (PARKED_IP, PARKED_PORT)
        )

    @property
    def draining(self) -> bool:
        return bool(self.admin & (ADMIN_FORCED_DRAIN | ADMIN_INHERITED_DRAIN)) or self.weight == 0

    def as_server(self, name: str) -> Server:
        """The line as a model server: in maintenance is parked (the model parks no slot
        elsewhere than at the parked address, so a maintained slot elsewhere differs)."""
        state = (
            ServerState.PARKED
            if self.in_maintenance
            else ServerState.DRAIN
            if self.draining
            else ServerState.READY
        )
        return Server(name, self.addr, self.port, hostport(self.addr, self.port), state)

    def view(self) -> LineView:
        """As HAProxy's stats page says it. A line at weight 0 takes no new connection: DRAIN,
        as the model renders a terminating endpoint (the stats page says UP there)."""
        if self.in_maintenance:
            state = MAINT
        elif self.op_state == OP_STOPPED:
            state = DOWN
        elif self.op_state == OP_STOPPING:
            state = NOLB
        elif self.draining:
            state = DRAIN
        else:
            state = UP
        if not self.check_state & CHECK_CONFIGURED:
            check = NO_CHECK
        elif 0 <= self.check_status < len(CHECK_STATUS):
            check = CHECK_STATUS[self.check_status]
        else:
            check = f"check status {self.check_status}"
        return LineView(state, check)
