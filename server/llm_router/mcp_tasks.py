"""The Tasks extension, ``io.modelcontextprotocol/tasks`` (MCP 2026-07-28), for ``complete``.

A client that declares the extension in a request's ``_meta`` clientCapabilities gets, for a
``complete`` whose arguments are valid, a ``CreateTaskResult`` (``resultType: "task"``) at once,
instead of waiting for the answer. The task is the call's kept answer (``answers``): its taskId is
the call's request_id, its TTL ``[ledger] keep_answers_s`` after the call ends, its
``statusMessage`` what the call is doing (which model is asked, attempt n/m, a fallback, text
streaming in). ``tasks/get`` returns it, with the ``CallToolResult`` once it is ``completed`` (a
tool error, ``isError``, is ``completed`` too: no JSON-RPC error happens in a ``complete``);
``tasks/cancel`` cancels the call (its hold freed, one ``cancelled`` ledger row), acknowledged once
it ended; ``tasks/update`` has nothing to take (no task of ours asks for input) and is
acknowledged. A task is its caller's tag's: another tag's is as unknown as one that never was
(-32602). ``tasks/*`` from a request that did not declare the extension is -32021.

Applied to the low-level server the way ``MCPServer`` applies an extension, through its public
surface: its methods as request handlers, its settings advertised, its interceptor composed
around ``tools/call``. Without the extension declared, or without keeping (``keep_answers_s`` 0),
or on a handshake-era connection, a ``complete`` is answered as ever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from mcp.server import Server
from mcp.server.context import CallNext, HandlerResult
from mcp.server.extension import Extension, MethodBinding, RequestHandler, compose_tool_call_handler
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolRequestParams,
    RequestParams,
)
from mcp_types.jsonrpc import MISSING_REQUIRED_CLIENT_CAPABILITY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from .access import check_mcp, rows_tag
from .answers import Kept, iso
from .mcp_calls import ABORT_WAIT_S, AS_TASK, kept_result
from .mcp_state import Ctx, ServerState, Wire, caller_access
from .types import Forbidden

__all__ = ["EXTENSION_ID", "POLL_INTERVAL_MS", "Tasks", "declared", "install", "task_created"]

EXTENSION_ID = "io.modelcontextprotocol/tasks"
POLL_INTERVAL_MS = 1000
"""Suggested to pollers: a second is short beside an LLM's answer, and a ``tasks/get`` costs a dict lookup."""
_STATUS = {"working": "working", "cancelled": "cancelled"}
"""A kept call's status as a task's; every other (ok, error, refused) is ``completed``."""


class TaskParams(RequestParams):
    task_id: str = Field(min_length=1, max_length=128)


class UpdateParams(TaskParams):
    input_responses: dict[str, Any] = Field(default_factory=dict)


def declared(ctx: Ctx) -> bool:
    """Whether this request declared the extension in its ``_meta`` clientCapabilities."""
    meta = ctx.meta or {}
    caps = meta.get(CLIENT_CAPABILITIES_META_KEY)
    extensions = caps.get("extensions") if isinstance(caps, Mapping) else None
    return isinstance(extensions, Mapping) and EXTENSION_ID in extensions


def _task(kept: Kept, keep_s: float, redact: Any) -> dict[str, Any]:
    ttl_s = keep_s if kept.expires is None else kept.expires - kept.created
    out: dict[str, Any] = {
        "taskId": kept.request_id, "status": _STATUS.get(kept.status, "completed"),
        "createdAt": iso(kept.created), "lastUpdatedAt": iso(kept.updated),
        "ttlMs": int(ttl_s * 1000), "pollIntervalMs": POLL_INTERVAL_MS,
    }
    if kept.message:
        out["statusMessage"] = redact(kept.message)
    return out


def task_created(kept: Kept, keep_s: float) -> Wire:
    """The ``CreateTaskResult`` of a ``complete`` run as a task."""
    return {"resultType": "task", **_task(kept, keep_s, str)}


class Tasks(Extension):
    """See the module's docstring."""

    identifier = EXTENSION_ID

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def methods(self) -> Sequence[MethodBinding]:
        return (MethodBinding("tasks/get", TaskParams, self.get), MethodBinding("tasks/update", UpdateParams, self.update),
                MethodBinding("tasks/cancel", TaskParams, self.cancel))

    async def intercept_tool_call(self, params: CallToolRequestParams, ctx: Ctx, call_next: CallNext) -> HandlerResult:
        if (params.name != "complete" or ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS or not declared(ctx)
                or not self.state.engine.answers.enabled):
            return await call_next(ctx)
        token = AS_TASK.set(True)
        try:
            return await call_next(ctx)
        finally:
            AS_TASK.reset(token)

    def _find(self, ctx: Ctx, task_id: str, doing: str) -> Kept:
        if not declared(ctx):
            raise MCPError(MISSING_REQUIRED_CLIENT_CAPABILITY,
                           f"Missing required client capability: {EXTENSION_ID} (declare it in this request's "
                           f"_meta[{CLIENT_CAPABILITIES_META_KEY!r}].extensions)",
                           data={"requiredCapabilities": {"extensions": {EXTENSION_ID: {}}}})
        try:
            access = caller_access(ctx, tokens=self.state.tokens)
            check_mcp(access, f"{doing} a task")
        except Forbidden as e:
            raise MCPError(INVALID_REQUEST, str(e), data=e.to_dict()) from None
        answers = self.state.engine.answers
        kept = answers.get(task_id, tag=rows_tag(access))
        if kept is None:  # another tag's task is as unknown as one that never was
            raise MCPError(INVALID_PARAMS, f"Failed to {doing} task: no task {task_id[:128]!r} for this caller. A task "
                           f"is a complete call, kept {answers.keep_s:g} s after it ends; "
                           f"{answers.count(tag=rows_tag(access))} are kept for this caller (llm-router://answers "
                           "lists them)", data={"taskId": task_id[:128]})
        return kept

    async def get(self, ctx: Ctx, params: TaskParams) -> dict[str, Any]:
        kept = self._find(ctx, params.task_id, "retrieve")
        out = _task(kept, self.state.engine.answers.keep_s, self.state.redact)
        if out["status"] == "completed":
            out["result"] = kept_result(self.state, caller_access(ctx, tokens=self.state.tokens), kept)
        return {"resultType": "complete", **out}

    async def update(self, ctx: Ctx, params: UpdateParams) -> dict[str, Any]:
        self._find(ctx, params.task_id, "update")
        return {"resultType": "complete"}  # nothing is ever asked of the client: every response is ignored

    async def cancel(self, ctx: Ctx, params: TaskParams) -> dict[str, Any]:
        kept = self._find(ctx, params.task_id, "cancel")
        if not kept.ended and kept.scope is not None:
            kept.scope.cancel()
            # Acknowledged once the call has recorded its row and freed its hold (bounded).
            with anyio.move_on_after(ABORT_WAIT_S):
                await kept.done.wait()
        return {"resultType": "complete"}


def install(server: Server[Any], state: ServerState, call_tool: RequestHandler) -> Tasks:
    """Apply the extension to ``server`` (whose ``tools/call`` is ``call_tool``), as ``MCPServer``
    applies one."""
    tasks = Tasks(state)
    for method in tasks.methods():
        server.add_request_handler(method.method, method.params_type, method.handler)
    server.extensions[tasks.identifier] = tasks.settings()
    server.add_request_handler("tools/call", CallToolRequestParams, compose_tool_call_handler([tasks], call_tool))
    return tasks
