"""`--set a.b=value` assignments applied to a frozen config, checked once when it is built."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import fields
from typing import Any

from kit.config.rules import Rule, describe
from kit.config.schema import SECTIONS, build, rules_of, to_dict
from kit.core.errors import KitError

__all__ = ["assignment_key", "override"]


def override(config: Any, assignments: list[str]) -> Any:
    """Apply `a.b=value` strings (for example `train.epochs=3`) to a frozen config.

    The assignments edit the config's fields as plain values and the result is built, and so
    checked, once: settings that depend on each other (`model.kind=seed` wants
    `model.head=dense`) pass in either order.
    """
    values = to_dict(config)
    for assignment in assignments:
        if "=" not in assignment:
            raise KitError(f"override {assignment!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, text = assignment_key(assignment), assignment.split("=", 1)[1].strip()
        _assign(type(config), values, key.split("."), text, SECTIONS[type(config)] + key)
    return build(type(config), values)


def assignment_key(assignment: str) -> str:
    """The dotted name an `a.b=value` assignment sets."""
    return assignment.split("=", 1)[0].strip()


def _assign(cls: Any, values: dict[str, Any], path: list[str], text: str, key: str) -> None:
    names = [f.name for f in fields(cls)]
    name = path[0]
    if name not in names:
        raise KitError(f"override {key!r}: {cls.__name__} has no field {name!r} "
                       f"({', '.join(names)})")
    kind = typing.get_type_hints(cls)[name]
    if dataclasses.is_dataclass(kind) and len(path) == 1:
        raise KitError(f"override {key!r}: a section, not a setting; set one of its fields, "
                       f"e.g. {key}.{fields(kind)[0].name}=...")
    if dataclasses.is_dataclass(kind):
        _assign(kind, values[name], path[1:], text, key)
    elif len(path) == 1:
        values[name] = _coerce(text, kind, key, rules_of(cls)[name])
    else:
        raise KitError(f"override {key!r}: {name!r} is a setting, not a section")


def _coerce(text: str, kind: Any, key: str, rule: Rule) -> Any:
    """A `--set` value's text as the field's type; text that cannot be one is refused with
    what the field accepts. Values of the right type are checked when the config is built."""
    try:
        return _parse(text, kind)
    except ValueError:
        raise KitError(f"{key}={text!r}: expected {describe(rule)}") from None


def _parse(text: str, kind: Any) -> Any:
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_parse(part.strip(), item) for part in text.split(",") if part.strip())
    return kind(text)
