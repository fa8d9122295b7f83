"""appliers: how a plan reaches HAProxy, one interchangeable implementation per module.

`master_cli` drives an HAProxy through its master CLI and runtime API sockets (supervised or
attached; every supported version), `dataplane` through HAProxy's Data Plane API (REST, v3),
`recording` keeps what it is given (tests, dry runs). They
share one narrow protocol: apply a plan with its rendered config, observe what runs, say
whether HAProxy answers and what its runtime API can change. The plan is structured data
(plan.py); only an applier turns it into wire text. The file at the config path is always one
HAProxy accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from kube2haproxy.deployed import Abilities
from kube2haproxy.linestate import ServerStatus
from kube2haproxy.model import Server
from kube2haproxy.plan import Plan


@dataclass(frozen=True)
class Config:
    """A rendered config: its text, the files it refers to (by name in the maps directory), and
    the glob of the names such files have (older ones are removed once it runs). The text may
    be given as the function that renders it, called at the first use: a runtime update sends
    its commands first and renders the file after, off the change's latency."""

    source: str | Callable[[], str]
    files: Mapping[str, str] = field(default_factory=dict)
    files_glob: str = ""
    # The options of the server lines of the backends a runtime update adds lines to, as
    # rendered (model backend -> options): an added line runs as a reload would load it.
    server_options: Mapping[str, str] = field(default_factory=dict)

    @functools.cached_property
    def text(self) -> str:
        return self.source if isinstance(self.source, str) else self.source()


def go_on() -> None:
    """A `pause` that does not."""


class Outcome(StrEnum):
    UNCHANGED = "unchanged"  # HAProxy already runs this config
    STARTED = "started"  # a supervised HAProxy started with it
    ADOPTED = "adopted and reloaded"  # one a previous controller left running, reloaded
    RELOADED = "reloaded"
    UPDATED = "updated"  # through the runtime API, no reload
    RECORDED = "recorded"  # a recording applier kept it


@dataclass(frozen=True, slots=True)
class ApplyReport:
    outcome: Outcome
    check_s: float = 0.0  # `haproxy -c`
    apply_s: float = 0.0  # the reload (or start) until confirmed, or the runtime commands
    check_output: str = ""  # warnings `haproxy -c` printed for an accepted config


@dataclass(frozen=True, slots=True)
class Running:
    """What HAProxy reports it runs: each server line, as the model would have it (a slot in
    maintenance is parked), and its processes as this host's /proc shows them (None: not
    visible here); `statuses`, each line as HAProxy said it (its state and health check, for
    `status`; empty where the applier cannot tell)."""

    servers: Mapping[tuple[str, str], Server]
    pids: frozenset[int] | None = None
    statuses: Mapping[tuple[str, str], ServerStatus] = field(default_factory=dict)


class Applier(Protocol):
    def apply(self, plan: Plan, config: Config) -> ApplyReport:
        """Make HAProxy run `plan.model`, rendered as `config`. Errors (errors.py): CheckError
        and ConfigRefused (HAProxy refused it), HAProxyUnavailable (no answer in time),
        RuntimeUpdateError (a runtime update did not go as planned: reload instead)."""
        ...

    def observe(self, *, pause: Callable[[], None] = go_on) -> Running | None:
        """What HAProxy runs, or None when there is nothing to observe. `pause` is called
        every few hundred lines read: a caller beside the controller's loop yields there."""
        ...

    def healthy(self) -> bool:
        """HAProxy answers (always true for appliers without an HAProxy)."""
        ...

    def abilities(self) -> Abilities:
        """What a runtime update may do with the HAProxy behind it."""
        ...

    def close(self) -> None:
        """Finish what is under way (a config file being written)."""
        ...
