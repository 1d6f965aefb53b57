"""The Ollama fake's rich wire format, pinned with plain httpx (no adapter): what it refuses as
Ollama's decoder does, and how its tool calls arrive, JSON and streamed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .fakes import FakeProvider, Step

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("ollama") as server:
        yield server
    assert not server.server_errors, server.server_errors


def chat(fake: FakeProvider, **fields: Any) -> httpx.Response:
    body = {"model": "llama-test:latest", "messages": [{"role": "user", "content": "Hi"}], "stream": False, **fields}
    return httpx.post(f"{fake.base_url}/api/chat", json=body, timeout=5)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"messages": [{"role": "user", "content": "?", "images": ["not base64!"]}]}, "illegal base64 data at input byte 3"),
        ({"messages": [{"role": "user", "content": "?", "images": ["data:image/png;base64," + PNG]}]},
         "illegal base64 data at input byte 4"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "?"}]}]}, "cannot unmarshal"),
        ({"messages": [{"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "f", "arguments": '{"a": 1}'}}]}]}, "ToolCallFunctionArguments"),
        ({"tools": [{"name": "f", "parameters": {}}]}, "invalid tool definition"),
        ({"format": "yaml"}, "invalid format"),
        ({"options": {"seed": "7"}}, 'option "seed" must be of type integer'),
        ({"options": {"stop": "END"}}, 'option "stop" must be of an array of strings'),
    ],
    ids=["bad-base64", "data-url", "content-parts", "string-arguments", "tool-shape", "format", "seed", "stop"],
)
def test_the_fake_refuses_what_ollamas_decoder_refuses(fake: FakeProvider, fields: dict[str, Any], error: str) -> None:
    resp = chat(fake, **fields)
    assert resp.status_code == 400 and error in resp.json()["error"]


def test_the_fake_takes_ollamas_documented_rich_request(fake: FakeProvider) -> None:
    resp = chat(
        fake,
        messages=[
            {"role": "user", "content": "?", "images": [PNG]},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "tool", "content": "42", "tool_name": "f"},
        ],
        tools=[{"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object"}}}],
        format={"type": "object"},
        options={"num_predict": 8, "top_p": 0.5, "seed": 1, "stop": ["\n"]},
    )
    assert resp.status_code == 200 and resp.json()["done"] is True


def test_tool_calls_in_json_carry_no_ids_and_their_arguments_as_given(fake: FakeProvider) -> None:
    fake.queue(Step(tool_calls=(("f", {"a": 1}), ("g", "{broken"))))
    message = chat(fake).json()["message"]
    assert message["tool_calls"] == [
        {"function": {"name": "f", "arguments": {"a": 1}}},
        {"function": {"name": "g", "arguments": "{broken"}},
    ]


def test_streamed_tool_calls_arrive_whole_one_line_each_before_the_done_line(fake: FakeProvider) -> None:
    fake.queue(Step(chunks=("Let me ", "check."), tool_calls=(("f", {"a": 1}), ("g", {"b": 2}))))
    lines = [json.loads(x) for x in chat(fake, stream=True).text.splitlines() if x]
    assert [line["message"]["content"] for line in lines] == ["Let me ", "check.", "", "", ""]
    assert [line["message"].get("tool_calls") for line in lines] == [
        None, None, [{"function": {"name": "f", "arguments": {"a": 1}}}],
        [{"function": {"name": "g", "arguments": {"b": 2}}}], None,
    ]
    assert [line["done"] for line in lines] == [False, False, False, False, True]
    assert lines[-1]["done_reason"] == "stop"


def test_a_cut_stream_ending_on_a_call_drops_inside_its_arguments(fake: FakeProvider) -> None:
    fake.queue(Step(fault="cut_stream", chunks=("x",), after_chunks=2, tool_calls=(("f", {"a": 1}),)))
    with httpx.stream("POST", f"{fake.base_url}/api/chat", timeout=5,
                      json={"model": "llama-test:latest", "messages": [{"role": "user", "content": "Hi"}]}) as resp:
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in resp.iter_raw():
                received += piece
    first, second = received.split(b"\n", 1)
    assert json.loads(first)["message"]["content"] == "x"
    assert second.startswith(b'{"model"') and second.endswith(b'"arguments":{')
