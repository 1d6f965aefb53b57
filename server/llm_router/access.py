"""Who may do what: the role an HTTP token carries, and what each role is shown. In one place.

A token is ``tag=token[:role]`` (``http_app`` parses it). Three roles:

* ``admin`` — every tool, every resource, ``/metrics`` with its per-tag series, for every tag and
  every scope. Over stdio (one local user) and over HTTP without tokens (loopback only, one local
  user too) the caller is an admin.
* ``member`` (the default) — ``complete`` and ``route_explain`` billed to its own tag; reads only its
  own tag's rows, prompts and spend (``cost_report``, ``llm-router://ledger``, ``.../{date}``,
  ``llm-router://budgets``); may lower, never raise nor remove, its own tag's daily and monthly
  limits. Limits every tag shares (``global``, ``provider:NAME``) it sees by their limit, tier and
  period, never by what is spent or held: from those a member could work out what the other tags
  spent. Other tags' limits it does not see at all. Not ``/metrics`` (cost by model is everyone's).
* ``metrics`` — ``GET /metrics`` only (without per-tag series); every MCP request is refused.

The MCP surface asks this module before it acts (``check_*``) and passes what it returns through
the views (``*_view``) on the way out. An admin's results pass unchanged and at no cost.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from .types import (
    AllAttemptsFailed,
    AttemptRecord,
    BudgetExceeded,
    Forbidden,
    NoRoute,
    RouterError,
    usd_str,
    usd_to_nusd,
)

__all__ = [
    "ACCESS_SCOPE_KEY",
    "LOCAL",
    "ROLES",
    "SHARED_NOTE",
    "Access",
    "Role",
    "check_budget_change",
    "check_rating",
    "check_mcp",
    "close_role",
    "error_view",
    "limits_view",
    "mask",
    "providers_view",
    "may",
    "parse_role",
    "report_tag",
    "result_view",
    "rows_tag",
    "rows_view",
]

Role = Literal["admin", "member", "metrics"]
ROLES: tuple[Role, ...] = ("member", "admin", "metrics")
ACCESS_SCOPE_KEY = "llm_router.access"
"""Where the HTTP guard leaves the caller's ``Access`` in the ASGI scope, for ``mcp_server``."""


@dataclass(frozen=True, slots=True)
class Access:
    """Who is asking: a role, and the tag of the token (None without tokens: stdio, or HTTP
    without tokens, where the ``tag`` argument says whom to bill)."""

    role: Role
    tag: str | None = None


LOCAL = Access("admin")
"""The one local user: stdio, or HTTP on loopback without tokens."""


def parse_role(text: str) -> Role | None:
    """The role named by ``text``, or None when it names none."""
    return text if text in ROLES else None


def close_role(text: str) -> str | None:
    """The role ``text`` looks like a misspelling of (for a "did you mean")."""
    close = difflib.get_close_matches(text.lower(), ROLES, n=1, cutoff=0.6)
    return close[0] if close else None


def may(access: Access) -> str:
    """What this caller's role may do, in words (said with every refusal)."""
    if access.role == "metrics":
        return "only read /metrics (GET); MCP needs a member or admin token"
    if access.role == "member":
        own = f"tag:{access.tag}"
        return (f"call complete and route_explain (billed to its own tag {access.tag!r}) and rate its own tag's "
                f"requests; read cost_report, "
                f"llm-router://ledger and llm-router://budgets for its own tag only (limits every tag shares by "
                f"their tier, not their spend); and lower, never raise or remove, its own tag's daily or monthly "
                f"limit (set_budget scope {own!r}). An admin token may do the rest")
    return "do everything"


def _who(access: Access) -> str:
    return f"the {access.role} token of tag {access.tag!r}" if access.tag is not None else f"a {access.role} caller"


def _refuse(access: Access, problem: str, field_name: str | None = None) -> Forbidden:
    return Forbidden(f"{problem} is not allowed for {_who(access)}", role=access.role, may=may(access), field_name=field_name)


# -- what each role may do --------------------------------------------------------------------


def check_mcp(access: Access, what: str) -> None:
    """A ``metrics`` token makes no MCP request (the HTTP guard already refuses it at ``/mcp``).

    Raises:
        Forbidden: for the ``metrics`` role.
    """
    if access.role == "metrics":
        raise _refuse(access, what)


def check_rating(access: Access, request_tag: str) -> None:
    """A member rates only the requests billed to its own tag (an admin, any).

    Raises:
        Forbidden: for another tag's request.
    """
    if access.role != "admin" and access.tag is not None and request_tag != access.tag:
        raise _refuse(access, "rating a request billed to another tag", "request_id")


def rows_tag(access: Access) -> str | None:
    """The only tag whose ledger rows this caller may read (None: every tag's)."""
    return None if access.role == "admin" else access.tag


def report_tag(access: Access, tag: str | None) -> str | None:
    """The tag a ``cost_report`` covers: what was asked for an admin, the member's own tag for a member.

    Raises:
        Forbidden: a member asked for another tag's spend.
    """
    if access.role == "admin":
        return tag
    if tag is not None and tag.strip() != access.tag:
        raise _refuse(access, f"cost_report for tag {tag.strip()[:128]!r}", "tag")
    return access.tag


async def check_budget_change(
    access: Access, scope: str, period: str, limit_usd: Decimal | None, in_force: Callable[[str, str], Awaitable[int | None]],
) -> None:
    """May this caller set ``scope``'s ``period`` limit to ``limit_usd`` (None removes it)? A member
    may only lower its own tag's limits: set one where there was none, or one at or below the one in
    force, which ``in_force(scope, period)`` reads (nano-dollars, None when there is none).

    Raises:
        Forbidden: naming the scope and what a member may set instead.
    """
    if access.role == "admin":
        return
    own = f"tag:{access.tag}"
    if access.role != "member" or scope != own:
        raise _refuse(access, f"set_budget on scope {scope[:140]!r}", "scope")
    if limit_usd is None or not limit_usd.is_finite():
        raise _refuse(access, f"removing the {own} {period} limit", "limit_usd")
    limit_nusd = usd_to_nusd(limit_usd)
    current_nusd = await in_force(scope, period)
    if current_nusd is not None and limit_nusd > current_nusd:
        raise _refuse(access, f"raising the {own} {period} limit from ${usd_str(current_nusd)} to ${usd_str(limit_nusd)}",
                      "limit_usd")


# -- what each role is shown ------------------------------------------------------------------

SHARED_NOTE = "every tag's spend counts against this limit: a member token is shown its tier, not what is spent or held"
_SHARED_KEYS = ("scope", "period", "limit_usd", "source", "tier", "period_start", "resets_at")


def _own(access: Access, scope: str) -> bool:
    return scope == f"tag:{access.tag}"


def _limit_view(access: Access, limit: Mapping[str, Any]) -> dict[str, Any] | None:
    """A limit as a member sees it: its own tag's whole; a shared one (global, provider) without
    spend, holds, share used or reclaims; another tag's not at all (None)."""
    scope = str(limit.get("scope", ""))
    if _own(access, scope):
        return dict(limit)
    if scope.startswith("tag:"):
        return None
    if "spent_usd" not in limit:  # per_request: a figure to fit under, with nothing spent in it
        return dict(limit)
    return {k: limit[k] for k in _SHARED_KEYS if k in limit} | {"note": SHARED_NOTE}


def limits_view(access: Access, limits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The limits (``llm-router://budgets``, ``cost_report``, ``set_budget``) this caller may see."""
    if access.role == "admin":
        return limits
    return [v for v in (_limit_view(access, b) for b in limits) if v is not None]


# Where spend of a limit appears in text the engine wrote (a refusal, a skipped attempt, a routing
# exclusion). Each form is produced by one line of code (types.BudgetExceeded, routing's budget
# step); tests build them with that code, so a change of wording there shows.
_EXCEEDED = re.compile(r"budget (?P<name>\S+ (?:daily|monthly)) of \$(?P<limit>[0-9.]+) would be exceeded: "
                       r"\$[0-9.]+ spent, \$[0-9.]+ held by calls in flight, ")
_RESTRICTED = re.compile(r"budget (?P<name>\S+ (?:daily|monthly)) of \$(?P<limit>[0-9.]+) is \d+% spent \(\$[0-9.]+\): ")
_LEFT = re.compile(r"(?P<name>\S+ (?:daily|monthly)) has \$[0-9.]+ left")


def mask(access: Access, text: str) -> str:
    """``text`` without what a limit shared by every tag has spent, holds or has left (a member's own
    tag's figures stay)."""
    if access.role == "admin" or "$" not in text:
        return text
    own = f"tag:{access.tag} "

    def exceeded(m: re.Match[str]) -> str:
        if (m["name"] + " ").startswith(own):
            return m[0]
        return f"budget {m['name']} of ${m['limit']} (shared by every tag) would be exceeded: "

    def restricted(m: re.Match[str]) -> str:
        if (m["name"] + " ").startswith(own):
            return m[0]
        return f"budget {m['name']} of ${m['limit']} (shared by every tag) is 90% spent or more: "

    def left(m: re.Match[str]) -> str:
        return m[0] if (m["name"] + " ").startswith(own) else f"{m['name']} has too little left"

    return _LEFT.sub(left, _RESTRICTED.sub(restricted, _EXCEEDED.sub(exceeded, text)))


def _attempts_view(access: Access, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**a, "error": mask(access, a["error"])} if isinstance(a.get("error"), str) else a for a in attempts]


def result_view(access: Access, tool: str, structured: dict[str, Any]) -> dict[str, Any]:
    """A tool's structured content as this caller may see it."""
    if access.role == "admin":
        return structured
    out = dict(structured)
    if tool == "complete":
        out["attempts"] = _attempts_view(access, out.get("attempts") or [])
        budget = dict(out.get("budget") or {})
        if budget.get("tightest"):
            budget["tightest"] = _limit_view(access, budget["tightest"])
        out["budget"] = budget
    elif tool == "route_explain":
        out["excluded"] = [{**x, "detail": mask(access, x["detail"])} if isinstance(x.get("detail"), str) else x
                           for x in out.get("excluded") or []]
        out["steps"] = [mask(access, s) for s in out.get("steps") or []]
    elif tool in ("cost_report", "set_budget"):
        out["budgets"] = limits_view(access, out.get("budgets") or [])
    return out


def providers_view(access: Access, providers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``llm-router://providers`` as this caller may see it: what was learned of each model is
    everyone's (like its latency and error rate), but the task types it was learned on are the
    callers' own labels, which may name another tag's work: a member sees the overall estimates
    only."""
    if access.role == "admin":
        return providers
    return [{**p, "models": [{**m, "quality": {k: v for k, v in m["quality"].items() if k != "by_task_type"}}
                             if "quality" in m else m for m in p["models"]]} for p in providers]


def rows_view(access: Access, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ledger rows (already only the member's own tag's) without the shared limits' figures that
    refusals and skipped attempts quote."""
    if access.role == "admin":
        return rows
    out = []
    for r in rows:
        r = dict(r)
        if isinstance(r.get("error"), str):
            r["error"] = mask(access, r["error"])
        if isinstance(r.get("attempts"), list):
            r["attempts"] = _attempts_view(access, r["attempts"])
        out.append(r)
    return out


class _SharedLimitExceeded(BudgetExceeded):
    """A refusal by a limit every tag shares, as a member sees it: the limit, what the call needed
    and when it resets, not what the other tags spent or hold."""

    def __init__(self, e: BudgetExceeded) -> None:
        RouterError.__init__(self, _shared_refusal_text(e))
        self.limit_name, self.limit_nusd, self.needed_nusd = e.limit_name, e.limit_nusd, e.needed_nusd
        self.spent_nusd = self.reserved_nusd = 0
        self.resets_at, self.restricted, self.request_id = e.resets_at, e.restricted, e.request_id

    def to_dict(self) -> dict[str, Any]:
        out = RouterError.to_dict(self)
        return out | {"limit": self.limit_name, "limit_usd": usd_str(self.limit_nusd), "needed_usd": usd_str(self.needed_nusd),
                      "resets_at": self.resets_at, "restricted": self.restricted, "shared": True}


def _shared_refusal_text(e: BudgetExceeded) -> str:
    when = f"; it resets at {e.resets_at}" if e.resets_at else ""
    if e.restricted:
        return (f"budget {e.limit_name} of ${usd_str(e.limit_nusd)}, shared by every tag, is 90% spent or more: from 90% "
                f"only free models are used, and none can take this call{when}. Name a free (local) model, or ask an "
                "admin to raise the limit.")
    return (f"budget {e.limit_name} of ${usd_str(e.limit_nusd)}, shared by every tag, would be exceeded: this call may "
            f"cost up to ${usd_str(e.needed_nusd)}, more than the limit has left once every tag's spend and calls in "
            f"flight are counted{when}. Lower max_tokens, ask for a cheaper model, or ask an admin to raise the limit.")


def error_view(access: Access, e: RouterError) -> RouterError:
    """A tool's failure as this caller may see it (the same type and code, shared figures left out).

    Regression: only refusals, failed chains and no-route errors were masked; any other error was
    shown as raised, and one may quote a refusal (``SpendNotRecorded`` does, with the shared
    limit's spent and held). Every message is masked now."""
    if access.role == "admin":
        return e
    shown: RouterError
    if isinstance(e, BudgetExceeded):
        if e.limit_name.endswith(" per_request"):
            return e
        if e.limit_name.startswith(f"tag:{access.tag} "):  # its own: every figure, and who can raise it
            own = BudgetExceeded(
                limit_name=e.limit_name, limit_nusd=e.limit_nusd, spent_nusd=e.spent_nusd, reserved_nusd=e.reserved_nusd,
                needed_nusd=e.needed_nusd, resets_at=e.resets_at, restricted=e.restricted,
                raise_it="Ask an admin to raise the limit (a member token may only lower it)",
            )
            own.request_id = e.request_id
            return own
        return _SharedLimitExceeded(e)
    if isinstance(e, AllAttemptsFailed):
        shown = AllAttemptsFailed(
            [AttemptRecord(**{**a.__dict__, "error": mask(access, a.error) if a.error else a.error}) for a in e.attempts],
            deadline_hit=e.deadline_hit,
        )
    elif isinstance(e, NoRoute):
        shown = NoRoute("", {m: mask(access, r) for m, r in e.reasons.items()})
    else:
        text = str(e)
        masked = mask(access, text)
        if masked == text:
            return e
        # The same error with its message masked: a copy of its attributes, not a new one built
        # with its own arguments (each type has its own), so its code and facts stay as they were.
        shown = type(e).__new__(type(e))
        shown.__dict__.update(e.__dict__)
    shown.args = (mask(access, str(e)),)
    shown.request_id = e.request_id
    return shown
