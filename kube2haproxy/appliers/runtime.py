"""runtime: the worker's stats socket (HAProxy's runtime API): a plan's runtime changes as
commands (`add server`, `set server`, `add map` / `set map` / `del map`, `del server`), their
replies checked against the exact forms the running version gives, and the server lines HAProxy
runs (`show servers state`).

The only code that writes runtime API text. A reply that is not one of the forms a success
takes, in the running version, is an error: the caller reloads instead. Two replies are not
errors: `add server` finding the line already there (a `del server` that earlier found it still
busy left it, parked), and `del server` finding it busy (it stays, parked, until a reload).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from kube2haproxy.appliers import go_on
from kube2haproxy.appliers.cli_socket import split_replies, unix_command, unix_lines
from kube2haproxy.capabilities import Capabilities
from kube2haproxy.deployed import RouteChange, RuntimeOps, ServerAdd, SlotChange
from kube2haproxy.errors import HAProxyUnavailable, RuntimeUpdateError
from kube2haproxy.grammar import same_ip
from kube2haproxy.linestate import ServerStatus
from kube2haproxy.model import Server, ServerState
from kube2haproxy.slots import PARKED_ADDRESS

log = logging.getLogger(__name__)

BY_CLI = "by 'stats socket command'"
_IP = r"IP changed from '[^']*' to '(?P<ip>[^']*)'"
_PORT = r"port changed from '[^']*' to '(?P<port>[^']*)'"
# 2.6 says both parts, each changed or not.
_ADDR_REPLY_BOTH = re.compile(
    rf"(?:{_IP}|no need to change the addr), (?:{_PORT}|no need to change the port) {BY_CLI}"
)
# 3.0 and later say only what changed, or that nothing did.
_ADDR_REPLY_CHANGED = re.compile(
    rf"(?:{_IP}(?:, {_PORT.replace('<port>', '<both_port>')})?|{_PORT}) {BY_CLI}|nothing changed"
)


def slot_commands(change: SlotChange) -> list[str]:
    """One slot from `change.before` to `change.after`. A slot that empties goes to maintenance,
    then back to the parked address; a slot that takes an endpoint goes to maintenance (if it
    served another one), gets the address, then its state. Established connections are never
    cut: maintenance and drain only stop new ones."""
    old, new = change.before, change.after
    target = f"set server {change.backend}/{change.server}"
    commands = []
    moved = (old.ip, old.port) != (new.ip, new.port)
    if new.parked or moved:
        if not old.parked:
            commands.append(f"{target} state maint")
        if moved:
            commands.append(f"{target} addr {new.ip} port {new.port}")
    if not new.parked and (moved or old.state is not new.state):
        if new.state is ServerState.READY:
            # A line loaded draining has weight 0 (a config has no drain state): `state ready`
            # alone would leave it taking no new connection.
            commands.append(f"{target} weight 1")
        commands.append(f"{target} state {new.state.value}")
    return commands


ADDED = "New server registered."
ALREADY_THERE = "Already exists a server with the same name in backend."
DELETED = "Server deleted."
MAP_KEY_NOT_FOUND = "Key not found."


def add_commands(add: ServerAdd, options: str) -> list[str]:
    """A parked line added (it starts in maintenance), with the options the rendered lines of
    its backend carry; its health checks enabled when it has them (a dynamic server's start
    disabled), to run once it leaves maintenance."""
    target = f"{add.backend}/{add.server.name}"
    commands = [" ".join(filter(None, ("add server", target, PARKED_ADDRESS, options)))]
    if "check" in options.split():
        commands.append(f"enable health {target}")
    return commands


def route_command(change: RouteChange, maps_dir: str) -> str:
    """One map entry: added, changed or removed (a map is named by its file as loaded)."""
    path = f"{maps_dir.rstrip('/')}/{change.map}"
    if change.after is None:
        return f"del map {path} {change.vip}"
    verb = "add" if change.before is None else "set"
    return f"{verb} map {path} {change.vip} {change.after}"


def commands_of(ops: RuntimeOps, *, options: Mapping[str, str], maps_dir: str) -> list[str]:
    """Every command of a runtime update, in the order it must run."""
    commands = [c for add in ops.adds for c in add_commands(add, options[add.options])]
    commands += [c for change in ops.grow for c in slot_commands(change)]
    commands += [route_command(change, maps_dir) for change in ops.routes]
    commands += [c for change in ops.shrink for c in slot_commands(change)]
    commands += [f"del server {d.backend}/{d.server}" for d in ops.deletes]
    return commands


def unexpected_reply(command: str, reply: str, capabilities: Capabilities) -> str | None:
    """None when HAProxy answered `command` exactly as a success looks in this version, else
    what is wrong. `set server ... state X` and `... weight W`, `enable health` and map changes
    answer nothing;
    `set server ... addr A port P` says what it changed, naming the new address and port."""
    words = command.split()
    if words[:2] == ["add", "server"]:
        return None if reply in (ADDED, ALREADY_THERE) else f"{command!r}: {reply!r}"
    if words[:2] == ["del", "server"]:
        if reply != DELETED:  # still has connections: it stays, parked, until a reload
            log.info("%s: %s (it stays parked until the next reload)", command, reply)
        return None
    if words[1:2] == ["map"] and words[0] in ("add", "set", "del"):
        fine = ("", MAP_KEY_NOT_FOUND) if words[0] == "del" else ("",)
        return None if reply in fine else f"{command!r}: {reply!r}"
    if words[:2] == ["enable", "health"] or words[3:4] in (["state"], ["weight"]):
        return None if reply == "" else f"{command!r}: {reply!r}"
    if words[3:4] == ["addr"] and len(words) == 7:
        grammar = _ADDR_REPLY_CHANGED if capabilities.addr_reply_changed_only else _ADDR_REPLY_BOTH
        match = grammar.fullmatch(reply)
        if match is None:
            return f"{command!r}: {reply!r}"
        if match["ip"] is not None and not same_ip(match["ip"], words[4]):
            return f"{command!r}: HAProxy set the address {match['ip']!r}"
        port = match["port"] or match.groupdict().get("both_port")
        if port is not None and port != words[6]:
            return f"{command!r}: HAProxy set the port {port!r}"
        return None
    return f"{command!r}: not a command this applier sends"


class RuntimeAPI:
    """The stats socket of the current worker."""

    def __init__(self, path: str, *, timeout_s: float = 5.0, batch: int = 64) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.batch = batch

    def execute(self, commands: Sequence[str]) -> list[str]:
        """Run commands in batches (`a; b; c` on one line, one connection per batch) and return
        one reply per command (its text without the terminating empty line)."""
        replies: list[str] = []
        for start in range(0, len(commands), self.batch):
            chunk = commands[start : start + self.batch]
            if any(";" in c or "\n" in c for c in chunk):
                raise ValueError("a runtime command may not contain ';' or a newline")
            text = unix_command(
                self.path, "; ".join(chunk), timeout_s=self.timeout_s, half_close=False
            )
            got = split_replies(text)
            if len(got) != len(chunk):
                raise HAProxyUnavailable(
                    f"{self.path}: {len(got)} replies to {len(chunk)} commands: {text[:300]!r}"
                )
            replies.extend(got)
        return replies

    def update(
        self,
        ops: RuntimeOps,
        capabilities: Capabilities,
        *,
        options: Mapping[str, str],
        maps_dir: str,
    ) -> int:
        """Apply a runtime update, checking every reply; the number of commands sent.
        `options`: each model backend's server options (ServerAdd.options names one).
        RuntimeUpdateError when anything does not go exactly as planned."""
        try:
            commands = commands_of(ops, options=options, maps_dir=maps_dir)
        except KeyError as exc:
            raise RuntimeUpdateError(f"no server options rendered for backend {exc}") from exc
        try:
            replies = self.execute(commands)
        except (HAProxyUnavailable, ValueError) as exc:
            raise RuntimeUpdateError(str(exc)) from exc
        for command, reply in zip(commands, replies, strict=True):
            problem = unexpected_reply(command, reply, capabilities)
            if problem is not None:
                raise RuntimeUpdateError(problem)
        return len(commands)

    def command(self, command: str, *, timeout_s: float | None = None) -> str:
        """One command, its whole answer (for dumps such as `show servers state`)."""
        return unix_command(
            self.path, command, timeout_s=timeout_s or self.timeout_s, half_close=False
        )

    def servers(self) -> dict[tuple[str, str], Server]:
        """Every server line HAProxy runs, as the model would have it."""
        return {key: status.as_server(key[1]) for key, status in self.states().items()}

    def states(self, *, pause: Callable[[], None] = go_on) -> dict[tuple[str, str], ServerStatus]:
        """Every server line HAProxy runs, as `show servers state` says it, read and parsed
        as it arrives; `pause` is called every few hundred lines (a caller beside the
        controller's loop yields the CPU there)."""
        lines = unix_lines(self.path, "show servers state", timeout_s=max(self.timeout_s, 30.0))
        with contextlib.closing(lines):  # the socket closed too when a line does not parse
            return parse_server_lines(lines, pause=pause)


def parse_servers_state(text: str) -> dict[tuple[str, str], ServerStatus]:
    """(backend, server) -> status, from `show servers state` (format version 1)."""
    return parse_server_lines(text.splitlines())


def parse_server_lines(
    lines: Iterable[str], *, pause: Callable[[], None] = go_on
) -> dict[tuple[str, str], ServerStatus]:
    """parse_servers_state's, from the dump's lines. Hundreds of thousands of lines at 10,000
    services: the columns are found once per header, and the lines that say the same but for
    their names (every free slot) share one status."""
    lines = iter(lines)
    first = next(lines, None)
    if first is None or first.strip() != "1":
        raise HAProxyUnavailable(f"unexpected 'show servers state' format: {first!r}")
    out: dict[tuple[str, str], ServerStatus] = {}
    known: dict[tuple[str, ...], ServerStatus] = {}
    pick: Callable[[list[str]], tuple[str, ...]] | None = None
    for count, line in enumerate(lines):
        if not count & PAUSE_EVERY:
            pause()
        if line.startswith("#"):
            header = line.lstrip("# ").split()
            try:
                pick = operator.itemgetter(*(header.index(name) for name in _COLUMNS))
            except ValueError as exc:
                raise HAProxyUnavailable(f"'show servers state' lacks a column: {exc}") from exc
            continue
        if not line.strip():
            continue
        if pick is None:
            raise HAProxyUnavailable(f"'show servers state' line before its header: {line!r}")
        try:
            row = pick(line.split())
            said = row[2:]
            status = known.get(said)
            if status is None:
                addr, port, op, admin, weight, check, checking = said
                status = known[said] = ServerStatus(
                    addr, int(port), int(op), int(admin), int(weight), int(check), int(checking)
                )
            out[(row[0], row[1])] = status
        except (IndexError, ValueError) as exc:
            raise HAProxyUnavailable(f"cannot read 'show servers state' line {line!r}") from exc
    return out


PAUSE_EVERY = 255  # a parser calls `pause` every PAUSE_EVERY + 1 lines (a mask: 2**n - 1)


_COLUMNS = (
    "be_name",
    "srv_name",
    "srv_addr",
    "srv_port",
    "srv_op_state",
    "srv_admin_state",
    "srv_uweight",
    "srv_check_status",
    "srv_check_state",
)
