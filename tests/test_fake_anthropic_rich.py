"""The fake Messages API's rich shapes, pinned with plain httpx and the hand-written SSE parser of
``tests/fakes/test_fake_servers``: tool calls (JSON and streamed) as the tool-use and streaming
docs show them, a forced tool's call as structured output, and the requests it refuses as the API
does (HTTP 400, ``invalid_request_error``)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .fakes import FakeProvider
from .fakes.anthropic import BOTH_SAMPLERS
from .fakes.test_fake_servers import make_client, post, sse_events

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("anthropic") as server:
        yield server
    assert not server.server_errors, server.server_errors


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with make_client() as c:
        yield c


def events(resp: httpx.Response) -> list[dict[str, Any]]:
    out = []
    for name, data in sse_events(resp.text):
        event = json.loads(data)
        assert event["type"] == name  # each event's name is its type
        out.append(event)
    return out


def test_two_tool_calls_in_json_are_tool_use_blocks_after_the_text(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("tool_call", text="Checking.", tool_calls=(("get_weather", {"city": "Paris"}), ("get_time", {})))
    body = post(client, fake, stream=False, tools=[TOOL]).json()
    assert body["stop_reason"] == "tool_use"
    assert body["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_fake000001", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_fake000001_1", "name": "get_time", "input": {}},
    ]


def test_streamed_tool_calls_are_blocks_whose_input_comes_in_json_pieces(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("tool_call", text="Checking.", tool_calls=(("get_weather", {"city": "Paris"}), ("get_time", {})))
    got = events(post(client, fake, stream=True, tools=[TOOL]))
    assert [e["type"] for e in got] == [
        "message_start",
        "content_block_start", "ping", *["content_block_delta"] * 3, "content_block_stop",
        "content_block_start", *["content_block_delta"] * 3, "content_block_stop",
        "content_block_start", *["content_block_delta"] * 3, "content_block_stop",
        "message_delta", "message_stop",
    ]
    starts = [e for e in got if e["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "toolu_fake000001", "name": "get_weather", "input": {}}
    pieces = {i: "".join(e["delta"]["partial_json"] for e in got
                         if e["type"] == "content_block_delta" and e["index"] == i) for i in (1, 2)}
    assert json.loads(pieces[1]) == {"city": "Paris"} and json.loads(pieces[2]) == {}
    assert got[-2]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_forced_tool_answers_with_a_call_carrying_the_text_as_its_input(
    fake: FakeProvider, client: httpx.Client, stream: bool
) -> None:
    fake.reply(chunks=('{"city": ', '"Oslo"}'))
    resp = post(client, fake, stream=stream, tools=[TOOL], tool_choice={"type": "tool", "name": "get_weather"})
    if not stream:
        body = resp.json()
        assert body["stop_reason"] == "tool_use"
        assert body["content"] == [{"type": "tool_use", "id": "toolu_fake000001", "name": "get_weather",
                                    "input": {"city": "Oslo"}}]
        return
    got = events(resp)
    assert got[1]["content_block"]["type"] == "tool_use" and got[1]["content_block"]["input"] == {}
    assert [e["delta"] for e in got if e["type"] == "content_block_delta"] == [
        {"type": "input_json_delta", "partial_json": '{"city": '},
        {"type": "input_json_delta", "partial_json": '"Oslo"}'},
    ]


def image(source: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "image", "source": source}]}]}


def png_of(width: int, height: int, padding: int = 0) -> str:
    """A PNG's signature and IHDR saying ``width`` x ``height``, then ``padding`` bytes, as base64."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * (4 + padding)
    return base64.b64encode(raw).decode()


def images(*datas: str) -> dict[str, Any]:
    blocks = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": d}} for d in datas]
    return {"messages": [{"role": "user", "content": blocks}]}


BIG = png_of(100, 100, padding=4_500_000)
"""4.5 MB of image, over 6 MB as base64: too big, as the API counts."""


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"seed": 1}, "seed: Extra inputs are not permitted"),
        ({"top_p": 2}, "top_p"),
        ({"top_p": 0.9, "temperature": 0.3}, BOTH_SAMPLERS),
        ({"tools": [TOOL], "tool_choice": {"type": "any", "disable_parallel_tool_use": "yes"}}, "valid boolean"),
        ({"tool_choice": {"type": "none", "disable_parallel_tool_use": True}}, "Extra inputs"),
        (images(BIG), f"image exceeds 5 MB maximum: {len(BIG)} bytes > 5242880 bytes"),
        (images(*[PNG] * 101), "too many images in the request: 101 > 100"),
        (images(*[PNG] * 20, png_of(2001, 10)), "exceed max allowed size for many-image requests: 2000 pixels"),
        ({"tool_choice": {"type": "any"}}, "only be specified while providing tools"),
        ({"tools": [TOOL], "tool_choice": {"type": "tool", "name": "nope"}}, "not found in provided tools"),
        ({"tools": [{"name": "a.b", "input_schema": {"type": "object"}}]}, "name"),
        ({"tools": [{"name": "x", "input_schema": {"type": "array"}}]}, "input_schema.type"),
        (image({"type": "base64", "media_type": "image/bmp", "data": PNG}), "media_type"),
        (image({"type": "base64", "media_type": "image/jpeg", "data": PNG}), "appears to be a image/png image"),
        (image({"type": "base64", "media_type": "image/png", "data": "bm90IGFuIGltYWdl"}), "Could not process image"),
        (image({"type": "base64", "media_type": "image/png", "data": ""}), "image cannot be empty"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "image_url"),
        ({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}]},
            {"role": "user", "content": "no result"},
        ]}, "without `tool_result` blocks"),
        ({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"},
                                         {"type": "tool_result", "tool_use_id": "toolu_9"}]},
        ]}, "unexpected `tool_use_id`"),
    ],
)
def test_requests_the_api_refuses_are_refused_with_its_error_body(
    fake: FakeProvider, client: httpx.Client, extra: dict[str, Any], said: str
) -> None:
    resp = post(client, fake, stream=False, **extra)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert said in body["error"]["message"]


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [TOOL], "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
        {"top_p": 0.9},
        images(png_of(100, 100, padding=5 * 1024 * 1024 * 3 // 4 - 40)),
        images(*[PNG] * 100),
        images(*[PNG] * 19, png_of(8000, 10)),
    ],
    ids=["one-tool-call", "top_p-alone", "5MB-as-base64", "100-images", "20-images-8000px"],
)
def test_requests_at_the_documented_limits_are_accepted(
    fake: FakeProvider, client: httpx.Client, extra: dict[str, Any]
) -> None:
    resp = post(client, fake, stream=False, **extra)
    assert resp.status_code == 200, resp.text


def test_an_image_by_url_and_tool_results_in_order_are_accepted(fake: FakeProvider, client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                                          {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
                                     {"type": "tool_result", "tool_use_id": "toolu_1"},
                                     {"type": "text", "text": "thanks"}]},
    ]
    resp = post(client, fake, stream=False, messages=messages, tools=[TOOL])
    assert resp.status_code == 200, resp.text
