"""Tool arguments as a client sees them: schemas that forbid what they do not list, unknown
arguments refused by name (with a suggestion when one is close), argument errors in the router's
own words, and every error result in one shape that schema-checking clients can show."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from mcp import Client

from llm_router.engine import Engine
from llm_router.mcp_server import ERROR_META_KEY

from .conftest import held_by_calls

pytestmark = pytest.mark.anyio


def error_of(result: Any) -> dict[str, Any]:
    """The machine-readable error of an error result, checked for the shape every client can read."""
    assert result.is_error, result
    assert result.structured_content is None, "structured content on an error breaks schema-checking clients"
    assert len(result.content) == 1 and result.content[0].type == "text"
    error = result.meta[ERROR_META_KEY]
    assert error["code"] and error["message"]
    tail = f"({error['code']}; request {error['request_id']})" if "request_id" in error else f"({error['code']})"
    assert result.content[0].text == f"{error['message']}\n\n{tail}"
    return error


async def test_every_tool_schema_forbids_arguments_it_does_not_list(client: Client) -> None:
    for tool in (await client.list_tools()).tools:
        schema = tool.input_schema
        Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False, tool.name
        assert "description" not in schema, "the argument model's docstring is not for assistants"
        for name, prop in schema["properties"].items():
            assert prop.get("description"), (tool.name, name)
        messages = schema.get("$defs", {}).get("MessageIn")
        if messages is not None:
            assert messages["additionalProperties"] is False
    tools = {t.name: t.input_schema for t in (await client.list_tools()).tools}
    assert tools["route_explain"]["properties"] == tools["complete"]["properties"], "the same arguments, as documented"


@pytest.mark.parametrize(
    ("tool", "args", "field", "text"),
    [
        ("complete", {"prompt": "hi", "max_token": 50}, "max_token",
         "max_token: is not an argument of complete; did you mean 'max_tokens'?"),
        ("complete", {"prompt": "hi", "temprature": 0.2}, "temprature",
         "temprature: is not an argument of complete; did you mean 'temperature'?"),
        ("complete", {"prompt": "hi", "max_cost": 0.01}, "max_cost",
         "max_cost: is not an argument of complete; did you mean 'max_cost_usd'?"),
        ("route_explain", {"prompt": "hi", "qualty": "high"}, "qualty",
         "qualty: is not an argument of route_explain; did you mean 'quality'?"),
        ("set_budget", {"scope": "global", "period": "daily", "limit": 2}, "limit",
         "limit: is not an argument of set_budget; did you mean 'limit_usd'?"),
        ("cost_report", {"grup_by": "model"}, "grup_by", "grup_by: is not an argument of cost_report; did you mean 'group_by'?"),
    ],
)
async def test_a_misspelt_argument_is_refused_by_name_with_the_one_it_was_meant_to_be(
    client: Client, engine: Engine, tool: str, args: dict[str, Any], field: str, text: str
) -> None:
    error = error_of(await client.call_tool(tool, args))
    assert (error["code"], error["field"]) == ("invalid_input", field)
    assert error["message"].startswith(text), error["message"]
    assert engine.ledger.rows() == [] and held_by_calls(engine) == 0


@pytest.mark.parametrize("name", ["n", "logprobs", "frequency_penalty", "presence_penalty", "user"])
async def test_an_unsupported_argument_is_refused_with_the_list_of_arguments_there_are(client: Client, name: str) -> None:
    error = error_of(await client.call_tool("complete", {"prompt": "hi", name: "x"}))
    assert error["field"] == name
    assert error["message"].startswith(f"{name}: is not an argument of complete (allowed: prompt, messages, system, ")
    assert "deadline_s" in error["allowed"]


async def test_a_misspelt_max_cost_never_silently_removes_the_spending_cap(client: Client, engine: Engine) -> None:
    """``max_cost`` used to be dropped without a word: the call then ran with no per-call cap, and
    was billed. It is refused before anything is routed or reserved."""
    result = await client.call_tool("complete", {"prompt": "hi", "model": "anthropic:claude-sonnet-4-5", "max_cost": 0})
    assert error_of(result)["field"] == "max_cost"
    assert engine.ledger.rows() == [] and held_by_calls(engine) == 0
    capped = await client.call_tool("complete", {"prompt": "hi", "model": "anthropic:claude-sonnet-4-5", "max_cost_usd": 0})
    assert error_of(capped)["code"] in ("no_route", "budget_exceeded"), "the real argument caps the call"


@pytest.mark.parametrize(
    ("tool", "args", "text"),
    [
        ("complete", {"prompt": "x", "quality": "hgih"}, "quality: 'hgih' is not allowed (allowed: low, medium, high, critical, auto)"),
        ("complete", {"prompt": "x", "max_tokens": 0}, "max_tokens: 0 is too small (allowed: an integer from 1 to 1000000)"),
        ("complete", {"prompt": "x", "max_tokens": 10**9},
         "max_tokens: 1000000000 is too large (allowed: an integer from 1 to 1000000)"),
        ("complete", {"prompt": "x", "max_tokens": "many"},
         "max_tokens: 'many' is not a whole number (allowed: an integer from 1 to 1000000)"),
        ("complete", {"prompt": 42}, "prompt: 42 is not a string"),
        ("complete", {"prompt": "x", "temperature": 9}, "temperature: 9 is too large (allowed: a number from 0 to 2)"),
        ("complete", {"prompt": "x", "strategy": "random"},
         "strategy: 'random' is not allowed (allowed: cheapest, best, fastest, balanced, adaptive)"),
        ("complete", {"prompt": "x", "deadline_s": 0}, "deadline_s: 0 is too small (allowed: a number above 0, at most 3600)"),
        ("complete", {"prompt": "x", "max_cost_usd": "lots"},
         "max_cost_usd: 'lots' is not a number (allowed: a number of dollars from 0 to 10000)"),
        ("complete", {"prompt": "x", "model": 42},
         'model: 42 is not valid (allowed: "provider:model", or a list of them (an explicit fallback chain))'),
        ("complete", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                   {"role": "robot", "content": "c"}]},
         "messages[2].role: 'robot' is not allowed (allowed: user, assistant, tool)"),
        ("complete", {"messages": [{"role": "user", "content": ""}]}, "messages[0].content: is empty (allowed: a non-empty string, or a list of parts: "
         '{"type": "text", "text"}, {"type": "image", "data", "mimeType"} or {"type": "image", "url"})'),
        ("complete", {"messages": [{"role": "user", "text": "hi"}]},
         "messages[0].text: is not a field here (allowed: role, content, tool_calls, tool_call_id)"),
        ("complete", {"messages": "hello"},
         "messages: 'hello' is not a list (allowed: a list of objects with role, content, tool_calls, tool_call_id)"),
        ("cost_report", {"period": "fortnight"},
         "period: 'fortnight' is not allowed (allowed: today, yesterday, this_week, this_month, last_7_days, last_30_days)"),
        ("cost_report", {"since": "20260101"}, "since: '20260101' is not in the expected form (allowed: a date, YYYY-MM-DD)"),
        ("set_budget", {"scope": "global", "period": "hourly", "limit_usd": 1},
         "period: 'hourly' is not allowed (allowed: daily, monthly, per_request)"),
        ("set_budget", {"scope": "global", "period": "daily", "limit_usd": -5},
         "limit_usd: -5 is too small (allowed: a number of dollars >= 0, or null to remove the limit)"),
        ("set_budget", {"scope": "global", "period": "daily", "limit_usd": "Infinity"},
         "limit_usd: 'Infinity' is not a finite number (allowed: a number of dollars >= 0, or null to remove the limit)"),
        ("set_budget", {"period": "daily"},
         'scope: is required; more to fix: limit_usd (allowed: "global", "provider:NAME" or "tag:NAME")'),
    ],
)
async def test_argument_errors_read_like_the_routers_own_and_name_the_field(
    client: Client, tool: str, args: dict[str, Any], text: str
) -> None:
    """They used to be pydantic's (``1 validation error for completeArguments ... visit
    https://errors.pydantic.dev/...``)."""
    result = await client.call_tool(tool, args)
    error = error_of(result)
    assert error["message"] == text
    assert error["code"] == "invalid_input" and text.startswith(error["field"] + ":")
    assert "pydantic" not in result.content[0].text and "validation error" not in result.content[0].text


async def test_every_error_path_of_every_tool_has_one_shape(client: Client, engine: Engine) -> None:
    """Budget refusal, bad input, no route, unknown model, all attempts failed, set_budget and
    cost_report errors: text with the message, code and request id; the facts in ``_meta``."""
    from llm_router.types import ServerError

    await client.call_tool("set_budget", {"scope": "provider:openai", "period": "daily", "limit_usd": 0})
    refused = error_of(await client.call_tool("complete", {"prompt": "hi", "model": "openai:gpt-4o"}))
    assert refused["code"] == "budget_exceeded" and refused["request_id"] and refused["limit"] == "provider:openai daily"

    engine.providers["anthropic"].fail_next(ServerError("boom", provider="anthropic", status=500))  # type: ignore[attr-defined]
    failed = error_of(await client.call_tool("complete", {"prompt": "hi", "model": "anthropic:claude-haiku-4-5"}))
    assert failed["code"] == "all_failed" and failed["request_id"] and failed["attempts"][0]["error_code"] == "server_error"

    unknown = error_of(await client.call_tool("complete", {"prompt": "hi", "model": "anthropic:claude-haiku-9"}))
    assert unknown["field"] == "model" and "request_id" not in unknown
    for tool, args, field in (
        ("route_explain", {"prompt": ""}, "prompt"),
        ("cost_report", {"period": "today", "since": "2026-01-01"}, "period"),
        ("cost_report", {"since": "2026-02-01", "until": "2026-01-01"}, "until"),
        ("set_budget", {"scope": "planet:mars", "period": "daily", "limit_usd": 1}, "scope"),
    ):
        assert error_of(await client.call_tool(tool, args))["field"] == field, (tool, args)


async def test_lists_sent_as_json_text_are_still_understood_but_a_prompt_is_never_parsed(client: Client) -> None:
    done = await client.call_tool("route_explain", {"prompt": '["a", "b"]', "model": '["openai:gpt-4o-mini"]'})
    assert not done.is_error, done.content
    assert done.structured_content["chain"] == ["openai:gpt-4o-mini"]
    removed = await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": "null"})
    assert not removed.is_error and removed.structured_content["changed"]["limit_usd"] is None


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"prompt": "smile \ud83d please"}, "prompt"),
        ({"prompt": "hi", "system": "be \udc00 brief"}, "system"),
        ({"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "x\ud83d"},
                       {"role": "user", "content": "again"}]}, "messages[1].content"),
        ({"prompt": "hi", "tag": "team-\ud83d"}, "tag"),
        ({"prompt": "hi", "task_type": "sum\udfffmarize"}, "task_type"),
    ],
)
async def test_a_lone_surrogate_from_an_in_process_caller_is_refused_naming_the_field(
    client: Client, engine: Engine, arguments: dict[str, Any], field: str
) -> None:
    """The transports repair lone surrogates, but a caller in the same process hands strings over
    as they are: one in a prompt was an ``internal`` error (it cannot be encoded to be sent,
    hashed or stored), and one in a tag would have failed the ledger row's write."""
    for tool in ("complete", "route_explain"):
        error = error_of(await client.call_tool(tool, arguments))
        assert (error["code"], error["field"]) == ("invalid_input", field), error
        assert "surrogate" in error["message"]
    assert held_by_calls(engine) == 0
    assert await engine.ledger_rows() == []


@pytest.mark.parametrize("value", ["NaN", "inf", "-Infinity"])
@pytest.mark.parametrize("name", ["temperature", "deadline_s"])
async def test_a_temperature_or_deadline_that_is_no_finite_number_is_refused_as_such(
    client: Client, engine: Engine, name: str, value: Any
) -> None:
    """``temperature: "NaN"`` was answered "'NaN' is too large"."""
    error = error_of(await client.call_tool("complete", {"prompt": "hi", name: value}))
    assert (error["code"], error["field"]) == ("invalid_input", name)
    assert "is not a finite number" in error["message"], error
    assert await engine.ledger_rows() == []


@pytest.mark.parametrize("name", ["temperature", "deadline_s"])
def test_a_nan_handed_over_in_process_never_passes_the_range_check(name: str) -> None:
    """A float NaN passed ``ge``/``le`` (every comparison with NaN is false) and would have gone to
    the provider in a body JSON cannot carry."""
    from llm_router.arguments import ToolArguments
    from llm_router.calls import CompleteArgs
    from llm_router.types import InvalidInput

    for value in (float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="is not a finite number") as caught:
            ToolArguments("complete", CompleteArgs).parse({"prompt": "hi", name: value})
        assert caught.value.field == name
