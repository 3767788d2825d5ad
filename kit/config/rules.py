"""What a config field accepts, as data: a kind, a range or a list of names; and the words
that say so in a refusal. Pure: it knows no field of the schema."""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What one field accepts: a kind (bool, int, float, str or a config class), then a range
    for numbers (">= 1", "> 0", "[0, 1)", ...) or the names a string may take. With `many`
    the field is a tuple whose items each follow the rule; `may_be_empty` lets that tuple, or
    a free-form name, be empty."""

    kind: type
    range: str = ""
    names: tuple[str, ...] = ()
    many: bool = False
    may_be_empty: bool = False
    distinct: bool = False



def accepts(rule: Rule, value: Any) -> bool:
    if not rule.many:
        return _accepts_one(rule, value)
    return (isinstance(value, tuple) and (rule.may_be_empty or len(value) > 0)
            and all(_accepts_one(rule, item) for item in value)
            and (not rule.distinct or len(set(value)) == len(value)))


def _accepts_one(rule: Rule, value: Any) -> bool:
    # bool is an int to Python, and True for an epoch count is a mistake, never a 1.
    if rule.kind is bool or isinstance(value, bool):
        return rule.kind is bool and isinstance(value, bool)
    if rule.kind is int:
        return isinstance(value, numbers.Integral) and _within(value, rule.range)
    if rule.kind is float:
        return (isinstance(value, numbers.Real) and math.isfinite(value)
                and _within(value, rule.range))
    if rule.kind is str:
        if not isinstance(value, str):
            return False
        if rule.names:
            return value in rule.names
        return (value == "" and rule.may_be_empty) or re.fullmatch(r"[\w.-]+", value) is not None
    return isinstance(value, rule.kind)


def _within(value: float, interval: str) -> bool:
    """Whether value lies in ">= a", "> a" or a bracketed interval such as "(0, 1]"."""
    if not interval:
        return True
    if interval.startswith(">="):
        return value >= float(interval[2:])
    if interval.startswith(">"):
        return value > float(interval[1:])
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    return above and below


def describe(rule: Rule) -> str:
    """What a rule accepts, in words for the end of `expected ...`."""
    one = _describe_one(rule)
    if not rule.many:
        return one
    count = "any number of" if rule.may_be_empty else "one or more"
    return f"a list of {count} items, each {one}" + (", none repeated" if rule.distinct else "")


def _describe_one(rule: Rule) -> str:
    if rule.names:
        return "one of " + ", ".join(rule.names)
    if rule.kind is bool:
        return "true or false"
    if rule.kind is str:
        name = "a name (letters, digits, '.', '-' or '_')"
        return name + (" or nothing" if rule.may_be_empty and not rule.many else "")
    if rule.kind not in (int, float):
        return f"a {rule.kind.__name__}"
    noun = "an integer" if rule.kind is int else "a number"
    if not rule.range:
        return noun
    if rule.range.startswith(">"):
        return f"{noun if rule.kind is int else 'a finite number'} {rule.range}"
    return f"{noun} in {rule.range}"
