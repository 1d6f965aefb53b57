"""What the ledger stores and the errors it raises: request rows, limits to check, refusals, and
the few names both backends and their callers share."""

from __future__ import annotations

import operator
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..types import RouterError

__all__ = [
    "DIMENSIONS", "GROUPINGS", "HOST", "ROW_COLUMNS", "SUM_COLUMNS", "WRITER_SCHEMA", "LedgerStorageError",
    "LedgerUnavailable", "LimitCheck", "LimitsMoved", "Overrides", "RatedRequest", "RatingRow", "Refusal", "RequestRow",
    "ScopeKind",
    "SpareRequest", "alive", "check_grouping", "check_writer_schema", "now_iso",
]

ScopeKind = Literal["global", "provider", "tag"]
GROUPINGS = ("provider", "model", "task_type", "tag", "day")
SUM_COLUMNS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost_nusd", "reference_cost_nusd")
HOST = socket.gethostname()
DIMENSIONS = ("day", "provider", "model", "task_type", "tag")
"""The dimensions of ``day_totals``: one row per day and value of each (``day``'s value is the day)."""
class LedgerUnavailable(RouterError):
    """The ledger cannot be opened: no call can be budgeted, so none is made."""

    code = "ledger_unavailable"


class LedgerStorageError(RouterError):
    """A step the ledger's storage could not take: a full disk (or a file size limit), an I/O
    error, PostgreSQL unreachable. Nothing that step would have written was written; a paid
    call's row goes to the journal instead (``settling.settle``)."""

    code = "ledger_storage_error"
    retryable = True

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retryable": True}


WRITER_SCHEMA = 3
"""What this build's writers maintain (see ``schema.record_writer_schema`` and
``schema.writers_keep_limits_version_and_journal``)."""


def check_writer_schema(stored: str | None, where: str) -> None:
    """Refuse a ledger whose writers must maintain more than this build knows of.

    Raises:
        LedgerUnavailable: naming both versions and what to do.
    """
    need = int(stored) if stored is not None and stored.strip().isdigit() else 0
    if need > WRITER_SCHEMA:
        from .. import __version__

        raise LedgerUnavailable(
            f"the ledger {where} was upgraded by a newer llm-router-mcp: its writers must keep schema {need}, "
            f"and this build ({__version__}) knows schema {WRITER_SCHEMA} only, so the spend it recorded could "
            "be missed by the newer servers' budgets. Upgrade this server, or point it at another ledger"
        )


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One limit to hold: spend in [first_day, last_day] for a scope must stay within limit_nusd."""

    name: str
    scope_kind: ScopeKind
    scope_name: str | None
    first_day: str
    last_day: str
    limit_nusd: int
    resets_at: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused: the first limit it would break, with the figures."""

    check: LimitCheck
    spent_nusd: int
    reserved_nusd: int


@dataclass(frozen=True, slots=True)
class SpareRequest:
    """Ask ``record`` to keep this much on hold for the next call, under these checks."""

    checks: Sequence[LimitCheck]
    amount_nusd: int
    day: str
    provider: str
    tag: str
    ttl_s: float
    limits_version: int | None = None
    """The limits version ``checks`` were built from (see ``LimitsMoved``): no spare is kept on checks
    a newer ``set_budget`` has replaced. None: the checks are taken as they are."""


Overrides = dict[tuple[str, str], int | None]
"""Limits set with ``set_budget``: (scope, period) -> nano-dollars (None: removed)."""


@dataclass(frozen=True, slots=True)
class LimitsMoved:
    """A reservation's answer when ``set_budget`` has changed the limits since its checks were
    built: the limits now in the store, read in the reservation's own transaction. No hold was made.

    Every ``set_budget`` raises the ledger's limits version in the transaction that writes the
    limit. A reservation given the version its checks were built from compares it with the one in
    the store, inside its own transaction (read in statements it runs anyway); when they differ it
    grants nothing and returns this, and the caller builds the checks anew from these limits and
    asks again (each attempt atomic): so from the moment ``set_budget`` returns, no process grants
    a hold under the limits it replaced."""

    version: int
    overrides: Overrides


@dataclass(slots=True)
class RequestRow:
    id: str
    ts: str
    day: str
    status: str
    tag: str = ""
    task_type: str = ""
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_nusd: int = 0
    cost_usd: str = "0"
    cost_estimated: int = 0
    prices: str | None = None
    reference_cost_nusd: int | None = None
    latency_ms: int = 0
    attempts: str = "[]"
    error_code: str | None = None
    error: str | None = None
    prompt_hash: str | None = None
    prompt: str | None = None
    strategy: str | None = None

    def values(self) -> tuple[Any, ...]:
        return _row_values(self)

    def totals_values(self) -> tuple[Any, ...]:
        """Parameters of the day_totals rows this row adds to, one per dimension (in the order of
        DIMENSIONS), each as (dim, key, day, errors, input, output, cached, cost, reference cost)."""
        day = self.day
        sums = (0 if self.status == "ok" else 1, self.input_tokens, self.output_tokens, self.cached_tokens,
                self.cost_nusd, self.reference_cost_nusd or 0)
        values: list[Any] = []
        for dim in DIMENSIONS:
            values += (dim, getattr(self, dim) or "", day, *sums)
        return tuple(values)

    def estimated_values(self) -> tuple[Any, ...]:
        """(day, provider, model, tag, task_type, cost): what a row whose usage was estimated adds
        to ``estimated_rollups``."""
        return (self.day, self.provider or "", self.model or "", self.tag, self.task_type, self.cost_nusd)

    def rollup_values(self) -> tuple[Any, ...]:
        """(day, provider, model, tag, task_type, errors, input, output, cached, cost, reference cost):
        what this row adds to its rollup."""
        return (
            self.day,
            self.provider or "",
            self.model or "",
            self.tag,
            self.task_type,
            0 if self.status == "ok" else 1,
            self.input_tokens,
            self.output_tokens,
            self.cached_tokens,
            self.cost_nusd,
            self.reference_cost_nusd or 0,
        )


ROW_COLUMNS = list(RequestRow.__dataclass_fields__)
_row_values = operator.attrgetter(*ROW_COLUMNS)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if sys.platform == "win32":
        # There os.kill(pid, 0) does not probe: it terminates the process. Expiry reclaims instead.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_grouping(group_by: str, where: dict[str, str] | None) -> None:
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {GROUPINGS}")
    for column in where or {}:
        if column not in GROUPINGS:
            raise ValueError(f"cannot filter on {column!r}")




RatingSource = Literal["caller", "judge"]


@dataclass(frozen=True, slots=True)
class RatedRequest:
    """What a rating needs to know of the request it rates (``LedgerBase.rated_request``)."""

    id: str
    tag: str
    task_type: str
    provider: str | None
    model: str | None
    """The model name as the row has it (without the provider)."""
    status: str

    @property
    def ref(self) -> str | None:
        return f"{self.provider}:{self.model}" if self.provider and self.model else None


@dataclass(frozen=True, slots=True)
class RatingRow:
    """One rating of one answered request: by the caller (``rate``) or by the judge. A request has
    at most one of each source; a later one replaces it. ``model`` is the ref that answered and
    ``task_type`` the request's, copied here so estimates survive the request rows' pruning."""

    request_id: str
    source: RatingSource
    ts: str
    """UTC, ISO 8601 with milliseconds (``now_iso``)."""
    tag: str
    model: str
    task_type: str
    score: float
    """1 to 5 (a caller's is whole; the judge's is the mean of its criteria)."""
    comment: str | None = None
    criteria: str | None = None
    """The judge's scores by criterion, as JSON (None for a caller's rating)."""
    rater: str = ""
    """Who rated: the judge model's ref, or empty for the caller."""
