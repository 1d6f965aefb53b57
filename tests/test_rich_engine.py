"""Rich requests through the engine: an answer that is not what was asked fails its attempt
(billed, shown) and the chain goes on; routing leaves out the models that cannot take what a call
asks (capability_missing); the arguments are checked before anything is routed or written.
Scripted providers (the ``Provider`` protocol) stand in for the adapters, which have their own
wire tests; the ledger is a real SQLite file."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import CapabilityName, settings_from_dict
from llm_router.content import CAPABILITY_NAMES, ToolCall
from llm_router.engine import Engine
from llm_router.providers.base import ProbeResult
from llm_router.types import (
    AllAttemptsFailed,
    Completion,
    CompletionRequest,
    InvalidInput,
    NoRoute,
    Usage,
)

from .conftest import held_by_calls
from .pngs import png

pytestmark = pytest.mark.anyio

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


class Scripted:
    """Answers with the next scripted completion (then a plain one), recording every request."""

    def __init__(self, name: str, kind: str, *answers: Completion, says: frozenset[str] | None = None) -> None:
        self.name, self.kind = name, kind
        self.answers: deque[Completion] = deque(answers)
        self.requests: list[CompletionRequest] = []
        self.says = says

    async def complete(self, model: str, request: CompletionRequest, *, on_text: Any = None) -> Completion:
        self.requests.append(request)
        if self.answers:
            return self.answers.popleft()
        return Completion("plain", model, Usage(10, 5), "stop")

    async def probe(self) -> ProbeResult:
        return ProbeResult(ok=True, detail="scripted")

    async def count_tokens(self, model: str, text: str) -> int | None:
        return None

    async def context_window(self, model: str) -> int | None:
        return None

    async def capabilities(self, model: str) -> frozenset[str] | None:
        return self.says

    async def aclose(self) -> None:
        return None


DEFAULT_USAGE = Usage(100, 20)


def text(value: str, usage: Usage | None = DEFAULT_USAGE) -> Completion:
    return Completion(value, "m", usage, "stop")


PRICED = {"m": {"input_per_mtok": 1, "output_per_mtok": 2}}


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def build(*providers: Scripted, overrides: dict[str, Any] | None = None) -> Engine:
        configs = []
        for p in providers:
            cfg: dict[str, Any] = {"name": p.name, "kind": p.kind, "models": ["m"], "prices": PRICED}
            if p.kind in ("openai", "ollama"):
                cfg["base_url"] = "http://127.0.0.1:9" + ("/v1" if p.kind == "openai" else "")
            if p.kind in ("anthropic", "openai", "gemini"):
                cfg["api_key_env"] = "TEST_KEY"
            if overrides and p.name in overrides:
                cfg["model_overrides"] = {"m": overrides[p.name]}
            configs.append(cfg)
        settings = settings_from_dict({"ledger": {"path": str(tmp_path / "ledger.db")}, "providers": configs,
                                       "resilience": {"max_retries": 0}}, source="test")
        engine = Engine(settings, env={"TEST_KEY": "k"}, providers={p.name: p for p in providers})  # type: ignore[misc]
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        await engine.aclose()


def args(**kw: Any) -> CompleteArgs:
    return CompleteArgs.model_validate({"prompt": "Who is it?", **kw})


# -- structured output: the cheapest model that answers validly ----------------------------------


async def test_a_schema_violating_answer_is_billed_and_the_next_model_answers_validly(make: Callable[..., Engine]) -> None:
    first = Scripted("first", "mock", text('{"name": "Ada", "age": "thirty"}', Usage(1000, 200)))
    second = Scripted("second", "mock", text('{"name": "Ada", "age": 36}', Usage(1000, 100)))
    engine = make(first, second)
    result = await engine.complete(args(model=["first:m", "second:m"], response_format={"type": "json_schema", "schema": SCHEMA}))
    assert result.model == "second:m" and result.json_ == {"name": "Ada", "age": 36}
    out = result.to_json()
    assert out["json"] == {"name": "Ada", "age": 36} and out["finish_reason"] == "stop"
    failed, ok = out["attempts"]
    assert (failed["model"], failed["outcome"], failed["error_code"]) == ("first:m", "error", "invalid_output")
    assert "$.age" in failed["error"] and "is not of type 'integer'" in failed["error"]
    # Each attempt shows its cost; the call's cost is both (1000 in at $1/M + out at $2/M each).
    assert failed["cost_usd"] == "0.0014" and ok["cost_usd"] == "0.0012"
    assert out["cost_usd"] == "0.0026"
    assert out["usage"]["input_tokens"] == 2000 and out["usage"]["output_tokens"] == 300
    (row,) = engine.ledger.rows()
    assert row["cost_usd"] == "0.0026" and row["status"] == "ok"
    assert held_by_calls(engine) == 0
    # The providers were asked for the schema (each adapter sends it natively).
    assert first.requests[0].response_format is not None and first.requests[0].response_format.schema == SCHEMA


async def test_no_valid_answer_from_any_model_lists_what_each_returned_wrong(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("first", "mock", text("Sure! Here it is: {name: Ada}")),
                  Scripted("second", "mock", text('{"name": "Ada"}')))
    with pytest.raises(AllAttemptsFailed) as caught:
        await engine.complete(args(model=["first:m", "second:m"], response_format={"type": "json_schema", "schema": SCHEMA}))
    message = str(caught.value)
    assert "first:m: invalid_output" in message and "not JSON" in message
    assert "second:m: invalid_output" in message and "'age' is a required property" in message
    (row,) = engine.ledger.rows()
    assert row["status"] == "error" and row["cost_usd"] == "0.00028"  # both answers were billed
    assert held_by_calls(engine) == 0


async def test_json_object_takes_any_object_and_a_fenced_one_but_not_a_list(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("first", "mock", text("[1, 2]"), text('```json\n{"a": 1}\n```')))
    with pytest.raises(AllAttemptsFailed, match="not the object json_object asks for"):
        await engine.complete(args(model="first:m", response_format={"type": "json_object"}))
    result = await engine.complete(args(model="first:m", response_format={"type": "json_object"}))
    assert result.json_ == {"a": 1}


async def test_an_answer_without_usage_that_fails_its_schema_is_still_billed_by_an_estimate(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("first", "mock", text("no json here", usage=None)), Scripted("second", "mock", text("{}")))
    result = await engine.complete(args(model=["first:m", "second:m"], response_format={"type": "json_object"},
                                         tools=None))
    assert result.attempts[0].error_code == "invalid_output" and result.attempts[0].cost_usd not in (None, "0")


# -- tool calls ---------------------------------------------------------------------------------


async def test_tool_calls_come_back_with_their_arguments_and_finish_reason(make: Callable[..., Engine]) -> None:
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    engine = make(Scripted("first", "mock", Completion("", "m", Usage(50, 10), "tool_calls", tool_calls=(call,))))
    result = await engine.complete(args(model="first:m", tools=[WEATHER], tool_choice="required"))
    out = result.to_json()
    assert out["finish_reason"] == "tool_calls" and "json" not in out
    assert out["tool_calls"] == [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]


async def test_tool_arguments_that_break_the_input_schema_fall_back_to_the_next_model(make: Callable[..., Engine]) -> None:
    bad = Completion("", "m", Usage(50, 10), "tool_calls", tool_calls=(ToolCall("c", "get_weather", {"town": 3}),))
    good = Completion("", "m", Usage(50, 10), "tool_calls", tool_calls=(ToolCall("d", "get_weather", {"city": "Oslo"}),))
    engine = make(Scripted("first", "mock", bad), Scripted("second", "mock", good))
    result = await engine.complete(args(model=["first:m", "second:m"], tools=[WEATHER]))
    assert result.tool_calls == [good.tool_calls[0]]
    assert "'city' is a required property" in (result.attempts[0].error or "")


async def test_a_call_of_a_tool_not_offered_or_text_where_one_was_required_is_invalid(make: Callable[..., Engine]) -> None:
    other = Completion("", "m", Usage(5, 5), "tool_calls", tool_calls=(ToolCall("c", "rm_rf", {}),))
    engine = make(Scripted("first", "mock", other, text("I would rather not")))
    with pytest.raises(AllAttemptsFailed, match="'rm_rf', which is not one of its tools"):
        await engine.complete(args(model="first:m", tools=[WEATHER]))
    with pytest.raises(AllAttemptsFailed, match="in text where tool_choice asked for a call of get_weather"):
        await engine.complete(args(model="first:m", tools=[WEATHER], tool_choice={"name": "get_weather"}))


async def test_a_conversation_continues_with_the_tool_results(make: Callable[..., Engine]) -> None:
    provider = Scripted("first", "mock", text("It is sunny in Paris."))
    engine = make(provider)
    result = await engine.complete(CompleteArgs.model_validate({"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
    ], "tools": [WEATHER], "model": "first:m"}))
    assert result.text == "It is sunny in Paris."
    sent = provider.requests[0].messages
    assert [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].tool_calls == (ToolCall("call_1", "get_weather", {"city": "Paris"}),)
    assert (sent[2].tool_call_id, sent[2].name, sent[2].content) == ("call_1", "get_weather", '{"sky": "sunny"}')


# -- capabilities -------------------------------------------------------------------------------


async def test_route_explain_with_an_image_and_a_schema_excludes_every_text_only_model(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("local", "openai"), Scripted("llama", "ollama"), Scripted("claude", "anthropic"))
    explained = (await engine.explain(CompleteArgs.model_validate({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                  {"type": "image", "data": png(), "mimeType": "image/png"}]}],
        "response_format": {"type": "json_schema", "schema": SCHEMA}}))).to_json()
    assert explained["chain"] == ["claude:m"]
    assert explained["needs"] == ["json_schema", "vision"]
    excluded = {e["model"]: e for e in explained["excluded"]}
    assert {m: e["reason"] for m, e in excluded.items()} == {"local:m": "capability_missing", "llama:m": "capability_missing"}
    assert excluded["local:m"]["missing"] == ["vision"]
    assert "default of an OpenAI-compatible server on this machine" in excluded["local:m"]["detail"]
    assert 'set [providers.model_overrides."m"] capabilities' in excluded["local:m"]["detail"]
    assert "vision" in explained["candidates"][0]["capabilities"]


async def test_a_parameter_no_model_offers_is_refused_naming_it_never_dropped(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("claude", "anthropic"))
    with pytest.raises(NoRoute, match="claude:m: capability_missing: it cannot take seed"):
        await engine.complete(args(seed=7))
    assert engine.ledger.rows()[0]["status"] == "refused"


async def test_what_a_server_says_a_model_can_do_replaces_the_protocols_default(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("llama", "ollama", says=frozenset({"tools", "vision"})))
    image = {"messages": [{"role": "user", "content": [{"type": "image", "data": png(), "mimeType": "image/png"}]}]}
    explained = await engine.explain(CompleteArgs.model_validate(image))
    assert explained.chain == ["llama:m"]
    entry = engine.catalog.get("llama:m")
    assert entry.capabilities.source.startswith("reported by the server")


async def test_the_config_settles_capabilities_as_a_whole_list_or_one_by_one(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("a", "openai"), Scripted("b", "anthropic"),
                  overrides={"a": {"capabilities": ["text", "tools"]}, "b": {"capabilities": {"vision": False, "seed": True}}})
    a, b = engine.catalog.get("a:m").capabilities, engine.catalog.get("b:m").capabilities
    assert a.listed() == ["text", "tools"] and a.source == "config"
    assert "vision" not in b.names and "seed" in b.names and "changed by config (vision off, seed on)" in b.source
    providers = {m["model"]: m for p in engine.providers_status() for m in p["models"]}
    assert providers["a:m"]["capabilities"] == ["text", "tools"] and providers["a:m"]["capability_source"] == "config"


def test_the_config_names_the_same_capabilities_routing_knows() -> None:
    assert set(CapabilityName.__args__) == set(CAPABILITY_NAMES)  # type: ignore[attr-defined]


# -- arguments checked before anything is routed or written ---------------------------------------


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ({"response_format": {"type": "json_schema", "schema": {"type": "objekt"}}}, "response_format.schema", "not a valid JSON Schema"),
        ({"response_format": {"type": "json_schema"}}, "response_format.schema", "is required for json_schema"),
        ({"response_format": {"type": "json_schema", "schema": {"$ref": "https://example.com/s.json"}}},
         "response_format.schema", "outside the schema"),
        ({"tools": [WEATHER], "tool_choice": {"name": "get_time"}}, "tool_choice.name", "not one of the tools"),
        ({"tool_choice": "required"}, "tool_choice", "without tools"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name", "offered twice"),
        ({"tools": [{**WEATHER, "inputSchema": {"type": "object", "properties": 5}}]}, "tools[0].inputSchema",
         "not a valid JSON Schema"),
    ],
)
async def test_a_wrong_rich_argument_is_refused_naming_its_field(
    make: Callable[..., Engine], extra: dict[str, Any], field: str, says: str
) -> None:
    engine = make(Scripted("first", "mock"))
    with pytest.raises(InvalidInput, match=says) as caught:
        await engine.complete(args(**extra))
    assert caught.value.field == field
    assert engine.ledger.rows() == []


@pytest.mark.parametrize(
    ("messages", "field", "says"),
    [
        ([{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "nope", "content": "x"}],
         "messages[1].tool_call_id", "is no call an earlier assistant turn made"),
        ([{"role": "user", "content": "a", "tool_calls": [{"id": "c", "name": "f"}]}], "messages[0].tool_calls", "only for an assistant"),
        ([{"role": "user", "content": [{"type": "image", "data": "not base64!", "mimeType": "image/png"}]}],
         "messages[0].content[0]", "base64"),
        ([{"role": "user", "content": [{"type": "video", "url": "x"}]}], "messages[0].content[0]", "is not a content part"),
        ([{"role": "user", "content": [{"type": "text", "text": "a", "cache": True}]}], "messages[0].content[0].cache",
         "is not a field of a text part"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "messages", "the last turn"),
    ],
)
async def test_a_wrong_turn_is_refused_naming_where_it_is(
    make: Callable[..., Engine], messages: list[dict[str, Any]], field: str, says: str
) -> None:
    engine = make(Scripted("first", "mock"))
    with pytest.raises(InvalidInput, match=says) as caught:
        await engine.complete(CompleteArgs.model_validate({"messages": messages}))
    assert caught.value.field.startswith(field)
    assert engine.ledger.rows() == []


async def test_images_count_in_the_reservations_worst_case(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("claude", "anthropic"))
    plain = await engine.explain(args())
    with_image = await engine.explain(CompleteArgs.model_validate({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Who is it?"}, {"type": "image", "data": png(1000, 1000), "mimeType": "image/png"}]}]}))
    worst = [float(r.candidates[0]["worst_case_cost_usd"]) for r in (plain, with_image)]
    assert worst[1] > worst[0] + 1000 / 1_000_000  # at least a thousand more tokens at $1/M


async def test_a_plain_text_call_asks_for_nothing_rich(make: Callable[..., Engine]) -> None:
    provider = Scripted("first", "mock")
    engine = make(provider)
    result = await engine.complete(args())
    request = provider.requests[0]
    assert not request.rich and request.stop == () and request.seed is None
    assert "json" not in result.to_json() and "tool_calls" not in result.to_json()


async def test_an_assistant_turn_may_echo_the_empty_text_of_a_tool_call_answer(make: Callable[..., Engine]) -> None:
    """Regression: a client that put complete's text ("" for a tool-call answer) back as the
    assistant turn's content was refused with "messages[1].content: is empty"."""
    engine = make(Scripted("first", "mock", text("Snowing.")))
    result = await engine.complete(CompleteArgs.model_validate({"messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Oslo"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "snow"}], "tools": [WEATHER]}))
    assert result.text == "Snowing."
    with pytest.raises(InvalidInput, match="is empty") as caught:
        await engine.complete(CompleteArgs.model_validate({"messages": [{"role": "user", "content": ""}]}))
    assert caught.value.field == "messages[0].content"


def test_a_schema_sent_again_is_not_checked_against_its_metaschema_again() -> None:
    """Checking a schema costs milliseconds (bench/structured.py): the same schema, sent again in
    a later call, gets the validator compiled the first time; a wrong one is refused every time."""
    from llm_router.structured import compile_schema

    first = compile_schema(dict(SCHEMA), "response_format.schema")
    assert compile_schema(json_copy(SCHEMA), "response_format.schema") is first
    for _ in range(2):
        with pytest.raises(InvalidInput, match="not a valid JSON Schema"):
            compile_schema({"type": "objekt"}, "tools[0].inputSchema")


def json_copy(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


@pytest.mark.parametrize(
    ("messages", "field", "says"),
    [
        ([{"role": "user", "content": "a"},
          {"role": "assistant", "tool_calls": [{"id": "c", "name": "f"}, {"id": "c", "name": "g"}]},
          {"role": "tool", "tool_call_id": "c", "content": "r"}], "messages[1].tool_calls[1].id", "the id of an earlier call"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"id": "c", "name": "f"}]},
          {"role": "user", "content": "and?"}], "messages[2]", "waiting: c"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"id": "c", "name": "f"}]},
          {"role": "tool", "tool_call_id": "c", "content": "r"}, {"role": "tool", "tool_call_id": "c", "content": "r"}],
         "messages[3].tool_call_id", "answered already"),
        ([{"role": "user", "content": "a"},
          {"role": "assistant", "tool_calls": [{"id": "c", "name": "f"}, {"id": "d", "name": "f"}]},
          {"role": "tool", "tool_call_id": "c", "content": "r"}], "messages", "waiting: d"),
    ],
    ids=["same-id-twice", "unanswered", "answered-twice", "ends-unanswered"],
)
async def test_a_tool_conversation_out_of_order_is_refused_before_any_provider_is_asked(
    make: Callable[..., Engine], messages: list[dict[str, Any]], field: str, says: str
) -> None:
    """Regression: a repeated call id, a call left unanswered and a call answered twice were sent
    on, for every provider to refuse in turn (OpenAI and Anthropic want one result a call)."""
    provider = Scripted("first", "mock")
    engine = make(provider)
    with pytest.raises(InvalidInput, match=says) as caught:
        await engine.complete(CompleteArgs.model_validate({"messages": messages}))
    assert caught.value.field == field and provider.requests == [] and engine.ledger.rows() == []


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, r"a \$ref loop"),
        ({"$ref": "#"}, r"a \$ref loop"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}, "cannot be checked in linear time"),
    ],
    ids=["loop", "self", "backreference"],
)
async def test_a_schema_that_could_not_be_checked_safely_is_the_callers_error(
    make: Callable[..., Engine], schema: dict[str, Any], says: str
) -> None:
    """Regression: a $ref loop was accepted, then failed every model's answer as malformed (the
    provider's fault, unbilled); a backtracking pattern could hold the event loop for minutes."""
    provider = Scripted("first", "mock")
    engine = make(provider)
    with pytest.raises(InvalidInput, match=says) as caught:
        await engine.complete(args(response_format={"type": "json_schema", "schema": schema}))
    assert caught.value.field == "response_format.schema" and provider.requests == []


async def test_a_backtracking_pattern_checks_an_answer_in_linear_time(make: Callable[..., Engine]) -> None:
    """Regression: ``^(a+)+$`` against 32 characters held the event loop (Python's re backtracks)."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}, "required": ["a"]}
    engine = make(Scripted("first", "mock", text('{"a": "' + "a" * 5000 + '!"}')), Scripted("second", "mock", text('{"a": "aaa"}')))
    with anyio_fail_after(5):
        result = await engine.complete(args(model=["first:m", "second:m"], response_format={"type": "json_schema", "schema": schema}))
    assert result.json_ == {"a": "aaa"} and "does not match" in (result.attempts[0].error or "")


async def test_a_tool_whose_input_schema_is_no_object_is_refused(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("first", "mock"))
    with pytest.raises(InvalidInput, match="arguments are an object") as caught:
        await engine.complete(args(tools=[{**WEATHER, "inputSchema": {"type": "array"}}]))
    assert caught.value.field == "tools[0].inputSchema"


async def test_a_seed_of_true_is_refused_not_taken_as_one(make: Callable[..., Engine]) -> None:
    from llm_router.mcp_surface import COMPLETE_ARGS

    with pytest.raises(InvalidInput) as caught:
        COMPLETE_ARGS.parse({"prompt": "x", "seed": True})
    assert caught.value.field == "seed"


def anyio_fail_after(seconds: float) -> Any:
    import anyio

    return anyio.fail_after(seconds)
