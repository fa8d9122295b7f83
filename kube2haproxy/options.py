"""options: how a settings field becomes a command-line flag and its environment variable.

Each field of a settings section (settings.py) declares its flag with `option()`: help text,
kind of value, limits, choices and other spellings. `option_specs` reads the declarations back
for the CLI (which builds its click options from them), the docs tests and the deploy tests;
`build` turns the values the CLI parsed into the frozen tree. Pure: no flag parsing here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class ValueKind(StrEnum):
    TEXT = "text"
    INT = "int"
    DURATION = "duration"  # HAProxy duration syntax on the command line, milliseconds in the field
    FLAG = "flag"
    PATH = "path"
    CHOICE = "choice"  # one of the field's `choices`


def option(
    flag: str,
    help: str,
    kind: ValueKind = ValueKind.TEXT,
    *,
    choices: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    **limits: int,
) -> dict[str, Any]:
    """The metadata of a settings field: its flag and how it reads. `aliases`: other spellings
    (kubectl's short flags, kube-proxy's names, the names of earlier releases, kept for a
    release); each long one also has its environment variable."""
    return {
        "flag": flag,
        "help": help,
        "kind": kind,
        "limits": limits,
        "choices": choices,
        "aliases": aliases,
    }


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One settings field as a command-line option."""

    section: str
    name: str
    flag: str
    help: str
    kind: ValueKind
    default: Any
    limits: dict[str, int]
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def envvar(self) -> str:
        return envvar(self.flag)

    @property
    def envvars(self) -> tuple[str, ...]:
        """The flag's variable, then those of its long aliases (former names)."""
        return (self.envvar, *(envvar(a) for a in self.aliases if a.startswith("--")))


def envvar(flag: str) -> str:
    return "KUBE2HAPROXY_" + flag.lstrip("-").upper().replace("-", "_")


def option_specs(
    sections: dict[str, type[Any]], only: tuple[str, ...] | None = None
) -> list[OptionSpec]:
    """The options of the given sections (section name -> dataclass; `only` those sections),
    in declaration order."""
    specs = []
    for section, section_type in sections.items():
        if only is not None and section not in only:
            continue
        for f in fields(section_type):
            meta = f.metadata
            specs.append(
                OptionSpec(
                    section,
                    f.name,
                    meta["flag"],
                    meta["help"],
                    meta["kind"],
                    f.default,
                    dict(meta["limits"]),
                    meta["choices"],
                    meta["aliases"],
                )
            )
    return specs


def sections_from(sections: dict[str, type[Any]], values: dict[str, Any]) -> dict[str, Any]:
    """Each section built from option values keyed by field name (missing keys keep their
    defaults). Field names are unique across sections: one flat namespace of options."""
    out: dict[str, Any] = {}
    for section, section_type in sections.items():
        names = {f.name for f in fields(section_type)}
        out[section] = section_type(**{k: v for k, v in values.items() if k in names})
    return out
