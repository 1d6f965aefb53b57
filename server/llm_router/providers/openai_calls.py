"""Tool calls in an OpenAI Chat Completions answer: read from a whole message, or assembled from a
stream's ``delta.tool_calls`` pieces (the first piece of a call carries its id and name, later
ones pieces of its ``function.arguments``, each by its ``index``). Read as sent, unchecked:
``OpenAIProvider`` turns each into a ``ToolCall``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RawCall", "raw_calls", "Call", "fold_calls"]

RawCall = tuple[Any, Any, Any]
"""A tool call as upstream sent it: ``(id, name, arguments)``, none of them checked yet."""


def raw_calls(message: dict[str, Any]) -> list[RawCall]:
    """The tool calls of an answer's message (``tool_calls``, or the legacy ``function_call``)."""
    calls: list[RawCall] = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        calls.append((call.get("id"), function.get("name"), function.get("arguments")))
    if legacy := message.get("function_call"):
        calls.append((None, legacy.get("name"), legacy.get("arguments")))
    return calls


@dataclass(slots=True)
class Call:
    """One tool call as a stream assembles it: its id and name from the first piece, its
    arguments in pieces."""

    id: Any = None
    name: Any = None
    pieces: list[Any] = field(default_factory=list)

    def raw(self) -> RawCall:
        pieces = self.pieces
        arguments = pieces[0] if len(pieces) == 1 else "".join(pieces) if pieces else None
        return self.id, self.name, arguments


def fold_calls(calls: dict[int, Call], delta: dict[str, Any]) -> None:
    """A stream delta's ``tool_calls`` pieces (or a legacy ``function_call`` piece) into ``calls``,
    by their ``index``. A piece without one continues the last call unless it opens a new id."""
    for piece in delta.get("tool_calls") or ():
        index = piece.get("index")
        if type(index) is not int:
            index = len(calls) if piece.get("id") or not calls else max(calls)
        _fold(calls.setdefault(index, Call()), piece.get("id"), piece.get("function") or {})
    if legacy := delta.get("function_call"):
        _fold(calls.setdefault(-1, Call()), None, legacy)


def _fold(call: Call, call_id: Any, function: dict[str, Any]) -> None:
    if call_id:
        call.id = call_id
    if name := function.get("name"):
        call.name = name  # some servers repeat the name in every piece
    if (arguments := function.get("arguments")) is not None and arguments != "":
        call.pieces.append(arguments)
