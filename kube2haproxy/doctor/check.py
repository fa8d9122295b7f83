"""check: what a check says: its name, ok / warn / fail, what it found, and the command that
fixes it. Printed one line each, or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"  # nothing to do (or nothing to check here: the detail says so)
    WARN = "warn"  # works, with less headroom or safety than it should have
    FAIL = "fail"  # the controller or HAProxy cannot work as configured


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None  # the command (or setting) that makes it ok

    def line(self, width: int = 16) -> str:
        fix = f" -- fix: {self.fix}" if self.fix else ""
        return f"{self.status.value:<4}  {self.name:<{width}}  {self.detail}{fix}"

    def as_json(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def worst(checks: Sequence[Check]) -> Status:
    statuses = {c.status for c in checks}
    return next((s for s in (Status.FAIL, Status.WARN) if s in statuses), Status.OK)


def text(checks: Sequence[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    return "".join(c.line(width) + "\n" for c in checks)


def as_json(checks: Sequence[Check]) -> str:
    """`{"status": worst, "checks": [{"name", "status", "detail", "fix"}, ...]}`."""
    return (
        json.dumps(
            {"status": worst(checks).value, "checks": [c.as_json() for c in checks]}, indent=2
        )
        + "\n"
    )


def thousands(n: int) -> str:
    return f"{n:,}"


def plural(n: int, noun: str, nouns: str = "") -> str:
    """`1 listener`, `2 listeners`, `2 sample addresses` (with `nouns`)."""
    return f"{thousands(n)} {noun if n == 1 else nouns or noun + 's'}"
