"""A config field (default, one-line meaning, check) and the checks fields share.

Below every registry: a training-time method (fer_jax.methods) declares its
options with these, and fer_jax.config_schema gathers them with its own fields.
"""
import dataclasses
from typing import Any, Callable, Optional

Check = Callable[[Any], Optional[str]]  # value -> error text, or None when fine


@dataclasses.dataclass(frozen=True)
class Field:
    default: Any
    doc: str
    check: Check


def one_of(*choices: Any) -> Check:
    return lambda v: None if v in choices else f"must be one of {list(choices)}"


def number(lo: float = float("-inf"), hi: float = float("inf"), integer: bool = False,
           lo_open: bool = False) -> Check:
    def check(v):
        kind = int if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, kind):
            return f"must be {'an integer' if integer else 'a number'}"
        if v < lo or v > hi or (lo_open and v == lo):
            return f"must be in {'(' if lo_open else '['}{lo}, {hi}]"
        return None
    return check


def boolean(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else "must be True or False"


def string(v: Any) -> Optional[str]:
    return None if isinstance(v, str) else "must be a string"


def string_tuple(v: Any) -> Optional[str]:
    ok = isinstance(v, (tuple, list)) and len(v) > 0 and all(isinstance(s, str) for s in v)
    return None if ok else "must be a non-empty tuple of strings"


def optional_string_tuple(v: Any) -> Optional[str]:
    ok = isinstance(v, (tuple, list)) and all(isinstance(s, str) for s in v)
    return None if ok else "must be a tuple of strings (empty for the default)"


def number_tuple(length: int) -> Check:
    def check(v):
        ok = (isinstance(v, (tuple, list)) and len(v) == length
              and all(isinstance(x, (int, float)) and x >= 0 for x in v))
        return None if ok else f"must be a tuple of {length} non-negative numbers"
    return check
