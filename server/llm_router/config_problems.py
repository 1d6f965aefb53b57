"""A configuration's problems in the router's own words: each names its key (``providers[1]
(name = 'x').timeout_s``), says what is wrong and what is allowed, with a did-you-mean for a key
or value close to a real one. Pydantic's own text is never shown. ``config`` lists them all at once
as one ``ConfigProblems``.
"""

from __future__ import annotations

import re
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .types import ConfigError

__all__ = ["NOT_KEYS", "ConfigProblems", "keys_at", "unknown_key", "validation_problems"]


def _format_loc(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """Turn a pydantic error location into a TOML-style key (``providers[1].timeout_s`` → with names)."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and isinstance(node[item], dict) else None
            parts[-1] += f"[{item}]" if name is None else f"[{item}] (name = {name!r})"
        else:
            if item in ("function-after", "function-before"):
                continue
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts)


class ConfigProblems(ConfigError):
    """Every problem found in one configuration, listed at once, each naming its key.

    ``problems`` holds ``(key, message)`` pairs; ``key`` is the first problem's key."""

    def __init__(self, problems: list[tuple[str | None, str]], *, file: str) -> None:
        self.problems = problems
        if len(problems) == 1:
            key, message = problems[0]
            super().__init__(message, file=file, key=key)
            return
        lines = "".join(f"\n  {file} [{k}]: {m}" if k else f"\n  {file}: {m}" for k, m in problems)
        super().__init__(f"{len(problems)} problems:{lines}", file=file)
        self.key = problems[0][0]


NOT_KEYS = frozenset({"source", "demo"})
"""Settings fields that are not config keys: the loader sets them, a file may not."""


def _unwrap(tp: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` → ``X``."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin in (Union, UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else tp
    return tp


def keys_at(root: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The config keys allowed in the table at ``path`` (a pydantic error location) of ``root``."""
    tp: Any = root
    for item in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(item) if isinstance(item, str) else None
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]  # a list's item or a table's value
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [name for name in tp.model_fields if name not in NOT_KEYS]
    return []


def unknown_key(name: str, allowed: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (allowed: {', '.join(allowed)})" if allowed else "unknown key"


def _did_you_mean_value(value: Any, expected: str) -> str:
    """For a value outside a fixed list (``strategy = "cheap"``): the closest allowed one, if any."""
    import difflib

    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, re.findall(r"'([^']*)'", expected), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fold(key: str, msg: str) -> tuple[str | None, str]:
    """Our own validators start their message with the key ("routing.rules[0].chain: ..."): make it
    part of the key, so every problem names one."""
    head, sep, rest = msg.partition(": ")
    if sep and re.fullmatch(r"[a-z_][a-z0-9_.\[\]]*", head):
        if not key:
            return head, rest
        if key == head or key.endswith("." + head):
            return key, rest
        return f"{key}.{head}", rest
    return key or None, msg


_BOUNDS = {"greater_than": ("too small", "more than"), "greater_than_equal": ("too small", "at least"),
           "less_than": ("too large", "less than"), "less_than_equal": ("too large", "at most")}
_KINDS = {"int": "a whole number", "float": "a number", "decimal": "a number", "bool": "true or false",
          "string": "a string", "list": "a list", "dict": "a table", "model": "a table"}


def _wording(err: Any) -> str | None:
    """A validation problem in the config's own words (pydantic's text is never shown), or None
    for the checks this module words itself."""
    kind: str = err["type"]
    ctx = err.get("ctx") or {}
    shown = repr(err.get("input"))[:80]
    if kind in _BOUNDS:
        what, bound = _BOUNDS[kind]
        limit = next(iter(ctx.values()), None)
        if isinstance(limit, int | float):
            limit = f"{limit:g}"
        return f"{shown} is {what} (allowed: {bound} {limit})" if limit is not None else f"{shown} is {what}"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"{shown} is not allowed (allowed: {ctx.get('expected')})"
    if kind == "string_pattern_mismatch":
        return f"{shown} is not in the expected form (allowed: lower-case letters, digits and _ . - , starting with a letter or digit)"
    if kind == "string_too_long":
        return f"is too long (allowed: at most {ctx.get('max_length')} characters)"
    if kind in ("too_short", "too_long"):
        return f"has too {'few' if kind == 'too_short' else 'many'} items"
    if kind in ("decimal_max_places", "decimal_max_digits", "decimal_whole_digits"):
        return f"{shown} is more precise than a billionth of a dollar or too large (allowed: up to 9 decimal places)"
    head = kind.split("_", 1)[0]
    if kind.endswith(("_type", "_parsing")) and head in _KINDS:
        return f"{shown} is not {_KINDS[head]}"
    return None


def validation_problems(
    error: ValidationError, data: dict[str, Any], root: type[BaseModel]
) -> list[tuple[str | None, str]]:
    """``(key, message)`` for each problem pydantic found validating ``data`` as ``root``, in our words."""
    out: list[tuple[str | None, str]] = []
    for err in error.errors():
        loc = tuple(err["loc"])
        key = _format_loc(loc, data)
        if err["type"] == "extra_forbidden":
            out.append((key, unknown_key(str(loc[-1]), keys_at(root, loc[:-1]))))
            continue
        msg = _wording(err) or err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            hint = _did_you_mean_value(err.get("input"), str(err.get("ctx", {}).get("expected", "")))
            if not hint and loc[-1] == "kind" and "providers" in loc:
                hint = ' (any OpenAI-compatible server, such as vLLM, LM Studio or llama.cpp, is kind = "openai")'
            msg += hint
        out.extend(_fold(key, line) for line in msg.split("\n"))
    return out
