"""selectors: label selectors as `kubectl -l` writes them, parsed and matched.

`status -l` filters the services a controller reports by their labels, with the grammar of
Kubernetes' labels.Parse: requirements joined by commas, each `key`, `!key`, `key=value`
(`==`), `key!=value`, `key in (a,b)` or `key notin (a,b)`. Keys and values are checked as the
API server checks labels. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kube2haproxy.errors import GrammarError

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*"
_KEY = re.compile(rf"(?:{_PREFIX}/)?{_NAME}")
_VALUE = re.compile(rf"(?:{_NAME})?")
_REQUIREMENT = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<absent>[^\s,=!()]+)"
    r"|(?P<key>[^\s,=!()]+)(?:\s*(?P<op>==|=|!=)\s*(?P<value>[^\s,=!()]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?)\s*(?:,|$)"
)


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # "exists", "!", "=", "!=", "in", "notin"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "exists":
            return value is not None
        if self.operator == "!":
            return value is None
        if self.operator in ("=", "in"):
            return value is not None and value in self.values
        return value is None or value not in self.values  # != and notin: absent matches


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def parse(text: str) -> Selector:
    """A selector; GrammarError saying what is wrong otherwise. An empty text selects all."""
    requirements = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _REQUIREMENT.match(text, position)
        if match is None or match.end() == position:
            raise GrammarError(f"{text!r}: cannot read a label requirement at {text[position:]!r}")
        requirements.append(_requirement(match))
        position = match.end()
        if position == len(text) and text.endswith(","):
            raise GrammarError(f"{text!r}: a requirement is missing after the last comma")
    return Selector(tuple(requirements))


def _requirement(match: re.Match[str]) -> Requirement:
    if match["not"]:
        return Requirement(_key(match["absent"]), "!")
    key = _key(match["key"])
    if match["op"]:
        return Requirement(key, "!=" if match["op"] == "!=" else "=", _values([match["value"]]))
    if match["set"]:
        values = [v.strip() for v in match["values"].split(",")]
        if values == [""]:
            raise GrammarError(f"{match[0].strip()!r}: {match['set']} needs at least one value")
        return Requirement(key, match["set"], _values(values))
    return Requirement(key, "exists")


def _key(key: str) -> str:
    if not _KEY.fullmatch(key) or len(key.rpartition("/")[2]) > 63 or len(key) > 317:
        raise GrammarError(f"{key!r}: not a label key (name or prefix/name)")
    return key


def _values(values: list[str]) -> frozenset[str]:
    for value in values:
        if not _VALUE.fullmatch(value):
            raise GrammarError(f"{value!r}: not a label value")
    return frozenset(values)
