"""Strings that match a regular expression (a JSON Schema ``pattern``), made up from the
expression itself: what the mock provider puts in a string its schema constrains.

Generated from the expression as Python's own parser reads it: JSON Schema's expressions are
ECMA-262's, which for what schemas use (classes, repeats, groups, alternatives, anchors, ``\\d``,
``\\w``, ``\\s``) is the same language. ``re._parser`` is the stdlib's parser, with no type
stubs, hence the ``Any`` it is held in. A string made is kept only when the compiled expression
finds it (``re.search``, as JSON Schema applies ``pattern``): lookarounds and the rarer constructs
are tried, and a miss means None, never a wrong string.
"""

from __future__ import annotations

import importlib
import random
import re
import warnings
from functools import lru_cache
from typing import Any

__all__ = ["from_pattern"]

_PARSER: Any = importlib.import_module("re._parser")
_CONSTANTS: Any = importlib.import_module("re._constants")
_CATEGORY_CHARS = {
    "CATEGORY_DIGIT": "0123456789",
    "CATEGORY_NOT_DIGIT": "abcxyz",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": "abcxyz019",
    "CATEGORY_WORD": "abcxyz019_",
    "CATEGORY_NOT_WORD": "-. ",
}
_PLAIN = "abcdefghijklmnopqrstuvwxyz0123456789"
_MOST_STEPS = 4096
"""Steps (characters, repeats) one string may take: ``(a{1000}){1000}`` is refused, not made."""


def from_pattern(pattern: str, rng: random.Random, least: int, most: int | None) -> str | None:
    """A string ``pattern`` matches (searched, as JSON Schema does) within the length bounds, or
    None when a few tries find none (an expression beyond the generator, or bounds it cannot meet)."""
    parsed = _parsed(pattern)
    if parsed is None:
        return None
    tree, compiled = parsed
    for _ in range(12):
        try:
            text = _emit(tree, rng, {}, [_MOST_STEPS])
        except (ValueError, KeyError, RecursionError):
            return None
        if least <= len(text) and (most is None or len(text) <= most) and compiled.search(text):
            return text
    return None


@lru_cache(maxsize=256)
def _parsed(pattern: str) -> tuple[Any, re.Pattern[str]] | None:
    """An expression parsed once (a tool's schema is offered again on every turn)."""
    try:
        with warnings.catch_warnings():
            # "possible nested set" and the like: Python's hints about its own syntax, not ours to show
            warnings.simplefilter("ignore")
            return _PARSER.parse(pattern), re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


def _emit(tree: Any, rng: random.Random, groups: dict[int, str], left: list[int]) -> str:
    """A string the parsed expression ``tree`` matches; ``left`` counts down the steps allowed
    (ValueError past them)."""
    out: list[str] = []
    left[0] -= 1  # a call costs a step too: ``(){1000000000}`` repeats nothing, endlessly
    for op, arg in tree:
        left[0] -= 1
        if left[0] < 0:
            raise ValueError("the expression asks for too long a string")
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append(next(c for c in _PLAIN if ord(c) != arg))
        elif name == "ANY":
            out.append(rng.choice(_PLAIN))
        elif name == "IN":
            out.append(_in_class(arg, rng))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            high = low + 3 if high == _CONSTANTS.MAXREPEAT else min(high, low + 3)
            out.extend(_emit(sub, rng, groups, left) for _ in range(rng.randint(low, high)))
        elif name == "SUBPATTERN":
            group, _, _, sub = arg
            text = _emit(sub, rng, groups, left)
            if group is not None:
                groups[group] = text
            out.append(text)
        elif name == "ATOMIC_GROUP":
            out.append(_emit(arg, rng, groups, left))
        elif name == "BRANCH":
            out.append(_emit(rng.choice(arg[1]), rng, groups, left))
        elif name == "GROUPREF":
            left[0] -= len(groups[arg])
            out.append(groups[arg])
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue  # anchors and lookarounds: the final search says whether the string passes
        else:
            raise ValueError(name)
    return "".join(out)


def _in_class(items: Any, rng: random.Random) -> str:
    """One character of a ``[...]`` class (or of ``\\d``, ``\\w``, ``\\s``)."""
    if items and str(items[0][0]) == "NEGATE":
        banned = _in_class_all(items[1:])
        allowed = next((c for c in _PLAIN + "-_. " if c not in banned), None)
        if allowed is None:
            raise ValueError("a class that bans every character tried")
        return allowed
    return rng.choice(_in_class_all(items))


def _in_class_all(items: Any) -> str:
    chars: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            chars.append(chr(arg))
        elif name == "RANGE":
            low, high = arg
            chars.extend(chr(c) for c in range(low, min(high, low + 25) + 1))
        elif name == "CATEGORY":
            chars.extend(_CATEGORY_CHARS.get(str(arg), ""))
    if not chars:
        raise ValueError("empty class")
    return "".join(chars)
