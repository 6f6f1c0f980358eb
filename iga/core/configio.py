"""Configs that travel: nested dataclasses <-> plain JSON dicts (docs/style.md, "Configs
that travel": ``to_dict``/``from_dict`` round-trip the whole tree, so a run folder stores
it and evaluation rebuilds exactly what was trained).

Generic over the dataclass tree: a field whose type is a dataclass is written as a dict
and read back into that dataclass (``DistillConfig.base: BaseConfig``, its
``student: StudentConfig``, and any nested config added later), tuples as lists and back.
Reading is strict: an unknown key or a value of the wrong kind is a ``ConfigFileError``
naming the file and the dotted key; a key absent from the file takes its default.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any


class ConfigFileError(ValueError):
    """A stored config cannot be read back; the message names the file and the key."""


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass tree as JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _options(hint: Any) -> tuple[Any, ...]:
    """The members of a union type (``str | None``), or the type alone."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _convert(value: Any, hint: Any, where: str) -> Any:
    for option in _options(hint):
        if value is None and option is type(None):
            return None
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return from_dict(option, value, where)
        origin = typing.get_origin(option)
        if origin is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if option is Any:
            return value
    raise ConfigFileError(f"{where}: {value!r} is not a valid {hint}")


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """``cls(**data)`` with nested dataclasses, tuples and kinds restored and checked.

    ``where`` prefixes every message (a file name, then dotted keys).
    """
    if not isinstance(data, dict):
        raise ConfigFileError(f"{where}: expected an object of {cls.__name__} fields, got {data!r}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigFileError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}"
        )
    hints = _hints(cls)
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigFileError(f"{where}: {err}") from err


def read_config(cls: type, path: Path) -> Any:
    """The ``cls`` stored as JSON at ``path``; every failure names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"{path}: cannot read it ({err})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigFileError(f"{path}: not valid JSON ({err}); the file is corrupted") from err
    return from_dict(cls, data, str(path))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"base": {"steps": 3}}`` -> ``{"base.steps": 3}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(stored: dict, given: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: stored X, given Y`` for every dotted key whose values differ."""
    a, b = flatten(stored), flatten(given)
    keys = sorted((set(a) | set(b)) - set(ignore))
    return [
        f"{key}: stored {a.get(key, '(absent)')!r}, given {b.get(key, '(absent)')!r}"
        for key in keys
        if a.get(key) != b.get(key)
    ]


def merge_given(stored: dict, given: dict, defaults: dict) -> dict:
    """``stored`` overridden by the values of ``given`` that differ from ``defaults``.

    What ``--resume`` means on the command line: a flag left at its default takes the
    run's stored value; a flag given with another value is kept, so that comparing the
    result with ``stored`` reports it as a difference.
    """
    merged = dict(stored)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(stored.get(key), dict):
            merged[key] = merge_given(stored[key], value, defaults.get(key) or {})
        elif key not in defaults or value != defaults[key] or key not in stored:
            merged[key] = value
    return merged
