"""Prometheus metrics for ``/metrics`` in HTTP mode (prometheus-client is imported only there).

Counters and histograms are fed by ``mcp_server`` after each tool call (``Metrics.tool_done``);
circuit and budget gauges are read from the engine when Prometheus scrapes (``Metrics.refresh``).
Labels are bounded sets (tools, configured models, error codes, budget scopes): never anything a
caller can invent. Budget gauges cover the global limits and those of configured providers; a
``tag:NAME`` limit appears only in an admin's scrape, and only for a tag the server knows (a token's
or the config's ``[budget.tags]``), so no number of ``set_budget`` calls adds a series.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .types import AllAttemptsFailed, RouterError

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["BUDGET_TIERS", "CIRCUIT_STATES", "Metrics"]

CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
BUDGET_TIERS = {"normal": 0, "cautious": 1, "restricted": 2, "exhausted": 3}
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


class Metrics:
    """One registry per server (not the process-global one), so several can live in one process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.tool_calls = Counter("llm_router_tool_calls", "MCP tool calls by tool and outcome (ok, or the error code).",
                                  ["tool", "outcome"], registry=r)
        self.tool_latency = Histogram("llm_router_tool_latency_seconds", "MCP tool call latency.", ["tool"],
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.requests = Counter("llm_router_requests", "complete calls by the model that answered (or was tried last) "
                                "and status (ok, or the error code).", ["provider", "model", "status"], registry=r)
        self.latency = Histogram("llm_router_request_latency_seconds", "complete latency end to end (fallbacks "
                                 "included), by the model that answered.", ["provider", "model"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("llm_router_tokens", "Tokens by model and kind (input, output, cached).",
                              ["provider", "model", "kind"], registry=r)
        self.cost = Counter("llm_router_cost_usd", "Spend in USD, from provider-reported usage.", ["provider", "model"],
                            registry=r)
        self.fallbacks = Counter("llm_router_fallbacks", "Models given up on within a complete call, by model and "
                                 "error code (the call moved on to the next model, or failed).",
                                 ["model", "error_code"], registry=r)
        self.circuit = Gauge("llm_router_circuit_state", "Circuit breaker per model: 0 closed, 1 half-open, 2 open.",
                             ["model"], registry=r)
        self.budget_tier = Gauge("llm_router_budget_tier", "Budget tier per limit: 0 normal, 1 cautious (50%), "
                                 "2 restricted (90%), 3 exhausted.", ["scope", "period"], registry=r)
        self.budget_spent = Gauge("llm_router_budget_spent_usd", "Spent in the current period, per limit.",
                                  ["scope", "period"], registry=r)
        self.budget_limit = Gauge("llm_router_budget_limit_usd", "The limit, per limit.", ["scope", "period"], registry=r)

    def tool_done(self, tool: str, seconds: float, result: Any = None, error: RouterError | None = None) -> None:
        """Called by the MCP surface after every tool call."""
        self.tool_calls.labels(tool, "ok" if error is None else error.code).inc()
        self.tool_latency.labels(tool).observe(seconds)
        if tool != "complete":
            return
        if error is None and result is not None:
            provider, model = result.model.split(":", 1)
            self.requests.labels(provider, model, "ok").inc()
            self.latency.labels(provider, model).observe(result.latency_ms / 1000)
            u = result.usage
            for kind, n in (("input", u.input_tokens), ("output", u.output_tokens), ("cached", u.cached_tokens)):
                if n:
                    self.tokens.labels(provider, model, kind).inc(n)
            cost = Decimal(result.cost_usd)
            if cost:
                self.cost.labels(provider, model).inc(float(cost))
            attempts = [(a.model, a.outcome, a.error_code) for a in result.attempts]
        elif isinstance(error, AllAttemptsFailed):
            attempts = [(a.model, a.outcome, a.error_code) for a in error.attempts]
            last = next((m for m, outcome, _ in reversed(attempts) if outcome != "skipped"), None)
            provider, model = last.split(":", 1) if last else ("", "")
            self.requests.labels(provider, model, error.code).inc()
        else:
            if error is not None and error.code != "invalid_input":
                self.requests.labels("", "", error.code).inc()
            return
        # A model that failed (after its retries) is a fallback away from it: count one per model.
        failed: dict[str, str] = {}
        for model_ref, outcome, code in attempts:
            if outcome == "error":
                failed[model_ref] = code or "error"
            elif outcome == "ok":
                failed.pop(model_ref, None)
        for model_ref, code in failed.items():
            self.fallbacks.labels(model_ref, code).inc()

    async def refresh(self, engine: Engine, *, tags: frozenset[str] = frozenset()) -> None:
        """Read circuit states and budget figures as of now (called on each scrape). ``tags``: the
        tags whose limits this scrape may show (an admin's: the known ones; anyone else's: none).

        Everything is read before any gauge changes, and nothing is awaited after: a scrape that
        renders right after this returns shows exactly what it read, whoever scrapes meanwhile."""
        providers = engine.providers_status()
        budgets = await engine.budgets()
        configured = {p["name"] for p in providers}
        self.circuit.clear()
        for provider in providers:
            for m in provider["models"]:
                self.circuit.labels(m["model"]).set(CIRCUIT_STATES.get(m["health"]["circuit"], 0))
        for gauge in (self.budget_tier, self.budget_spent, self.budget_limit):
            gauge.clear()
        for b in budgets:
            kind, _, name = b["scope"].partition(":")
            if not (kind == "global" or (kind == "provider" and name in configured) or (kind == "tag" and name in tags)):
                continue
            labels = (b["scope"], b["period"])
            self.budget_limit.labels(*labels).set(float(b["limit_usd"]))
            if "spent_usd" in b:  # per_request limits have no period to spend in
                self.budget_spent.labels(*labels).set(float(b["spent_usd"]))
                self.budget_tier.labels(*labels).set(BUDGET_TIERS.get(b["tier"], 0))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
