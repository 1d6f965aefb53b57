"""The fake OpenAI API refuses what OpenAI documents it refuses in a rich request, so that the
adapter tests through it (``test_providers_rich_openai.py``) would see a body OpenAI rejects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .fakes import FakeProvider

ASK = {"role": "user", "content": "Weather in Paris?"}
CALL = {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
OPEN = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("openai") as server:
        yield server
    assert not server.server_errors, server.server_errors


def post(fake: FakeProvider, **fields: Any) -> httpx.Response:
    body = {"model": "gpt-test-1", "messages": [ASK], **fields}
    return httpx.post(f"{fake.base_url}/chat/completions", json=body,
                      headers={"authorization": f"Bearer {fake.api_key}"}, timeout=30)


@pytest.mark.parametrize(("fields", "code"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": OPEN, "strict": True}}},
     "invalid_json_schema"),
    ({"response_format": {"type": "json_object"}}, None),  # no "json" in the messages
    ({"messages": [ASK, {"role": "tool", "tool_call_id": "call_a", "content": "21"}]}, None),
    ({"messages": [ASK, {"role": "assistant", "content": None, "tool_calls": [CALL]}]}, None),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA=="}}]}]},
     "invalid_image_format"),
    ({"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "invalid_value"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "array_above_max_length"),
    ({"tool_choice": "required"}, None),  # without tools
    ({"top_p": 1.5}, "decimal_above_max_value"),
])
def test_the_fake_refuses_what_openai_refuses(fake: FakeProvider, fields: dict[str, Any], code: str | None) -> None:
    response = post(fake, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code)


@pytest.mark.parametrize("fields", [
    {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": OPEN, "strict": False}}},
    {"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "Answer in JSON."}]},
    {"messages": [ASK, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "call_a", "content": "21"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "What?"},
                                               {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]},
    {"tools": [{"type": "function", "function": {"name": "get_weather"}}], "tool_choice": "required",
     "stop": ["x"], "top_p": 0.5, "seed": 7},
])
def test_the_fake_takes_what_openai_takes(fake: FakeProvider, fields: dict[str, Any]) -> None:
    assert post(fake, **fields).status_code == 200
