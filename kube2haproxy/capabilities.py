"""capabilities: what the running HAProxy can do, derived from its version in one place.

HAProxy's behaviour towards a controller changed between 2.6 and 3.4 (../shared/HAPROXY.md has
the measurements): how `reload` answers, when `show proc` lists a new worker, how runtime
commands reply, what can be added at runtime. Everything that depends on it reads a
`Capabilities` value; nothing else compares versions. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kube2haproxy.errors import UnsupportedVersion

_VERSION = re.compile(r"(?:HAProxy version )?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?\S*")


@dataclass(frozen=True, slots=True, order=True)
class Version:
    major: int
    minor: int
    patch: int = 0
    text: str = field(default="", compare=False)  # as HAProxy printed it

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str) -> Version:
    """The version in `haproxy -vv`'s first line ("HAProxy version 2.6.12-1+deb12u4 2023/...")
    or in the master CLI's `show version` ("3.0.11-9e587df"); ValueError otherwise."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise ValueError(f"not an HAProxy version: {text[:80]!r}")
    major, minor, patch = match.groups()
    word = match.group(0).removeprefix("HAProxy version ")
    return Version(int(major), int(minor), int(patch or 0), word)


OLDEST = Version(2, 6)


@dataclass(frozen=True, slots=True)
class Capabilities:
    version: Version
    # The master CLI's `reload` waits for the new worker and answers `Success=1|0`, `--`, and
    # the startup log (2.7); before, it answers nothing and `show proc` tells the outcome.
    reload_reply: bool
    # A reload sent while one is loading answers "Another reload is still in progress." (3.1).
    reload_busy_reply: bool
    # `show proc` lists a new worker as soon as it is forked, before it parsed its config and
    # bound its listeners (3.1): listed is not ready.
    workers_listed_early: bool
    # `set server ... addr A port P` says only what it changed ("IP changed from 'a' to 'b' by
    # 'stats socket command'", "nothing changed") instead of both parts ("..., no need to change
    # the port by 'stats socket command'") (3.0).
    addr_reply_changed_only: bool
    # `add backend`, `publish backend`, `del backend` (3.4).
    dynamic_backends: bool
    # `del server` may be used: several crash fixes of it came after 2.6.12 (3.0).
    safe_server_delete: bool
    # A worker left running as root is warned about at every start and reload (3.3).
    warns_as_root: bool


def capabilities(version: Version) -> Capabilities:
    """The capabilities of a version; UnsupportedVersion before 2.6."""
    if version < OLDEST:
        raise UnsupportedVersion(
            f"HAProxy {version} is not supported: kube2haproxy needs {OLDEST} or newer"
        )
    return Capabilities(
        version=version,
        reload_reply=version >= Version(2, 7),
        reload_busy_reply=version >= Version(3, 1),
        workers_listed_early=version >= Version(3, 1),
        addr_reply_changed_only=version >= Version(3, 0),
        dynamic_backends=version >= Version(3, 4),
        safe_server_delete=version >= Version(3, 0),
        warns_as_root=version >= Version(3, 3),
    )
