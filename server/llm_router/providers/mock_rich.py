"""How the mock provider answers a rich request: a tool call, JSON for a format, a text that says
what it saw (images, a tool's result); and what every mock answer shares: the stop strings.

Deterministic like the plain answers: every choice comes from the request's digest, so the same
request gets the same answer and a test or a demo can rely on it.

- Tools: with ``tool_choice`` ``required`` or a tool's name, one call (to the named tool; for
  ``required`` the first tool the last user turn names, else the first offered); with ``auto``,
  a call to the first tool offered whose name the last turn (a user's) mentions, else text;
  ``none``, or ``auto`` after a ``tool`` turn: text, which quotes the tool's result. A call's
  arguments are made valid for the tool's ``inputSchema`` (``mock_values``), its id derived from
  the digest (``call_`` and 24 hex digits, as ``translate.new_call_id`` makes).
- ``response_format``: the JSON text of a value made valid for the schema, or for ``json_object``
  a small object; streamed in pieces. Past ``max_tokens`` it is cut (finish ``length``), as a
  real model's would be.
- Images: the text says how many it saw, of which types and sizes; each counts ``IMAGE_TOKENS``
  input tokens.
- ``stop``: the text (a JSON text too, as a provider applies stop strings to whatever the model
  writes) ends before the first stop string in it, finish ``stop``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from ..content import FinishReason, ImagePart, ToolCall, ToolSpec
from ..types import CompletionRequest, InvalidRequest, Message
from .mock_values import WORDS, value_for

__all__ = ["IMAGE_TOKENS", "Answer", "answer", "call_id", "cut_at_stop", "estimate_tokens", "rich_key", "word_pieces", "words"]

IMAGE_TOKENS = 85
"""Input tokens the mock counts for each image, whatever its size: a small fixed figure (what
OpenAI documents for one low-detail image). ``images.image_tokens`` gives the same for kind
``mock``, so a mock call's reservation holds exactly what its usage then reports for images."""

_JSON_PIECE = 16
"""Characters of a JSON answer per streamed piece."""


def estimate_tokens(text: str) -> int:
    """A tokenizer stand-in: about four characters a token, as real tokenizers give for English."""
    return max(1, (len(text) + 3) // 4)


def words(digest: bytes, n: int) -> list[str]:
    """``n`` words chosen by the digest: the body of every mock text answer."""
    return [WORDS[(digest[i % len(digest)] + i) % len(WORDS)] for i in range(n)]


def word_pieces(text: str) -> list[str]:
    """A text as it streams: word by word, each but the first with the space before it."""
    first, *rest = text.split(" ")
    return [first, *(" " + w for w in rest)]


def call_id(digest: bytes, index: int) -> str:
    """A tool call's id, the same for the same request: ``call_`` and 24 hex digits."""
    return "call_" + hashlib.sha256(digest + b"tool call %d" % index).hexdigest()[:24]


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str | None:
    """``text`` up to the first stop string in it (the stop string left out), or None when
    none occurs."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(found)] if found else None


def rich_key(request: CompletionRequest) -> str:
    """What a rich request asks beyond its text, for the digest: the tools and the choice, the
    format, the images (type and size), the tool calls and results of earlier turns."""
    turns = [
        [m.role, m.name, m.tool_call_id, [[c.id, c.name, c.arguments] for c in m.tool_calls],
         [[i.mime_type, i.size_bytes, i.url] for i in m.images()]]
        for m in request.messages
    ]
    fmt = request.response_format
    return json.dumps(
        [[[t.name, t.input_schema] for t in request.tools], request.tool_choice,
         [fmt.type, fmt.schema] if fmt is not None else None, turns],
        sort_keys=True, separators=(",", ":"), default=str,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A mock answer before it is a ``Completion``: what to stream and what it counts."""

    text: str
    pieces: list[str]
    """The text as it streams (a tool call streams nothing)."""
    tool_calls: tuple[ToolCall, ...]
    input_tokens: int
    output_tokens: int
    finish: FinishReason


def answer(prefix: str, digest: bytes, request: CompletionRequest, input_tokens: int) -> Answer:
    """The answer to a rich request, ``input_tokens`` being what its text counts (the mock's
    plain count), to which the tools, the schema and the images are added here.

    Raises ``InvalidRequest`` when ``tool_choice`` names a tool that is not offered."""
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    input_tokens += _rich_input_tokens(request)
    tool = _tool_to_call(request)
    if tool is not None:
        arguments = value_for(tool.input_schema, rng)
        call = ToolCall(id=call_id(digest, 0), name=tool.name,
                        arguments=arguments if isinstance(arguments, dict) else {})
        spent = estimate_tokens(tool.name + json.dumps(call.arguments, separators=(",", ":")))
        return Answer("", [], (call,), input_tokens, min(spent, request.max_tokens), "tool_calls")
    notes = _notes(request)
    fmt = request.response_format
    if fmt is None:
        n_words = min(12 + digest[0] % 48, max(1, request.max_tokens))
        text = " ".join([prefix.rstrip(), *notes, *words(digest, n_words)])
        return _finished(text, word_pieces(text), request, input_tokens, cut_long=False)
    if fmt.type == "json_schema" and fmt.schema is not None:
        value = value_for(fmt.schema, rng)
    else:
        value = {"answer": " ".join(words(digest, 6 + digest[1] % 10)), **({"seen": " ".join(notes)} if notes else {})}
    text = json.dumps(value, ensure_ascii=False)
    pieces = [text[i:i + _JSON_PIECE] for i in range(0, len(text), _JSON_PIECE)]
    return _finished(text, pieces, request, input_tokens, cut_long=True)


def _finished(text: str, pieces: list[str], request: CompletionRequest, input_tokens: int, *,
              cut_long: bool) -> Answer:
    """The answer's end: cut at a stop string, or (``cut_long``) at ``max_tokens``; a text past
    ``max_tokens`` otherwise ends ``length`` as the plain answers do."""
    if request.stop:
        cut = cut_at_stop(text, request.stop)
        if cut is not None:
            return Answer(cut, _pieces_of(cut, pieces), (), input_tokens,
                          min(estimate_tokens(cut), request.max_tokens), "stop")
    output = estimate_tokens(text)
    if cut_long and output > request.max_tokens:
        text = text[:4 * request.max_tokens]
        return Answer(text, _pieces_of(text, pieces), (), input_tokens, request.max_tokens, "length")
    output = min(output, request.max_tokens)
    return Answer(text, pieces, (), input_tokens, output, "length" if output >= request.max_tokens else "stop")


def _pieces_of(text: str, pieces: list[str]) -> list[str]:
    """The streamed pieces that make ``text``, a prefix of what ``pieces`` make."""
    out: list[str] = []
    left = len(text)
    for piece in pieces:
        if left <= 0:
            break
        out.append(piece[:left])
        left -= len(piece)
    return [p for p in out if p]


def _tool_to_call(request: CompletionRequest) -> ToolSpec | None:
    if not request.tools or request.tool_choice == "none":
        return None
    last = request.messages[-1] if request.messages else None
    named = _mentioned(request.tools, last) if last is not None and last.role == "user" else None
    if request.tool_choice == "auto":
        return named
    if request.tool_choice == "required":
        return named or request.tools[0]
    chosen = next((t for t in request.tools if t.name == request.tool_choice), None)
    if chosen is None:
        offered = ", ".join(t.name for t in request.tools)
        raise InvalidRequest(f"tool_choice names {request.tool_choice!r}, which is not among the tools offered ({offered})")
    return chosen


def _mentioned(tools: tuple[ToolSpec, ...], turn: Message) -> ToolSpec | None:
    """The first tool offered whose name the turn mentions as a word of its own."""
    for tool in tools:
        if re.search(rf"(?<![\w-]){re.escape(tool.name)}(?![\w-])", turn.content, re.IGNORECASE):
            return tool
    return None


def _notes(request: CompletionRequest) -> list[str]:
    """What a text answer says it saw: the images, the result of the tool just called."""
    notes: list[str] = []
    images = [i for m in request.messages for i in m.images()]
    if images:
        seen = ", ".join(_described(i) for i in images)
        notes.append(f"(saw {len(images)} image{'s' if len(images) != 1 else ''}: {seen})")
    last = request.messages[-1] if request.messages else None
    if last is not None and last.role == "tool":
        result = last.content if len(last.content) <= 120 else last.content[:117] + "..."
        notes.append(f"(the tool {last.name or last.tool_call_id or 'called'} returned: {result})")
    return notes


def _described(image: ImagePart) -> str:
    if image.url is not None:
        return f"{image.mime_type} by URL"
    size = f"{image.width}x{image.height} " if image.width and image.height else ""
    return f"{image.mime_type} {size}{image.size_bytes} bytes"


def _rich_input_tokens(request: CompletionRequest) -> int:
    """Input tokens beyond the turns' text: the tools offered, the schema, the arguments of
    earlier tool calls (about four characters a token, as for text) and the images."""
    extra: list[Any] = [[t.name, t.description, t.input_schema] for t in request.tools]
    if request.response_format is not None and request.response_format.schema is not None:
        extra.append(request.response_format.schema)
    extra.extend([c.name, c.arguments] for m in request.messages for c in m.tool_calls)
    n = estimate_tokens(json.dumps(extra, ensure_ascii=False, separators=(",", ":"))) if extra else 0
    return n + IMAGE_TOKENS * sum(len(m.images()) for m in request.messages)
