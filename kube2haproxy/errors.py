"""The error hierarchy and the exit codes the CLI maps it to.

Every error the package raises on purpose is defined here. Those that can end a command derive
from `Kube2HAProxyError` and carry their exit code, so the CLI maps errors to codes in one
place; anything else reaching the CLI is a bug (70). `InvalidValue` and its kinds are what the
strict grammars and accessors raise about one value of the input: they become a finding, or a
usage error naming the flag, never an exit of their own.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the `kube2haproxy` command (documented in docs/dry-run.md)."""

    OK = 0
    DIFFERENCES = 1  # render --diff-against --exit-code: the configs differ
    CHECKS_FAILED = 1  # doctor: a check failed (the same "the answer is no" as diff's 1)
    USAGE = 2  # bad flags or arguments (click's own code for usage errors)
    INPUT = 3  # a manifest could not be read or parsed
    STRICT = 4  # --strict and at least one warning
    TEMPLATE = 5  # a template failed to load or render
    CHECK = 6  # `haproxy -c` rejected the rendered config
    ENVIRONMENT = 7  # cannot write the output, cannot run haproxy, a socket is unreachable
    INTERNAL = 70  # a bug: please report it with the traceback


class Kube2HAProxyError(Exception):
    """Base of every error raised on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL


class InputError(Kube2HAProxyError):
    """A manifest file or stream cannot be read or parsed."""

    exit_code = ExitCode.INPUT


class StrictError(Kube2HAProxyError):
    """`--strict` was given and the translation produced warnings."""

    exit_code = ExitCode.STRICT


class TemplateError(Kube2HAProxyError):
    """A Jinja2 template failed to load or to render; the message names the file and line."""

    exit_code = ExitCode.TEMPLATE


class CheckError(Kube2HAProxyError):
    """`haproxy -c` rejected a rendered config; `output` is HAProxy's own report."""

    exit_code = ExitCode.CHECK

    def __init__(self, message: str, *, output: str) -> None:
        super().__init__(message)
        self.output = output


class ConfigRefused(Kube2HAProxyError):
    """HAProxy refused to load a config that passed `haproxy -c` (a reload that failed, a
    start that exited); `output` is what HAProxy said. The same config is not sent again
    before something changes."""

    exit_code = ExitCode.CHECK

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class EnvironmentProblem(Kube2HAProxyError):
    """The world around us failed: a file cannot be written, haproxy cannot run, ..."""

    exit_code = ExitCode.ENVIRONMENT


class UnsupportedVersion(EnvironmentProblem):
    """An HAProxy older than the oldest supported one."""


class HAProxyUnavailable(EnvironmentProblem):
    """HAProxy did not answer, or not in time (a socket unreachable, a stalled process, a
    reload not confirmed before its timeout): what it runs is unknown, and the same config is
    tried again after a backoff."""


class UnexpectedAnswer(HAProxyUnavailable):
    """HAProxy's Data Plane API answered a request with a status the caller does not handle;
    the message names the endpoint, the status and the API's own message. An HAProxy that
    cannot be driven for now: the same config is tried again after a backoff."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class AccessRefused(EnvironmentProblem):
    """HAProxy's Data Plane API refused our credentials (401) or the operation (403). Nothing
    was changed, nothing is remembered as refused: tried again after a backoff, and reported
    until an operator fixes the user or its password."""


class RuntimeUpdateError(Kube2HAProxyError):
    """A runtime update could not be applied as planned; the caller falls back to a reload."""


class InvalidValue(ValueError):
    """One value of the input is unusable; the message says what was expected."""


class GrammarError(InvalidValue):
    """A value does not belong to its grammar (grammar.py)."""


class FieldError(InvalidValue):
    """A field of an object has the wrong type or shape (resources.py)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ZoneError(InvalidValue):
    """A DNS zone or name server name that cannot be published (dns.py)."""


class KeepalivedError(InvalidValue):
    """A keepalived setting that cannot be written into its config (keepalived.py)."""


class UnsafeValueError(InvalidValue):
    """A value the renderer refuses to print into haproxy.cfg (render.py)."""
