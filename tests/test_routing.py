"""Routing as a pure function: candidates → filters → scores → a Decision that explains itself."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llm_router.budget import BudgetSnapshot, Limit, LimitState
from llm_router.catalog import Catalog
from llm_router.config import settings_from_dict
from llm_router.ledger import LimitCheck
from llm_router.routing import Decision, Excluded, RouteRequest, decide
from llm_router.types import BudgetExceeded, InvalidInput, NoRoute, usd_to_nusd

from .conftest import make_settings


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(make_settings(tmp_path))


RULES = {"code_generation": ("anthropic:claude-sonnet-4-5", "openai:gpt-4o", "ollama:llama3.1")}
ALL_UP = {"anthropic": (True, "ok"), "openai": (True, "ok"), "gemini": (True, "ok"), "ollama": (True, "ok")}


def snapshot(*states: LimitState, per_request: int | None = None) -> BudgetSnapshot:
    return BudgetSnapshot(day="2026-11-23", tag="", states=list(states), per_request_nusd=per_request)


def state(scope: str, limit: str, spent: str, reserved: str = "0") -> LimitState:
    kind, _, name = scope.partition(":")
    check = LimitCheck(f"{scope} daily", kind if name else "global", name or None, "2026-11-23", "2026-11-23",  # type: ignore[arg-type]
                       usd_to_nusd(limit), "2026-11-24T00:00:00+00:00")
    return LimitState(Limit(scope, "daily", usd_to_nusd(limit), "config"), check, usd_to_nusd(spent), usd_to_nusd(reserved))


def route(catalog: Catalog, budget: BudgetSnapshot | None = None, *, availability: Any = None,
          circuit: Any = None, latency: Any = None, error_rate_of: Any = None, **kw: Any) -> Decision:
    req = RouteRequest(**{"input_tokens_bound": 200, "input_tokens_typical": 50, "max_tokens": 500, **kw})
    return decide(
        req, catalog=catalog, rules=RULES, default_strategy="balanced", default_quality="medium",
        availability=availability or ALL_UP, circuit=circuit or (lambda ref: (True, None)),
        latency_of=latency or (lambda ref: None), budget=budget or snapshot(),
        error_rate_of=error_rate_of or (lambda ref: None),
    )


def reasons(d: Decision) -> dict[str, str]:
    return {e.model: e.reason for e in d.excluded}


def test_a_manual_override_is_tried_in_the_order_given(catalog: Catalog) -> None:
    d = route(catalog, models=("openai:gpt-4o", "anthropic:claude-haiku-4-5"))
    assert [c.ref for c in d.chain] == ["openai:gpt-4o", "anthropic:claude-haiku-4-5"]
    assert d.source == "override" and d.steps[0].startswith("manual override")


def test_an_override_beats_a_task_type_rule(catalog: Catalog) -> None:
    d = route(catalog, models=("gemini:gemini-2.5-flash",), task_type="code_generation")
    assert [c.ref for c in d.chain] == ["gemini:gemini-2.5-flash"]


def test_a_task_type_rule_gives_the_chain_and_keeps_its_order(catalog: Catalog) -> None:
    d = route(catalog, task_type="code_generation", strategy="cheapest")
    assert [c.ref for c in d.chain] == list(RULES["code_generation"])
    assert d.source == "rule:code_generation"


def test_an_unknown_task_type_falls_back_to_every_model_and_says_so(catalog: Catalog) -> None:
    d = route(catalog, task_type="poetry")
    assert d.source == "catalog" and "no rule for task_type 'poetry'" in d.steps[0]


def test_an_unknown_model_in_an_override_is_an_input_error_with_suggestions(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput) as info:
        route(catalog, models=("openai:gpt-4-o",))
    assert info.value.field == "model" and "did you mean" in str(info.value)


OPEN = {"state": "open", "retry_at": "2030-03-17T17:46:40+00:00", "retry_in_s": 27.5, "failures": 3}


def test_providers_without_a_key_and_open_circuits_are_excluded_with_reasons(catalog: Catalog) -> None:
    availability = {**ALL_UP, "openai": (False, "no API key: set the environment variable OPENAI_API_KEY")}
    d = route(catalog, availability=availability,
              circuit=lambda ref: (False, OPEN) if ref.startswith("gemini:") else (True, None))
    r = reasons(d)
    assert r["openai:gpt-4o"] == "no_key" and r["gemini:gemini-2.5-flash"] == "circuit_open"
    assert not any(c.ref.startswith(("openai:", "gemini:")) for c in d.chain)


def test_an_open_circuit_says_when_it_is_tried_again_in_iso_8601_and_seconds_never_a_unix_time(
    catalog: Catalog,
) -> None:
    d = route(catalog, circuit=lambda ref: (False, OPEN) if ref.startswith("gemini:") else (True, None))
    out = next(e.to_dict() for e in d.excluded if e.model == "gemini:gemini-2.5-flash")
    assert out == {
        "model": "gemini:gemini-2.5-flash", "reason": "circuit_open",
        "detail": "circuit open after 3 failed calls in a row; next try at 2030-03-17T17:46:40+00:00 (in 27.5 s)",
        "retry_at": "2030-03-17T17:46:40+00:00", "retry_in_s": 27.5,
    }
    assert "unix" not in json.dumps(d.explain())


def test_a_half_open_circuit_says_it_waits_on_its_trial_call(catalog: Catalog) -> None:
    d = route(catalog, models=("openai:gpt-4o",),
              circuit=lambda ref: (False, {"state": "half_open", "failures": 3}))
    assert "half-open" in d.excluded[0].detail and "trial call is in flight" in d.excluded[0].detail


def test_models_named_by_an_override_that_routing_leaves_out_are_in_the_walk_where_they_stand(
    catalog: Catalog,
) -> None:
    d = route(catalog, models=("gemini:gemini-2.5-flash", "openai:gpt-4o", "anthropic:claude-haiku-4-5"),
              circuit=lambda ref: (False, OPEN) if ref == "openai:gpt-4o" else (True, None))
    walk = [(x.model, x.reason) if isinstance(x, Excluded) else (x.ref, "candidate") for x in d.walk]
    assert walk == [("gemini:gemini-2.5-flash", "candidate"), ("openai:gpt-4o", "circuit_open"),
                    ("anthropic:claude-haiku-4-5", "candidate")]


def test_from_the_catalog_only_open_circuits_of_models_good_enough_are_listed_as_skipped(catalog: Catalog) -> None:
    d = route(catalog, quality="high", circuit=lambda ref: (False, OPEN) if ref.startswith("openai:") else (True, None))
    listed = [x.model for x in d.walk if isinstance(x, Excluded)]
    assert listed and all(m.startswith("openai:") for m in listed)
    assert all(catalog.get(m).tier in ("high", "critical") for m in listed)
    assert [x.ref for x in d.walk if not isinstance(x, Excluded)] == [c.ref for c in d.chain]


def test_models_whose_window_is_too_small_are_skipped(catalog: Catalog) -> None:
    d = route(catalog, input_tokens_typical=199_800, input_tokens_bound=800_000, quality="low")
    r = reasons(d)
    assert r["anthropic:claude-haiku-4-5"] == "context_too_small"  # 200k window
    assert all(c.entry.context_window >= 200_300 for c in d.chain if c.entry.context_known)


def local_catalog() -> Catalog:
    """A local model with no window configured (so only assumed), beside one genai-prices sizes."""
    return Catalog(settings_from_dict({"providers": [
        {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "models": ["my-finetune"],
         "prices": {"my-finetune": {"input_per_mtok": 0, "output_per_mtok": 0}}},
        {"name": "openai", "kind": "openai", "api_key_env": "X", "models": ["gpt-4o-mini"]},
    ]}, source="test"))


def test_a_window_that_is_only_assumed_never_excludes_a_model() -> None:
    """The catalog guesses 128,000 tokens for a local model; the server may well run it with
    more (or less). Only the server can say: routing keeps the model and says why."""
    catalog = local_catalog()
    local = catalog.get("local:my-finetune")
    assert not local.context_known and local.context_window == 128_000
    d = route(catalog, availability={"local": (True, "ok"), "openai": (True, "ok")},
              input_tokens_typical=199_800, input_tokens_bound=800_000, quality="low")
    assert [c.ref for c in d.chain] == ["local:my-finetune"]
    assert any("only assumed: local:my-finetune" in step for step in d.steps)
    known = catalog.get("openai:gpt-4o-mini")  # 128k, from genai-prices
    assert known.context_known and reasons(d)[known.ref] == "context_too_small"


def test_a_window_the_server_stated_excludes_like_a_configured_one() -> None:
    catalog = local_catalog()
    assert catalog.learn_window("local:my-finetune", 2_048, "reported by the server in an error")
    d = route(catalog, availability={"local": (True, "ok"), "openai": (True, "ok")}, input_tokens_typical=1_800,
              max_tokens=500, quality="low")
    assert reasons(d)["local:my-finetune"] == "context_too_small"
    assert "2048-token window (reported by the server in an error)" in d.excluded[0].detail


def test_the_quality_floor_excludes_weaker_models_unless_named(catalog: Catalog) -> None:
    d = route(catalog, quality="high")
    assert all(c.entry.tier in ("high", "critical") for c in d.chain)
    assert reasons(d)["openai:gpt-4o-mini"] == "below_quality"
    named = route(catalog, quality="critical", models=("openai:gpt-4o-mini",))
    assert [c.ref for c in named.chain] == ["openai:gpt-4o-mini"]


def test_best_puts_the_most_capable_model_first(catalog: Catalog) -> None:
    d = route(catalog, strategy="best", quality="low")
    assert d.chain[0].ref == "anthropic:claude-opus-4-5"
    assert set(d.chain[0].parts) == {"capability", "cost"}


def test_cheapest_puts_the_free_local_model_first(catalog: Catalog) -> None:
    d = route(catalog, strategy="cheapest", quality="low")
    assert d.chain[0].ref == "ollama:llama3.1"
    costs = [c.typical_nusd for c in d.chain]
    assert costs == sorted(costs)


def test_fastest_prefers_the_model_with_the_lowest_observed_latency(catalog: Catalog) -> None:
    latency = {"gemini:gemini-2.5-flash": 80.0, "openai:gpt-4o-mini": 900.0}
    d = route(catalog, strategy="fastest", latency=latency.get)
    assert d.chain[0].ref == "gemini:gemini-2.5-flash"


def test_balanced_prefers_a_model_that_meets_the_quality_without_overshooting(catalog: Catalog) -> None:
    d = route(catalog, quality="medium")
    assert d.chain[0].entry.tier == "medium"
    assert set(d.chain[0].parts) == {"quality_fit", "cost", "speed", "reliability"}


def test_recent_errors_lower_a_model_in_balanced_ranking(catalog: Catalog) -> None:
    first = route(catalog, quality="medium").chain[0].ref
    flaky = route(catalog, quality="medium", latency=None, error_rate_of=lambda ref: 0.9 if ref == first else 0.0)
    assert flaky.chain[0].ref != first
    assert next(c for c in flaky.chain if c.ref == first).parts["reliability"] == pytest.approx(0.1)


def test_max_cost_and_the_per_request_limit_exclude_dear_models(catalog: Catalog) -> None:
    d = route(catalog, quality="low", max_cost_nusd=usd_to_nusd("0.001"))
    assert reasons(d)["anthropic:claude-opus-4-5"] == "over_max_cost"
    assert all(c.worst_case_nusd <= usd_to_nusd("0.001") for c in d.chain)
    d = route(catalog, snapshot(per_request=usd_to_nusd("0.001")), quality="low")
    assert reasons(d)["anthropic:claude-opus-4-5"] == "over_budget"


def test_a_model_whose_worst_case_does_not_fit_the_remaining_budget_is_excluded(catalog: Catalog) -> None:
    d = route(catalog, snapshot(state("global", "1", "0.99", "0.005")), quality="low")  # $0.01 left
    detail = {e.model: e.detail for e in d.excluded}
    assert "global daily has $0.01 left" in detail["anthropic:claude-opus-4-5"]
    assert all(c.worst_case_nusd <= usd_to_nusd("0.01") for c in d.chain)


def test_budget_tiers_normal_cautious_restricted(catalog: Catalog) -> None:
    assert route(catalog, snapshot(state("global", "10", "4.9"))).budget_tier == "normal"
    cautious = route(catalog, snapshot(state("global", "10", "5")), quality="low")
    assert cautious.budget_tier == "cautious"
    assert [c.worst_case_nusd for c in cautious.chain] == sorted(c.worst_case_nusd for c in cautious.chain)
    restricted = route(catalog, snapshot(state("global", "10", "9", "0.5")), quality="low")
    assert restricted.budget_tier == "restricted"
    assert [c.ref for c in restricted.chain] == ["ollama:llama3.1"]


def test_a_provider_limit_only_restricts_that_provider(catalog: Catalog) -> None:
    d = route(catalog, snapshot(state("provider:anthropic", "1", "0.95")), quality="low")
    assert d.budget_tier == "normal"
    assert reasons(d)["anthropic:claude-haiku-4-5"] == "budget_restricted"
    assert any(c.ref.startswith("openai:") for c in d.chain)


def test_a_call_no_limit_leaves_room_for_is_refused_naming_the_limit_with_routings_figures(catalog: Catalog) -> None:
    """The refusal is the decision's own: the limit that left the first budget-excluded model out,
    and that model's worst case as routing judged it (not worked out again)."""
    ref = "openai:gpt-4o"
    d = route(catalog, snapshot(state("global", "1", "0.999999", "0.0000005")), models=(ref,))
    error = d.refusal()
    assert not d.chain and isinstance(error, BudgetExceeded) and not error.restricted
    assert (error.limit_name, error.limit_nusd, error.spent_nusd, error.reserved_nusd) == (
        "global daily", usd_to_nusd("1"), usd_to_nusd("0.999999"), usd_to_nusd("0.0000005"))
    assert error.needed_nusd == catalog.get(ref).worst_case_nusd(200, 500)
    assert error.resets_at == "2026-11-24T00:00:00+00:00"


def test_a_call_over_the_per_request_limit_is_refused_naming_it(catalog: Catalog) -> None:
    ref = "openai:gpt-4o"
    d = route(catalog, snapshot(per_request=1), models=(ref,))
    error = d.refusal()
    assert isinstance(error, BudgetExceeded) and error.limit_name == "global per_request"
    assert (error.limit_nusd, error.spent_nusd, error.needed_nusd) == (1, 0, catalog.get(ref).worst_case_nusd(200, 500))


def test_a_call_only_paid_models_could_take_past_90_percent_is_refused_as_restricted(catalog: Catalog) -> None:
    d = route(catalog, snapshot(state("global", "10", "9.5")), models=("openai:gpt-4o",))
    error = d.refusal()
    assert isinstance(error, BudgetExceeded) and error.restricted and error.limit_name == "global daily"
    assert "95% spent" in str(error)


def test_a_call_no_model_fits_for_other_reasons_is_refused_listing_every_exclusion(catalog: Catalog) -> None:
    d = route(catalog, availability={**ALL_UP, "openai": (False, "no key: set OPENAI_API_KEY")},
              models=("openai:gpt-4o",))
    error = d.refusal()
    assert isinstance(error, NoRoute)
    assert error.reasons == {"openai:gpt-4o": "no_key: no key: set OPENAI_API_KEY"}
    assert str(error) == "no model can take this call. openai:gpt-4o: no_key: no key: set OPENAI_API_KEY"


def test_a_model_with_no_known_price_cannot_be_budgeted(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    providers = [p.model_dump() for p in settings.providers] + [
        {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["mystery-model"]}
    ]
    catalog = Catalog(make_settings(tmp_path, providers=providers))
    d = route(catalog, quality="low", availability={**ALL_UP, "local": (True, "ok")})
    assert reasons(d)["local:mystery-model"] == "no_price"


def test_the_explanation_carries_chain_scores_exclusions_and_costs(catalog: Catalog) -> None:
    explained = route(catalog, quality="high").explain()
    assert set(explained) == {"chain", "source", "strategy", "quality", "budget_tier", "estimated_cost_usd",
                              "candidates", "excluded", "steps"}
    head = explained["candidates"][0]
    assert head["model"] == explained["chain"][0]
    assert Decimal(head["estimated_cost_usd"]) <= Decimal(head["worst_case_cost_usd"])
    assert explained["steps"][-1] == f"first choice: {explained['chain'][0]}"
