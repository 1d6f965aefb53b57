"""One result shape: what ``Engine.complete`` returns is what ``complete`` publishes, its output
schema generated from it, and that schema unchanged (clients validate every result against it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from llm_router.calls import CompleteResult
from llm_router.content import ToolCall
from llm_router.types import AttemptRecord, Usage

PUBLISHED_SCHEMA = Path(__file__).with_name("complete_output_schema.json")


def test_the_published_complete_schema_is_byte_for_byte_the_one_clients_validate_against() -> None:
    """The schema is generated from the result type; a change to the type must not change what
    clients were given (inline, no ``$ref``, no ``anyOf [..., null]``, the same titles)."""
    schema = CompleteResult.model_json_schema()
    assert json.dumps(schema, indent=1) + "\n" == PUBLISHED_SCHEMA.read_text()
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text and '"null"' not in text


@hypothesis_settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    finish=st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
    calls=st.one_of(st.none(), st.lists(st.tuples(st.text(min_size=1, max_size=8), st.dictionaries(st.text(max_size=5), st.integers())),
                                        min_size=1, max_size=2)),
    structured=st.one_of(st.none(), st.tuples(st.one_of(st.none(), st.integers(), st.dictionaries(st.text(max_size=5), st.booleans())))),
    method=st.one_of(st.none(), st.sampled_from(["server_tokenizer", "about_4_chars_per_token"])),
    tries=st.lists(
        st.tuples(
            st.sampled_from(["ok", "error", "skipped", "cancelled"]),
            st.one_of(st.none(), st.sampled_from(["rate_limited", "timeout"])),
            st.one_of(st.none(), st.text(max_size=20)),
            st.integers(0, 10_000),
            st.one_of(st.none(), st.integers(400, 599)),
            st.one_of(st.none(), st.just("0.0001")),
        ),
        min_size=1,
        max_size=4,
    ),
    tightest=st.one_of(st.none(), st.fixed_dictionaries({"scope": st.just("global"), "tier": st.just("normal")})),
    notes=st.one_of(st.none(), st.lists(st.text(max_size=10), min_size=1, max_size=2)),
)
def test_an_answer_dumps_to_exactly_the_published_complete_result(
    finish: str, calls: list[tuple[str, dict[str, int]]] | None, structured: tuple[Any] | None, method: str | None,
    tries: list[tuple[Any, ...]], tightest: dict[str, Any] | None, notes: list[str] | None,
) -> None:
    """The structured content is the result dumped: optional fields left out rather than null
    (but ``json``, present whenever a format was asked, null included), an attempt without its
    status (the ledger keeps it), the estimate's method only when estimated, keys in the schema's
    order, and valid against the published schema."""
    attempts = [AttemptRecord(f"p:m{i}", o, c, e, ms, status, cost) for i, (o, c, e, ms, status, cost) in enumerate(tries)]
    usage = Usage(3, 4, 1, 2, estimated=method is not None, estimate_method=method)
    result = CompleteResult(
        request_id="r1", text="hi", provider="p", model="p:m", provider_model="m-2026", finish_reason=finish,
        usage=usage, cost_usd="0.00001", latency_ms=12, attempts=attempts, budget={"tier": "normal", "tightest": tightest},
        notes=notes, tool_calls=[ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(calls)] if calls else None,
        json=structured[0] if structured else None,
    )
    result._structured = structured is not None
    expected: dict[str, Any] = {"request_id": "r1", "text": "hi", "provider": "p", "model": "p:m", "provider_model": "m-2026",
                                "finish_reason": finish}
    if structured is not None and structured[0] is not None:
        expected["json"] = structured[0]
    if calls:
        expected["tool_calls"] = [{"id": f"c{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]
    expected["usage"] = {"input_tokens": 3, "output_tokens": 4, "cached_tokens": 1, "cache_write_tokens": 2,
                         "estimated": method is not None}
    if method is not None:
        expected["usage"]["estimate_method"] = method
    expected |= {
        "cost_usd": "0.00001",
        "latency_ms": 12,
        "attempts": [
            {"model": a.model, "outcome": a.outcome, **({"error_code": a.error_code} if a.error_code is not None else {}),
             **({"error": a.error} if a.error is not None else {}), "latency_ms": a.latency_ms,
             **({"cost_usd": a.cost_usd} if a.cost_usd is not None else {})}
            for a in attempts
        ],
        "budget": {"tier": "normal", "tightest": tightest},
    }
    if notes:
        expected["notes"] = notes

    published = result.to_json()
    if structured is not None and structured[0] is None:
        expected["json"] = None  # a null answer is still the answer: last, where to_json puts it
    assert published == expected
    assert list(published) == list(expected)  # same order of keys, too
    assert [list(a) for a in published["attempts"]] == [list(a) for a in expected["attempts"]]
    jsonschema.validate(published, CompleteResult.model_json_schema())


def test_a_result_keeps_the_engines_usage_and_attempts_as_they_are() -> None:
    """Building the result copies nothing: the usage and attempts it holds are the engine's own
    (the ledger row was written from the same objects)."""
    usage = Usage(1, 2)
    attempts = [AttemptRecord("p:m", "ok", status=200, cost_usd="0.1")]
    result = CompleteResult(
        request_id="r", text="t", provider="p", model="p:m", provider_model="m", finish_reason="stop", usage=usage, cost_usd="0",
        latency_ms=0, attempts=attempts, budget={"tier": "normal", "tightest": None},
    )
    assert result.usage is usage and result.attempts[0] is attempts[0]
    assert attempts[0].to_dict() == {"model": "p:m", "outcome": "ok", "latency_ms": 0, "status": 200, "cost_usd": "0.1"}
