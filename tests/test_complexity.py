"""``quality: "auto"``: realistic requests land in the tier a person would give them, the verdict
only moves the right way with each feature, and odd or huge requests are assessed without fuss."""

from __future__ import annotations

from typing import Any

import pytest

from llm_router.complexity import CUT_POINTS, SCAN_CHARS, Complexity, assess
from llm_router.content import ImagePart, ResponseFormat, TextPart, ToolCall, ToolSpec
from llm_router.types import QUALITIES, CompletionRequest, Message, Quality
from tests.pngs import png

PARAGRAPH = ("The council met on Tuesday to discuss the new bus timetable. Residents complained that the "
             "last bus leaves too early, and the council agreed to run a later service on Fridays from June.")


def ask(text: str, max_tokens: int = 1024, **kw: Any) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", text),), max_tokens=max_tokens, **kw)


def rank(q: Quality) -> int:
    return QUALITIES.index(q)


@pytest.mark.parametrize(("text", "tiers"), [
    (f"Summarise this paragraph in one sentence:\n\n{PARAGRAPH}", {"low"}),
    (f"Translate into French:\n\n{PARAGRAPH}", {"low"}),
    ("Classify the sentiment of this review as positive or negative: 'The food was cold.'", {"low"}),
    ("Is Paris the capital of France? Answer yes or no.", {"low"}),
    ("What is the capital of Peru?", {"low"}),
    ("Write a Python function that takes a list of ISO 8601 date strings and returns them sorted, "
     "skipping any that do not parse.", {"medium", "high"}),
    ("Here is my code:\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```\n"
     "Why does it crash on an empty list, and how should I fix it?", {"medium", "high"}),
    ("Prove that there are infinitely many primes of the form 4k + 3.", {"high", "critical"}),
    ("Derive the closed form of the integral of x^2 e^x and prove step by step that it is correct.",
     {"high", "critical"}),
    ("Design a distributed system for a payments ledger with these constraints:\n"
     "1. exactly-once settlement\n2. 50k writes per second\n3. multi-region active-active\n"
     "4. audit trail kept for 7 years\n5. p99 latency under 100 ms\n6. survives the loss of a region\n"
     "Explain the trade-offs of your choices.", {"high", "critical"}),
])
def test_realistic_requests_land_where_a_person_would_put_them(text: str, tiers: set[str]) -> None:
    c = assess(ask(text))
    assert c.quality in tiers, c.to_dict()


def test_a_json_schema_extraction_of_a_short_text_stays_low_or_medium() -> None:
    schema = {"type": "object", "properties": {"day": {"type": "string"}, "topic": {"type": "string"},
                                               "decision": {"type": "string"}}, "required": ["day"]}
    c = assess(ask(f"Extract the day, topic and decision from:\n{PARAGRAPH}",
                   response_format=ResponseFormat("json_schema", schema)))
    assert c.quality in {"low", "medium"}
    assert (c.features["schema_properties"], c.features["schema_depth"], c.features["easy_cues"]) == (3, 1, 1)


def test_the_cut_points_are_the_documented_ones() -> None:
    assert CUT_POINTS == ((0.25, "medium"), (0.50, "high"), (0.80, "critical"))


def test_a_proof_is_reported_with_its_reason_and_the_score_it_was_cut_from() -> None:
    c = assess(ask("Prove that the square root of 2 is irrational."))
    assert c.quality == "high" and c.score == pytest.approx(0.5, abs=0.01)
    assert c.reasons == ("asks for a proof",)
    assert c.to_dict() == {"verdict": "high", "score": round(c.score, 3), "features": c.features, "reasons": ["asks for a proof"]}


def test_a_long_max_tokens_raises_the_score_and_the_default_does_not() -> None:
    scores = [assess(ask("Write about the sea.", max_tokens=m)).score for m in (256, 1024, 4096, 16384, 65536)]
    assert scores[0] == scores[1] < scores[2] < scores[3] < scores[4]
    assert "allows a long answer (16384 tokens)" in assess(ask("Write about the sea.", max_tokens=16384)).reasons


def monotone(requests: list[CompletionRequest], *, rising: bool = True) -> None:
    found = [assess(r) for r in requests]
    scores = [c.score for c in found]
    ranks = [rank(c.quality) for c in found]
    ordered = scores if rising else scores[::-1]
    assert ordered == sorted(ordered), scores
    assert (ranks if rising else ranks[::-1]) == sorted(ranks if rising else ranks[::-1])
    assert scores[0] != scores[-1], "the feature changed nothing"


def test_the_verdict_only_rises_with_each_feature_that_makes_work_harder() -> None:
    base = "Tell me about the design of bridges."
    cues = ["", " Why do they stand?", " Analyse the trade-offs.", " Derive the load equation.", " Prove it."]
    monotone([ask(base + "".join(cues[: i + 1])) for i in range(len(cues))])
    monotone([ask(base + "".join(f"\n{i}. requirement {i}" for i in range(1, n + 1))) for n in (0, 2, 4, 8)])
    monotone([ask(base + " ".join(["Is it safe?"] * n)) for n in (1, 2, 4)])
    monotone([ask(base + " word" * n) for n in (10, 10_000, 100_000, 1_000_000)])
    monotone([CompletionRequest(messages=tuple(Message("user" if i % 2 == 0 else "assistant", base)
                                               for i in range(n)), max_tokens=1024) for n in (1, 3, 7, 11)])
    tools = [ToolSpec(f"t{i}", "a tool", {"type": "object"}) for i in range(6)]
    monotone([ask(base, tools=tuple(tools[:n])) for n in (0, 1, 3, 6)])
    image = ImagePart("image/png", data=png(2, 2))
    monotone([CompletionRequest(messages=(Message("user", base, (TextPart(base), *[image] * n)),), max_tokens=1024)
              for n in (0, 1, 2, 5)])
    props = {f"f{i}": {"type": "object", "properties": {"x": {"type": "string"}}} for i in range(30)}
    monotone([ask(base, response_format=ResponseFormat("json_schema", {"type": "object", "properties": dict(
        list(props.items())[:n])})) for n in (1, 5, 30)])


def test_cues_of_easy_work_only_lower_the_verdict() -> None:
    base = "Prove that the algorithm terminates and analyse its time complexity."
    extras = ("", " Then summarise it.", " Then summarise and translate it.", " Summarise, translate, classify; one word.")
    monotone([ask(base + extra.ljust(60)) for extra in extras], rising=False)


def test_a_request_with_everything_is_critical_and_every_reason_is_given() -> None:
    text = ("Prove step by step that the scheduler below is free of deadlock, derive its time complexity, "
            "and give a detailed analysis of the trade-offs.\n```go\nfunc run() {\n}\n```\n"
            + "".join(f"{i}. constraint {i}\n" for i in range(1, 7)))
    c = assess(ask(text, max_tokens=32_000, tools=(ToolSpec("search", "web", {"type": "object"}),)))
    assert c.quality == "critical" and c.score == 1.0
    assert {"asks for a proof", "asks for a derivation", "contains code", "lists 6 requirements",
            "allows a long answer (32000 tokens)", "offers 1 tools", "asks for a long answer"} <= set(c.reasons)


def test_a_one_megabyte_prompt_is_assessed_from_its_ends_and_counted_whole() -> None:
    text = "Prove the lemma below.\n" + "lorem ipsum dolor sit amet " * 40_000 + "\nSummarise it in one word."
    c = assess(ask(text))
    assert len(text) > 1_000_000
    assert c.features["truncated"] is True and c.features["scanned_chars"] <= 2 * SCAN_CHARS + 1
    assert c.features["prompt_tokens"] == (len(text) + 3) // 4 + 4
    assert (c.features["reasoning_cues"], c.features["easy_cues"]) == (1, 2)
    middle = "lorem ipsum " * 10_000 + "Prove it." + " lorem ipsum" * 10_000
    assert assess(ask(middle)).features["reasoning_cues"] == 0, "the middle of a long prompt is not scanned"


def test_a_long_conversation_is_scanned_from_its_first_and_last_turns() -> None:
    turns = (Message("user", "Derive the formula."), *[Message("assistant", "x" * 5_000)] * 20,
             Message("user", "Now translate it."))
    c = assess(CompletionRequest(messages=turns, max_tokens=1024, system="You are careful."))
    assert (c.features["truncated"], c.features["reasoning_cues"], c.features["easy_cues"]) == (True, 1, 1)


ODD = [
    CompletionRequest(messages=(Message("user", ""),), max_tokens=1, system=""),
    CompletionRequest(messages=(), max_tokens=1024),
    CompletionRequest(messages=(Message("user", "", (ImagePart("image/png", url="https://example.com/a.png"),)),),
                      max_tokens=1024),
    CompletionRequest(messages=(
        Message("user", "What is the weather?"),
        Message("assistant", "", tool_calls=(ToolCall("c1", "weather", {"city": "Oslo"}),)),
        Message("tool", '{"temp": 3}', tool_call_id="c1", name="weather"),
    ), max_tokens=1024, tools=(ToolSpec("weather", "the weather", {"type": "object"}),)),
    ask("?" * 10_000 + "\n" * 10_000 + "```" * 999, response_format=ResponseFormat("json_object")),
    ask("x", response_format=ResponseFormat("json_schema", {"properties": "not a dict", "items": [1, [2, {}]]})),
]


@pytest.mark.parametrize("request_", ODD)
def test_odd_requests_are_assessed_with_every_feature_reported(request_: CompletionRequest) -> None:
    c = assess(request_)
    assert isinstance(c, Complexity) and c.quality in QUALITIES and 0.0 <= c.score <= 1.0
    assert set(c.features) == {
        "prompt_tokens", "turns", "tool_turns", "code_blocks", "code_lines", "code_present", "code_cues",
        "reasoning_cues", "parts", "questions", "max_tokens", "long_output_cues", "schema_properties",
        "schema_depth", "json_object", "tools", "images", "easy_cues", "scanned_chars", "truncated"}
    assert all(isinstance(v, (int, float, bool)) for v in c.features.values())


def test_odd_requests_report_what_they_hold() -> None:
    empty, nothing, only_image, tool_turns, marks, bad_schema = (assess(r).features for r in ODD)
    assert (empty["prompt_tokens"], empty["turns"], nothing["turns"]) == (5, 1, 0)
    assert (only_image["images"], only_image["scanned_chars"]) == (1, 0)
    assert (tool_turns["tool_turns"], tool_turns["tools"], tool_turns["turns"]) == (2, 1, 3)
    assert (marks["json_object"], marks["code_blocks"], marks["questions"]) == (True, 499, 1)
    assert (bad_schema["schema_properties"], bad_schema["schema_depth"]) == (0, 0)


def test_a_deeply_nested_schema_is_measured_without_walking_it_all() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for i in range(5_000):
        schema = {"type": "object", "properties": {f"p{i}": schema}}
    c = assess(ask("Fill it in.", response_format=ResponseFormat("json_schema", schema)))
    assert 0 < c.features["schema_properties"] < 5_000 and c.features["schema_depth"] > 100
    assert "asks for structured output" in c.reasons[0]


def test_the_same_request_gets_the_same_verdict() -> None:
    r = ask("Implement a trie in Rust and explain why it beats a hash map for prefix search.")
    assert assess(r) == assess(r)
