"""host: what a check reads about the machine it runs on, gathered in one value so each check
takes its inputs explicitly and a test can hand it a fake `/proc` tree.

`Host.local()` is this process on this machine: its `RLIMIT_NOFILE`, the CPUs it may run on, its
effective uid. Everything else is read under `proc` when a check asks: sysctls from
`<proc>/sys/...`, effective capabilities from `<proc>/self/status` (CapEff).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

# linux/capability.h
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_SYS_RESOURCE = 24


@dataclass(frozen=True, slots=True)
class Host:
    proc: Path = Path("/proc")
    nofile: tuple[int, int] = (1024, 1024)  # RLIMIT_NOFILE: soft, hard
    cpus: int = 1  # CPUs this process may run on (HAProxy's default thread count)
    euid: int = 0

    @classmethod
    def local(cls, proc: Path = Path("/proc")) -> Host:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        infinite = resource.RLIM_INFINITY
        return cls(
            proc=proc,
            nofile=(
                soft if soft != infinite else 2**31 - 1,
                hard if hard != infinite else 2**31 - 1,
            ),
            cpus=len(os.sched_getaffinity(0)),
            euid=os.geteuid(),
        )

    def sysctl(self, name: str) -> str | None:
        """`net.core.somaxconn` read from <proc>/sys/net/core/somaxconn; None when absent (a
        module not loaded, another kernel) or unreadable."""
        try:
            return (self.proc / "sys" / name.replace(".", "/")).read_text().strip()
        except OSError:
            return None

    def sysctl_ints(self, name: str) -> tuple[int, ...] | None:
        """A sysctl of whitespace-separated integers (`ip_local_port_range`: two)."""
        text = self.sysctl(name)
        if text is None:
            return None
        try:
            return tuple(int(word) for word in text.split())
        except ValueError:
            return None

    def sysctl_int(self, name: str) -> int | None:
        values = self.sysctl_ints(name)
        return values[0] if values and len(values) == 1 else None

    def capabilities(self) -> int | None:
        """The effective capability set (CapEff) of this process, or None when unreadable."""
        try:
            status = (self.proc / "self" / "status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key == "CapEff":
                try:
                    return int(value.strip(), 16)
                except ValueError:
                    return None
        return None

    def capable(self, capability: int) -> bool:
        """Whether this process holds `capability` (unknown counts as no)."""
        caps = self.capabilities()
        return caps is not None and bool(caps >> capability & 1)
