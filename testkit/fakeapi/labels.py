"""Label selectors: parsing the ``labelSelector`` query parameter and matching objects' labels.

Only the equality-based grammar (comma-separated terms, all of which must hold): ``key``,
``!key``, ``key=value``, ``key==value`` and ``key!=value``, which also matches objects without
the key. The set-based grammar (``in``, ``notin``) is not served."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_KEY = rf"(?:{_NAME}/)?{_NAME}"  # an optional DNS-subdomain-like prefix, then a name
_LABEL_VALUE = rf"(?:{_NAME})?"
_TERM = re.compile(
    rf"^(?:(?P<not>!)\s*(?P<nkey>{_LABEL_KEY})"
    rf"|(?P<key>{_LABEL_KEY})\s*(?:(?P<op>==|!=|=)\s*(?P<value>{_LABEL_VALUE}))?)$"
)


@dataclass(frozen=True)
class Selector:
    """An equality-based label selector: terms of (key, op, value), all of which must hold.
    op is "exists", "!exists", "=" or "!="."""

    terms: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Selector:
        if not text.strip():
            return cls()
        terms: list[tuple[str, str, str]] = []
        for raw in text.split(","):
            match = _TERM.match(raw.strip())
            if match is None:
                raise ValueError(f"unable to parse requirement: {raw.strip()!r}")
            if match["not"]:
                terms.append((match["nkey"], "!exists", ""))
            elif match["op"] is None:
                terms.append((match["key"], "exists", ""))
            else:
                op = "!=" if match["op"] == "!=" else "="
                terms.append((match["key"], op, match["value"]))
        return cls(tuple(terms))

    def matches(self, labels: Any) -> bool:
        if not isinstance(labels, dict):  # absent, or garbage a test put on purpose
            labels = {}
        for key, op, value in self.terms:
            if op == "exists" and key not in labels:
                return False
            if op == "!exists" and key in labels:
                return False
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.terms
