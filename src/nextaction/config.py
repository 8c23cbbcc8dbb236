"""Strict, typed configuration: TOML files and ``--set section.key=value`` overrides.

Unknown sections or keys are errors that list the known ones (a typo must never be silently ignored).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from nextaction.errors import InputError

T = TypeVar("T")


def known_options(cls: type, data: Any, what: str) -> dict[str, Any]:
    """``data`` as keyword arguments for dataclass ``cls``, refusing unknown keys (a strict ``from_dict``)."""
    if not isinstance(data, Mapping):
        raise InputError(f"{what} options must be a mapping, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise InputError(f"unknown {what} option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return dict(data)


def build(cls: type[T], values: Mapping[str, Any], *, where: str) -> T:
    """Instantiate dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)} in {where}; known keys: {', '.join(known)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: {e}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except InputError as e:
                errors.append(str(e))
        raise InputError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise InputError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{where} must be a string, got {value!r}")
        return value
    return value


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (numbers, booleans, lists), else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_sections(
    path: str | Path | None, sets: list[str], *, sections: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Read a TOML file (optional) and apply ``section.key=value`` overrides; returns {section: {key: value}}."""
    out: dict[str, dict[str, Any]] = {s: {} for s in sections}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError("config file not found", path=p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"not valid TOML ({e})", path=p) from None
        for key, value in data.items():
            if key not in out or not isinstance(value, dict):
                raise InputError(f"unknown section [{key}]; known sections: {', '.join(sections)}", path=p)
            out[key].update(value)
    for item in sets:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise InputError(f"--set expects section.key=value (e.g. model.dim=128), got {item!r}")
        if section not in out:
            raise InputError(f"--set {item!r}: unknown section {section!r}; known: {', '.join(sections)}")
        # Nested keys (prepare.filters.min_user_events=5) address nested tables.
        *parents, leaf = name.split(".")
        target = out[section]
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise InputError(f"--set {item!r}: {parent} is a value, not a table")
        target[leaf] = parse_value(text.strip())
    return out
