"""``llm-router://answers`` and ``llm-router://answers/{request_id}``: the calls kept after they ended
(``answers``), as their caller may see them.

A member sees only its own tag's calls; another tag's id, an unknown one and an expired one are
the same -32002, which says what this caller does have (never whether another tag's exists). The
stored result passes through the same views (``access.result_view``, ``access.error_view``) as the
live result did.
"""

from __future__ import annotations

from typing import Any

from mcp.shared.exceptions import MCPError

from .access import Access, rows_tag
from .answers import Kept, iso
from .mcp_calls import kept_result
from .mcp_state import ServerState
from .mcp_surface import ANSWERS_URI, RESOURCE_NOT_FOUND

__all__ = ["answers_resource"]


def _times(kept: Kept) -> dict[str, Any]:
    return {"created": iso(kept.created), "updated": iso(kept.updated),
            "expires": iso(kept.expires) if kept.expires is not None else None}


def _listed(kept: Kept) -> dict[str, Any]:
    return {"request_id": kept.request_id, "model": kept.model, "status": kept.status, **_times(kept),
            "first_line": kept.first_line()}


def answers_resource(state: ServerState, access: Access, request_id: str | None) -> dict[str, Any]:
    """The listing (``request_id`` None) or one call, as JSON data.

    Raises:
        MCPError: RESOURCE_NOT_FOUND for an id this caller has no kept call of.
    """
    answers = state.engine.answers
    tag = rows_tag(access)
    if request_id is None:
        calls = answers.listing(tag=tag)
        return {"keep_answers_s": answers.keep_s, "answers": [_listed(k) for k in calls]}
    kept = answers.get(request_id, tag=tag)
    if kept is None:
        kept_now = answers.count(tag=tag)
        why = ("keeping answers is off ([ledger] keep_answers_s = 0)" if not answers.enabled else
               f"a call is kept {answers.keep_s:g} s after it ends, and {kept_now} are kept for this caller "
               f"({ANSWERS_URI} lists them)")
        raise MCPError(RESOURCE_NOT_FOUND, f"no kept answer {request_id[:64]!r}: {why}",
                       data={"uri": f"{ANSWERS_URI}/{request_id[:64]}"})
    result = kept_result(state, access, kept)
    if result is not None:
        result = {k: v for k, v in result.items() if k != "resultType"}
    return {"request_id": kept.request_id, "model": kept.model, "status": kept.status, "message": kept.message or None,
            **_times(kept), "result": result}
