"""wire: frozen dataclasses to JSON values and back, for what a controller answers on /status.

`encode` turns a report (status.py, explain.py) into plain JSON values; `decode` reads them
back into the same dataclasses, checking every value against the field's declared type (str,
int, float, bool, None, tuples, string-keyed mappings, nested dataclasses), so a command that
asks a controller of another version, or something that is not a controller, gets a
`WireError` naming the field rather than a traceback. Pure.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from kube2haproxy.errors import InvalidValue

T = TypeVar("T")


class WireError(InvalidValue):
    """A JSON value that is not what the declared type says."""


def encode(value: object) -> Any:
    """Plain JSON values (dicts, lists, strings, numbers, booleans, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list | frozenset):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(cls: type[T], data: object, path: str = "") -> T:
    """`data` read as a `cls` (a frozen dataclass); WireError naming the field otherwise."""
    return typing.cast(T, _value(cls, data, path or cls.__name__))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value(kind: Any, data: object, path: str) -> object:
    origin = typing.get_origin(kind)
    if origin is types.UnionType or origin is typing.Union:
        for option in typing.get_args(kind):
            if option is type(None) and data is None:
                return None
        options = [o for o in typing.get_args(kind) if o is not type(None)]
        return _value(options[0], data, path) if len(options) == 1 else _fail(path, kind, data)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(data, list):
            _fail(path, "a list", data)
        return tuple(_value(item, v, f"{path}[{i}]") for i, v in enumerate(data))
    if origin in (dict, Mapping):
        _, item = typing.get_args(kind)
        if not isinstance(data, dict):
            _fail(path, "an object", data)
        return {str(k): _value(item, v, f"{path}.{k}") for k, v in data.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            _fail(path, "an object", data)
        hints = _hints(kind)
        values = {}
        for f in dataclasses.fields(kind):
            if f.name in data:
                values[f.name] = _value(hints[f.name], data[f.name], f"{path}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                _fail(f"{path}.{f.name}", "a value", "nothing")
        return kind(**values)
    if kind is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            _fail(path, "a number", data)
        return float(data)
    if kind in (str, int, bool):
        if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
            _fail(path, kind.__name__, data)
        return data
    raise TypeError(f"{path}: no wire form for {kind!r}")  # a bug: a type this module lacks


def _fail(path: str, expected: object, data: object) -> typing.NoReturn:
    shown = repr(data)
    raise WireError(f"{path}: expected {expected}, got {shown[:60]}")
