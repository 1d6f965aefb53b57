"""What a structured call costs the router: a schema or tools beside the same plain call.

    python bench/structured.py [--calls N] [--quick]

(``bench/run.py`` prints the same section beside its other figures.) Against the loopback
upstream (``bench/upstream.py``), whose model ``bench-json`` answers the same JSON text whether or
not the call carries ``response_format``, so that only the router's work differs:

* ``Engine.complete`` with ``response_format`` json_schema (``SCHEMA``: an invoice, 9 properties,
  a nested object, an array of objects, enums, a date format, everything required) interleaved
  with the same call without it: p50/p99 of each and the difference, which is what structured
  output costs per call (the schema checked and compiled in ``prepare``, the request translated,
  the answer parsed and validated);
* the same with 3 tools (``TOOLS``) and ``tool_choice: required``, answered with a tool call,
  beside the same plain call (here the answers differ too: a tool call against JSON text);
* the validation alone, timed in a loop: ``OutputCheck.build`` (once per call) and
  ``OutputCheck.answer`` (once per answer), for the schema and for the tools, in µs per call,
  with the part of ``build`` that is the metaschema check (``check_schema``);
* a what-if, on this engine only (nothing under ``server/`` changes): ``compile_schema`` keeping
  what it compiled, keyed by the schema's canonical JSON (``cached_compile``), so that a schema
  sent again is not checked against the metaschema again.

Timings are reported, never asserted.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MAX_TOKENS, PROVIDER, Series, interleaved, paired_median_ms, standalone, write_config
from upstream import JSON_ANSWER, JSON_MODEL, TOOL_CALL_ARGUMENTS, TOOL_CALL_NAME

PROMPT = "Extract the invoice in the attached text as JSON: Acme Tools Ltd, INV-2026-0042, 30 Nov 2026, ..."

_LINE_ITEM = {
    "type": "object",
    "properties": {
        "description": {"type": "string", "minLength": 1},
        "quantity": {"type": "integer", "minimum": 1},
        "unit_price": {"type": "number", "minimum": 0},
        "category": {"type": "string", "enum": ["hardware", "software", "service", "shipping", "other"]},
    },
    "required": ["description", "quantity", "unit_price", "category"],
    "additionalProperties": False,
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "pattern": "^INV-[0-9]{4}-[0-9]{4}$"},
        "vendor": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "country": {"type": "string", "minLength": 2, "maxLength": 2},
                "vat_id": {"type": ["string", "null"]},
            },
            "required": ["name", "country", "vat_id"],
            "additionalProperties": False,
        },
        "issue_date": {"type": "string", "format": "date"},
        "currency": {"type": "string", "enum": ["USD", "EUR", "GBP", "JPY"]},
        "status": {"type": "string", "enum": ["paid", "due", "overdue"]},
        "line_items": {"type": "array", "minItems": 1, "items": _LINE_ITEM},
        "total": {"type": "number", "minimum": 0},
        "notes": {"type": ["string", "null"]},
        "due_in_days": {"type": ["integer", "null"]},
    },
    "required": ["invoice_number", "vendor", "issue_date", "currency", "status", "line_items", "total", "notes"],
    "additionalProperties": False,
}
TOOLS: list[dict[str, Any]] = [
    {
        "name": "search_docs",
        "description": "Search the product documentation.",
        "inputSchema": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 50}},
            "required": ["query"],
        },
    },
    {
        "name": "get_order",
        "description": "Look an order up by its id.",
        "inputSchema": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": TOOL_CALL_NAME,
        "description": "Open a support ticket.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 3, "maxLength": 120},
                "priority": {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
                "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                "assignee": {"type": ["string", "null"]},
            },
            "required": ["title", "priority"],
            "additionalProperties": False,
        },
    },
]


@contextlib.contextmanager
def cached_compile() -> Iterator[None]:
    """While open, ``structured.compile_schema`` keeps the validators it compiled (what-if)."""
    import llm_router.structured as structured

    real = structured.compile_schema
    kept: dict[str, Any] = {}

    def compile_schema(schema: Any, field: str) -> Any:
        if not isinstance(schema, dict):
            return real(schema, field)
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        hit = kept.get(key)
        if hit is None:
            hit = kept[key] = real(schema, field)
        return hit

    structured.compile_schema = compile_schema  # the what-if, undone below
    try:
        yield
    finally:
        structured.compile_schema = real


async def in_process(base_url: str, folder: Path, n: int, warmup: int) -> dict[str, Any]:
    """The schema series and the tools series, each interleaved with the same plain call."""
    from llm_router.calls import CompleteArgs
    from llm_router.config import load_settings
    from llm_router.engine import Engine

    cfg = write_config(folder, "structured", base_url, model=JSON_MODEL, capabilities=("tools", "tool_choice"))
    engine = Engine(load_settings(cfg))
    plain_args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS)
    schema_args = CompleteArgs.model_validate(
        {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "response_format": {"type": "json_schema", "schema": SCHEMA}}
    )
    tools_args = CompleteArgs.model_validate(
        {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "tools": TOOLS, "tool_choice": "required"}
    )

    async def plain() -> Any:
        return await engine.complete(plain_args)

    async def with_schema() -> Any:
        return await engine.complete(schema_args)

    async def with_tools() -> Any:
        return await engine.complete(tools_args)

    out: dict[str, Any] = {}
    try:
        first = await with_schema()
        assert first.provider == PROVIDER and first.json_ == json.loads(JSON_ANSWER), first
        same = await plain()
        assert same.text == first.text, (same.text, first.text)
        for _ in range(warmup):
            await plain()
            await with_schema()
        out["schema"] = await interleaved(
            n, with_schema, plain, ("Engine.complete, json_schema", "Engine.complete, plain (same text)")
        )
        with cached_compile():
            await with_schema()
            out["cached"] = await interleaved(
                n, with_schema, plain, ("the same, schemas kept (what-if)", "Engine.complete, plain (same text)")
            )
        try:
            called = await with_tools()
            assert [c.name for c in called.tool_calls or ()] == [TOOL_CALL_NAME], called
        except Exception as e:  # noqa: BLE001 — an engine without tool calls on this adapter: shown, not fatal
            out["tools"] = f"{type(e).__name__}: {e}"
        else:
            for _ in range(warmup):
                await plain()
                await with_tools()
            out["tools"] = await interleaved(
                n, with_tools, plain, ("Engine.complete, 3 tools → tool call", "Engine.complete, plain")
            )
            with cached_compile():
                await with_tools()
                out["tools_cached"] = await interleaved(
                    n, with_tools, plain, ("the same, schemas kept (what-if)", "Engine.complete, plain")
                )
    finally:
        await engine.aclose()
    return out


def _per_call_us(fn: Callable[[], Any], loops: int, repeats: int) -> float:
    """The median over ``repeats`` of the mean µs per call of ``loops`` calls."""
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        runs.append((time.perf_counter() - t0) / loops * 1e6)
    return statistics.median(runs)


def validation_alone(loops: int = 300, repeats: int = 7) -> list[tuple[str, float]]:
    """µs per call of each step of the checks, outside any call."""
    from jsonschema import validators

    from llm_router.content import ResponseFormat, ToolCall, ToolSpec
    from llm_router.structured import OutputCheck
    from llm_router.types import Completion

    fmt = ResponseFormat("json_schema", SCHEMA)
    specs = tuple(ToolSpec(t["name"], t["description"], t["inputSchema"]) for t in TOOLS)
    schema_check = OutputCheck.build(fmt, (), "auto")
    tools_check = OutputCheck.build(None, specs, "required")
    assert schema_check is not None and tools_check is not None
    text = Completion(text=JSON_ANSWER, model=JSON_MODEL, usage=None)
    call = Completion(
        text="",
        model=JSON_MODEL,
        usage=None,
        finish_reason="tool_calls",
        tool_calls=(ToolCall("call_1", TOOL_CALL_NAME, json.loads(TOOL_CALL_ARGUMENTS)),),
    )
    assert schema_check.answer(text, provider=PROVIDER, model=JSON_MODEL, usage=None) == json.loads(JSON_ANSWER)
    schema_check.answer(text, provider=PROVIDER, model=JSON_MODEL, usage=None)
    tools_check.answer(call, provider=PROVIDER, model=JSON_MODEL, usage=None)
    cls = validators.validator_for(SCHEMA, default=validators.Draft202012Validator)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("OutputCheck.build, the schema", lambda: OutputCheck.build(fmt, (), "auto")),
        ("  of which check_schema (metaschema)", lambda: cls.check_schema(SCHEMA)),
        ("OutputCheck.answer, the JSON answer", lambda: schema_check.answer(text, provider=PROVIDER, model=JSON_MODEL, usage=None)),
        ("  of which json.loads", lambda: json.loads(JSON_ANSWER)),
        ("OutputCheck.build, 3 tools", lambda: OutputCheck.build(None, specs, "required")),
        ("OutputCheck.answer, the tool call", lambda: tools_check.answer(call, provider=PROVIDER, model=JSON_MODEL, usage=None)),
    ]
    out = [(name, _per_call_us(fn, loops, repeats)) for name, fn in steps]
    with cached_compile():
        kept = _per_call_us(lambda: OutputCheck.build(fmt, (), "auto"), loops, repeats)
    out.insert(2, ("OutputCheck.build, schema kept (what-if)", kept))
    return out


def _line(s: Series) -> str:
    return f"  {s.name:<40} p50 {s.p50:8.3f} ms   p99 {s.p99:8.3f} ms   mean {s.mean:8.3f} ms"


def print_section(r: dict[str, Any], alone: list[tuple[str, float]], title: str) -> None:
    print(title)
    parts = (
        ("schema", "structured output"),
        ("cached", "it with schemas kept"),
        ("tools", "3 tools and a tool call"),
        ("tools_cached", "them with schemas kept"),
    )
    for key, what in parts:
        if key not in r:
            continue
        pair = r[key]
        if isinstance(pair, str):
            print(f"  {what}: skipped, the call failed: {pair}")
            continue
        ours, plain = pair
        print(_line(ours))
        print(_line(plain))
        print(
            f"  {'→ what ' + what + ' costs':<40} p50 {ours.p50 - plain.p50:8.3f} ms   p99 {ours.p99 - plain.p99:8.3f} ms"
            f"   paired median {paired_median_ms(ours, plain):.3f} ms"
        )
    print("  the checks alone (µs per call, median of 7 loops of 300):")
    for name, us in alone:
        print(f"    {name:<40} {us:9.1f} µs")
    print()


SECTION_TITLE = (
    "Structured calls, in-process: the same call with a json_schema response_format, or with 3 tools, "
    "against it plain (the upstream answers the same JSON text)"
)


def main() -> int:
    r, n = standalone("what structured output and tools cost per call (loopback only)", in_process)
    print_section(r, validation_alone(), f"{SECTION_TITLE}; N={n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
