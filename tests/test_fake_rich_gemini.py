"""The fake Gemini API itself, with plain httpx: it refuses what Gemini refuses in rich requests
(so adapter tests passing against it mean Gemini would take the bodies) and answers with tool
calls in Gemini's shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .fakes import FakeProvider

URL = "/v1beta/models/gemini-test-1:generateContent"
ASK = [{"role": "user", "parts": [{"text": "hi"}]}]


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("gemini") as server:
        yield server


def post(fake: FakeProvider, body: dict[str, Any], path: str = URL) -> httpx.Response:
    with httpx.Client(base_url=fake.base_url, headers={"x-goog-api-key": fake.api_key or ""}) as client:
        return client.post(path, json=body)


def refusal(fake: FakeProvider, body: dict[str, Any]) -> str:
    resp = post(fake, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    return str(error["message"])


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"contents": ASK, "generationConfig": {"responseMimeType": "application/json",
                                                "responseSchema": {"type": "OBJECT", "additionalProperties": False}}},
         'Unknown name "additionalProperties"'),
        ({"contents": ASK, "generationConfig": {"responseMimeType": "application/json",
                                                "responseSchema": {"type": "object"}}}, "type"),
        ({"contents": ASK, "generationConfig": {"responseSchema": {"type": "STRING"}}}, "response_mime_type"),
        ({"contents": ASK, "generationConfig": {"stopSequences": list("abcdef")}}, "at most 5"),
        ({"contents": ASK, "generationConfig": {"stop": ["x"]}}, 'Unknown name "stop"'),
        ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/gif", "data": "R0lGOA=="}}]}]},
         "Unsupported MIME type: image/gif"),
        ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "no!"}}]}]},
         "Base64 decoding failed"),
        ({"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": ""}}]}]},
         "oneof"),
        ({"contents": [{"role": "user", "parts": [{"functionCall": {"name": "f", "args": {}}}]}]}, "model turn"),
        ({"contents": [{"role": "model", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
         "user turn"),
        ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": "x"}}]}]},
         "an object"),
        ({"contents": ASK, "tools": [{"functionDeclarations": [{"name": "no spaces"}]}]}, "Invalid function name"),
        ({"contents": ASK, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT",
                                                                "properties": {"x": {"const": 1}}}}]}]},
         'Unknown name "const"'),
        ({"contents": ASK, "tools": [{"functionDeclarations": [{"name": "f"}]}],
          "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}}},
         "only set allowed_function_names when mode is ANY"),
        ({"contents": ASK, "tools": [{"functionDeclarations": [{"name": "f"}]}],
          "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}}},
         "must be declared"),
        ({"contents": ASK, "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}, "mode"),
        # Function calling and JSON mode together, on a Gemini 2.x model (modes AUTO and ANY).
        ({"contents": ASK, "tools": [{"functionDeclarations": [{"name": "f"}]}],
          "generationConfig": {"responseMimeType": "application/json"}},
         "Function calling with a response mime type: 'application/json' is unsupported"),
        ({"contents": ASK, "tools": [{"functionDeclarations": [{"name": "f"}]}],
          "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}, "generationConfig": {"responseMimeType": "application/json"}},
         "Function calling with a response mime type"),
        # Schema shapes refused though every field is known.
        ({"contents": ASK, "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
            "type": "OBJECT", "properties": {"tags": {"type": "ARRAY"}}}}}, "items: missing field"),
        ({"contents": ASK, "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
            "type": "OBJECT", "properties": {"x": {}}}}}, "type: must be specified"),
        ({"contents": ASK, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
            "type": "OBJECT", "properties": {"meta": {"type": "OBJECT"}}}}]}]}, "properties: should be non-empty for OBJECT"),
        # Images by URL: a definite type, HTTPS.
        ({"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "https://example.com/a.png"}}]}]},
         "mime_type: missing field"),
        ({"contents": [{"role": "user", "parts": [{"fileData": {"mimeType": "image/png", "fileUri": "ftp://x/a.png"}}]}]},
         "Unsupported file uri"),
    ],
)
def test_the_fake_refuses_what_gemini_refuses(fake: FakeProvider, body: dict[str, Any], said: str) -> None:
    assert said in refusal(fake, body)


def test_the_fake_takes_a_well_formed_rich_request(fake: FakeProvider) -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "what is it?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "c2ln"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": "ok"}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "f", "description": "d", "parameters": {
            "type": "OBJECT", "properties": {"x": {"type": "INTEGER", "nullable": True}}, "required": ["x"]}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        "generationConfig": {"responseMimeType": "application/json", "stopSequences": ["a"], "topP": 0.5, "seed": 1,
                             "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING", "enum": ["x"]}},
                                                "propertyOrdering": ["a"]}},
    }
    resp = post(fake, body, "/v1beta/models/gemini-3-flash-preview:generateContent")  # (Gemini 3 takes tools and JSON mode)
    assert resp.status_code == 200, resp.text
    body["contents"][0]["parts"].append({"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}})
    del body["generationConfig"]["responseMimeType"], body["generationConfig"]["responseSchema"]
    assert post(fake, body).status_code == 200


def test_several_tool_calls_come_as_function_call_parts_and_streamed_one_chunk_each(fake: FakeProvider) -> None:
    calls = (("f", {"x": 1}), ("g", {}))
    fake.fault("tool_call", tool_calls=calls)
    parts = post(fake, {"contents": ASK}).json()["candidates"][0]["content"]["parts"]
    assert parts == [{"functionCall": {"name": "f", "args": {"x": 1}}}, {"functionCall": {"name": "g", "args": {}}}]
    fake.fault("tool_call", tool_calls=calls)
    raw = post(fake, {"contents": ASK}, "/v1beta/models/gemini-test-1:streamGenerateContent?alt=sse").text
    chunks = [json.loads(line[len("data: "):]) for line in raw.split("\r\n") if line.startswith("data: ")]
    assert [c["candidates"][0]["content"]["parts"] for c in chunks] == [
        [{"functionCall": {"name": "f", "args": {"x": 1}}}], [{"functionCall": {"name": "g", "args": {}}}], [{"text": ""}]
    ]
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, "STOP"]
    assert "candidatesTokenCount" in chunks[-1]["usageMetadata"]


def test_arguments_that_are_no_object_end_in_malformed_function_call(fake: FakeProvider) -> None:
    fake.fault("tool_call", tool_calls=(("f", '{"x": '),))
    body = post(fake, {"contents": ASK}).json()
    assert body["candidates"] == [
        {"finishReason": "MALFORMED_FUNCTION_CALL", "finishMessage": 'Malformed function call: {"x": ', "index": 0}
    ]
    assert body["usageMetadata"]["candidatesTokenCount"] == 8
