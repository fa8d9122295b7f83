"""Findings: what translation and loading report about the input (warnings and skips).

A finding names the object (kind, namespace/name or file), the field, and what was done about it.
Findings never stop the pipeline; the CLI prints them (one line each) and `--strict` makes warnings
fatal. Skip reasons are a closed set so that metrics and tests can count them.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    WARNING = "warning"  # the input is wrong or partly unusable; --strict fails on these
    INFO = "info"  # by design, nothing to fix (a headless service is not served, ...)


class SkipReason(StrEnum):
    """Why a whole service, or one port of it, is not served."""

    HEADLESS = "headless"
    EXTERNAL_NAME = "external-name"
    HEADLESS_LABEL = "headless-label"
    OTHER_PROXY = "other-proxy"
    NO_VIP = "no-vip"
    INVALID = "invalid"
    NO_TCP_PORTS = "no-tcp-ports"
    UDP_PORT = "udp-port"
    SCTP_PORT = "sctp-port"


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    subject: str  # "Service default/web", "EndpointSlice default/web-abc12", or a file path
    field: str  # "spec.ports[1].protocol", "metadata.annotations[kube2haproxy.io/balance]", ""
    message: str
    skip: SkipReason | None = None

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.text}"

    @property
    def text(self) -> str:
        """Without the severity: for log lines, which carry their own level."""
        where = f"{self.subject}: {self.field}: " if self.field else f"{self.subject}: "
        return f"{where}{self.message}"


class Collector:
    """The findings about one subject, gathered into a list shared with other collectors
    (`about`): what the functions of a translation add to as they go."""

    __slots__ = ("found", "subject")

    def __init__(self, subject: str, found: list[Finding] | None = None) -> None:
        self.subject = subject
        self.found: list[Finding] = [] if found is None else found

    def warn(self, field: str, message: str, skip: SkipReason | None = None) -> None:
        """Something wrong with the input: the user can fix it (--strict fails on it)."""
        self.found.append(Finding(Severity.WARNING, self.subject, field, message, skip))

    def note(self, field: str, message: str, skip: SkipReason | None = None) -> None:
        """Something skipped by design: nothing to fix."""
        self.found.append(Finding(Severity.INFO, self.subject, field, message, skip))

    def about(self, subject: str) -> Collector:
        """A collector for another subject, adding to the same list."""
        return Collector(subject, self.found)


def warning(subject: str, field: str, message: str, skip: SkipReason | None = None) -> Finding:
    return Finding(Severity.WARNING, subject, field, message, skip)


def info(subject: str, field: str, message: str, skip: SkipReason | None = None) -> Finding:
    return Finding(Severity.INFO, subject, field, message, skip)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 80, 80
_REPR.maxlong = 40

_PLAIN = re.compile(r"[A-Za-z0-9._:-]{1,253}")


def shown(value: object, limit: int = 80) -> str:
    """Quote an untrusted value for a message: printable ASCII only, bounded length.

    Values from Kubernetes objects reach logs and terminals; a newline or an escape sequence in an
    annotation must not forge a log line or repaint a terminal.
    """
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return _REPR.repr(value)
    # reprlib bounds the work too: a YAML alias bomb is a huge list only when fully printed.
    text = value if isinstance(value, str) else _REPR.repr(value)
    cut = len(text) > limit
    return ascii(text[:limit]) + ("..." if cut else "")


def subject(kind: str, namespace: object, name: object) -> str:
    """`Service default/web`, with hostile names quoted by `shown`."""
    parts = [
        part if isinstance(part, str) and _PLAIN.fullmatch(part) else shown(part)
        for part in (namespace, name)
    ]
    return f"{kind} {parts[0]}/{parts[1]}"
