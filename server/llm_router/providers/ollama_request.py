"""A rich request in Ollama's ``/api/chat`` words: tools, a model's earlier calls and their
results, images, and structured output (docs.ollama.com: Chat, Tool calling, Vision, Structured
outputs).

Only a request that asks for one of these comes here (``CompletionRequest.rich``); a plain text
request's body is built in ``ollama`` as it always was. What Ollama's wire format cannot carry is
refused before anything is sent (``InvalidRequest``), never dropped:

* a forced tool (``tool_choice`` ``required`` or a tool's name): ``/api/chat`` has no field for it;
* an image by URL: Ollama takes only the image's bytes (base64), and fetching a URL is not the
  adapter's business.
"""

from __future__ import annotations

from typing import Any

from ..content import ImagePart, ToolCall
from ..types import CompletionRequest, InvalidRequest, Message

__all__ = ["messages", "add_rich_fields"]


def messages(turns: tuple[Message, ...], *, provider: str, model: str) -> list[dict[str, Any]]:
    """Each turn as an ``/api/chat`` message. An assistant turn's earlier ``tool_calls`` go as
    Ollama sends them (``function`` with its ``name`` and ``arguments`` object); a ``tool`` turn
    is ``{"role": "tool", "content", "tool_name"}``, one message per result, in order (Ollama
    has no tool call ids to answer by: the name is what it matches a result to). Images go in the
    message's ``images`` list (base64), its text parts as ``content``."""
    called: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for turn in turns:
        message: dict[str, Any] = {"role": turn.role, "content": turn.content}
        if turn.parts:
            message["images"] = [_image(p, provider=provider, model=model) for p in turn.images()]
        if turn.tool_calls:
            message["tool_calls"] = [_call(c) for c in turn.tool_calls]
            called.update((c.id, c.name) for c in turn.tool_calls)
        if turn.role == "tool":
            name = turn.name or called.get(turn.tool_call_id or "")
            if name:
                message["tool_name"] = name
        out.append(message)
    return out


def add_rich_fields(body: dict[str, Any], request: CompletionRequest, *, provider: str, model: str) -> None:
    """``tools`` and ``format`` into ``body``, as the request asks.

    Raises:
        InvalidRequest: the request forces a tool, which Ollama cannot be told to do.
    """
    choice = request.tool_choice
    if choice not in ("auto", "none"):
        forced = "a call of some tool" if choice == "required" else f"a call of {choice!r}"
        raise InvalidRequest(
            f"{provider} cannot be asked for {forced}: Ollama's /api/chat has no tool_choice "
            f"(only tool_choice auto or none can be sent to it)",
            provider=provider,
            model=model,
        )
    if request.tools and choice == "auto":  # "none": the tools are not offered at all
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
            }
            for t in request.tools
        ]
    fmt = request.response_format
    if fmt is not None:
        # Ollama's native structured output: the JSON schema itself, or "json" for any object.
        body["format"] = fmt.schema if fmt.type == "json_schema" and fmt.schema is not None else "json"


def _call(call: ToolCall) -> dict[str, Any]:
    return {"function": {"name": call.name, "arguments": call.arguments}}


def _image(part: ImagePart, *, provider: str, model: str) -> str:
    if part.data is None:
        raise InvalidRequest(
            f"{provider} cannot take an image by URL: Ollama takes only an image's bytes "
            f"(send it as data, base64, with its mimeType)",
            provider=provider,
            model=model,
        )
    return part.data
