"""The fakes' hostile shapes, pinned with plain httpx and the hand-written parsers of
``test_fake_servers``: tool-call-only answers in each provider's documented form, JSON to a stream
request, an HTML 200, context errors that state the window, broken Unicode on the wire, and the
side endpoints (llama.cpp ``/props`` and ``/tokenize``, Ollama ``/api/show`` and ``/api/ps``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from . import KINDS, FakeProvider, Usage
from .dialect import TOOL_ARGS
from .side_endpoints import fake_tokens
from .test_fake_servers import make_client, ndjson, parse_json_reply, post, sse_events

USAGE = Usage(input_tokens=30, output_tokens=7)


@pytest.fixture(params=KINDS)
def fake(request: pytest.FixtureRequest) -> Any:
    with FakeProvider(request.param, usage=USAGE) as f:
        yield f
    assert not f.server_errors


@pytest.fixture
def client() -> Any:
    with make_client() as c:
        yield c


def tool_calls_in_json(kind: str, body: dict[str, Any]) -> tuple[list[tuple[str, Any]], str, str]:
    """((name, arguments) per call, text, finish) from a non-stream answer, per each provider's docs."""
    if kind == "anthropic":
        calls = [(b["name"], b["input"]) for b in body["content"] if b["type"] == "tool_use"]
        text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
        return calls, text, body["stop_reason"]
    if kind == "openai":
        message = body["choices"][0]["message"]
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]]
        assert all(c["type"] == "function" and c["id"] for c in message["tool_calls"])
        return calls, message["content"] or "", body["choices"][0]["finish_reason"]
    if kind == "gemini":
        candidate = body["candidates"][0]
        parts = candidate["content"]["parts"]
        calls = [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts if "functionCall" in p]
        return calls, "".join(p.get("text", "") for p in parts), candidate["finishReason"]
    message = body["message"]
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
    return calls, message["content"], body["done_reason"]


def tool_calls_in_stream(kind: str, raw: str) -> tuple[list[tuple[str, Any]], str, str | None]:
    """The same from a stream: arguments reassembled from their pieces where they come in pieces."""
    calls: list[tuple[str, Any]] = []
    text, finish = "", None
    if kind == "anthropic":
        pending: dict[int, list[Any]] = {}
        for name, data in sse_events(raw):
            event = json.loads(data)
            if name == "content_block_start" and event["content_block"]["type"] == "tool_use":
                pending[event["index"]] = [event["content_block"]["name"], ""]
            elif name == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
                pending[event["index"]][1] += event["delta"]["partial_json"]
            elif name == "content_block_delta":
                text += event["delta"]["text"]
            elif name == "content_block_stop" and event["index"] in pending:
                tool, args = pending.pop(event["index"])
                calls.append((tool, json.loads(args)))
            elif name == "message_delta":
                finish = event["delta"]["stop_reason"]
    elif kind == "openai":
        building: dict[int, list[Any]] = {}
        for _, data in sse_events(raw):
            if data == "[DONE]":
                continue
            for choice in json.loads(data)["choices"]:
                delta = choice["delta"]
                text += delta.get("content") or ""
                for call in delta.get("tool_calls") or ():
                    entry = building.setdefault(call["index"], ["", ""])
                    entry[0] += call.get("function", {}).get("name") or ""
                    entry[1] += call.get("function", {}).get("arguments") or ""
                finish = choice["finish_reason"] or finish
        calls = [(name, json.loads(args)) for name, args in building.values()]
    elif kind == "gemini":
        for _, data in sse_events(raw):
            candidate = json.loads(data)["candidates"][0]
            for part in candidate["content"]["parts"]:
                if "functionCall" in part:
                    calls.append((part["functionCall"]["name"], part["functionCall"]["args"]))
                else:
                    text += part.get("text", "")
            finish = candidate.get("finishReason", finish)
    else:
        for line in ndjson(raw):
            text += line["message"]["content"]
            calls += [(c["function"]["name"], c["function"]["arguments"]) for c in line["message"].get("tool_calls", [])]
            if line["done"]:
                finish = line["done_reason"]
    return calls, text, finish


TOOL_FINISH = {"anthropic": "tool_use", "openai": "tool_calls", "gemini": "STOP", "ollama": "stop"}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tool_call_only_answers_take_each_providers_documented_shape(
    fake: FakeProvider, client: httpx.Client, stream: bool
) -> None:
    fake.fault("tool_call", tool_name="lookup_order")
    resp = post(client, fake, stream=stream)
    assert resp.status_code == 200
    calls, text, finish = tool_calls_in_stream(fake.kind, resp.text) if stream else tool_calls_in_json(
        fake.kind, resp.json())
    assert calls == [("lookup_order", TOOL_ARGS)]
    assert text == "" and finish == TOOL_FINISH[fake.kind]


@pytest.mark.parametrize("fake", ["anthropic", "openai"], indirect=True)
def test_a_tool_call_may_follow_a_text_preamble(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("tool_call", text="Let me look.")
    calls, text, finish = tool_calls_in_stream(fake.kind, post(client, fake, stream=True).text)
    assert calls == [("get_weather", TOOL_ARGS)] and text == "Let me look." and finish == TOOL_FINISH[fake.kind]


def test_json_to_a_stream_request_is_the_plain_answer(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("json_to_stream", text="all at once")
    resp = post(client, fake, stream=True)
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    text = {
        "anthropic": lambda: body["content"][0]["text"],
        "openai": lambda: body["choices"][0]["message"]["content"],
        "gemini": lambda: body["candidates"][0]["content"]["parts"][0]["text"],
        "ollama": lambda: body["message"]["content"],
    }[fake.kind]()
    assert text == "all at once"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_html_is_a_200_page_whatever_was_asked(fake: FakeProvider, client: httpx.Client, stream: bool) -> None:
    fake.fault("html")
    resp = post(client, fake, stream=stream)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert resp.text.startswith("<!DOCTYPE html>")


CONTEXT_ERRORS = {
    ("openai", None): ("context_length_exceeded", "maximum context length is 5000 tokens"),
    ("openai", "llama.cpp"): ("exceed_context_size_error", "exceeds the available context size (5000 tokens)"),
    ("openai", "llama.cpp-old"): ("exceed_context_size_error", "the request exceeds the available context size"),
    ("anthropic", None): ("invalid_request_error", "tokens > 5000 maximum"),
    ("gemini", None): ("INVALID_ARGUMENT", "exceeds the maximum number of tokens allowed (5000)"),
    ("ollama", None): (None, "prompt too long; exceeded max context length by 100 tokens"),
}


@pytest.mark.parametrize(("kind", "flavor"), list(CONTEXT_ERRORS))
def test_context_errors_are_worded_as_each_server_words_them(kind: str, flavor: str | None) -> None:
    with FakeProvider(kind) as fake, make_client() as client:
        fake.fault("context", window=5000, flavor=flavor)
        resp = post(client, fake, stream=False)
    assert resp.status_code == 400
    kind_word, phrase = CONTEXT_ERRORS[(kind, flavor)]
    error = resp.json()["error"]
    if kind == "ollama":
        assert error == phrase
        return
    assert phrase in error["message"]
    assert kind_word in (error.get("code"), error.get("type"), error.get("status"))
    if flavor == "llama.cpp":
        assert error["n_ctx"] == 5000 and error["n_prompt_tokens"] == 5100 and error["code"] == 400


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_lone_and_split_surrogates_go_out_escaped_as_javascript_servers_send_them(
    fake: FakeProvider, client: httpx.Client, stream: bool
) -> None:
    fake.fault("split_surrogate")
    raw = post(client, fake, stream=stream).content
    if stream:  # the pair's halves in two frames
        assert b"smile \\ud83d" in raw and b"\\ude00 done" in raw
    else:
        assert b"smile \\ud83d\\ude00 done" in raw
    fake.fault("lone_surrogate")
    raw = post(client, fake, stream=stream).content
    assert b"\\ud83d" in raw and b"\\ude00" in raw and b"\\ud83d\\ude00" not in raw


def test_wire_replace_rewrites_the_bytes_as_sent(fake: FakeProvider, client: httpx.Client) -> None:
    fake.reply(text="a @@ b", wire_replace={b"@@": b"\xff"})
    resp = post(client, fake, stream=False)
    assert b"a \xff b" in resp.content and int(resp.headers["content-length"]) == len(resp.content)


def test_llama_cpp_mode_serves_props_and_tokenize_at_the_root() -> None:
    with FakeProvider("openai", api_key=None, llama_cpp=True, n_ctx=1536) as fake, make_client() as client:
        props = client.get(fake.root_url + "/props").json()
        assert props["default_generation_settings"]["n_ctx"] == 1536 and props["total_slots"] == 1
        tokens = client.post(fake.root_url + "/tokenize", json={"content": "Hello, world!"}).json()["tokens"]
        assert tokens == fake_tokens("Hello, world!") and len(tokens) == 4
        pieces = client.post(fake.root_url + "/tokenize", json={"content": "Hi there", "with_pieces": True}).json()
        assert [p["piece"] for p in pieces["tokens"]] == ["Hi", "there"]
        resp = post(client, fake, stream=True)  # llama.cpp sends no usage chunk, even when asked
        assert all(json.loads(d).get("usage") is None for _, d in sse_events(resp.text) if d != "[DONE]")
        big = post(client, fake, stream=False, text="word " * 2000)
        assert big.status_code == 400 and big.json()["error"]["n_ctx"] == 1536
    with FakeProvider("openai") as plain, make_client() as client:
        assert client.get(plain.root_url + "/props").status_code == 404


def test_an_empty_stream_is_a_200_stream_with_no_event_and_a_json_request_is_answered(
    fake: FakeProvider, client: httpx.Client,
) -> None:
    fake.fault("empty_stream", times=2)
    resp = post(client, fake, stream=True)
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["content-type"].startswith(("text/event-stream", "application/x-ndjson"))
    answer = post(client, fake, stream=False)
    assert answer.status_code == 200 and parse_json_reply(fake.kind, answer.json())[0]


def test_llama_cpp_python_mode_serves_extras_tokenize_and_answers_a_stream_over_its_window_with_nothing() -> None:
    with FakeProvider("openai", api_key=None, llama_cpp_python=True, n_ctx=64) as fake, make_client() as client:
        root = fake.root_url
        assert client.post(root + "/tokenize", json={"content": "Hello"}).status_code == 404
        assert client.get(root + "/props").status_code == 404
        tokens = client.post(root + "/extras/tokenize", json={"input": "Hello, world!", "model": "x"}).json()
        assert tokens == {"tokens": fake_tokens("Hello, world!")}
        assert client.post(root + "/extras/tokenize/count", json={"input": "Hello, world!"}).json() == {"count": 4}
        refused = client.post(root + "/extras/tokenize", json={"content": "Hello"})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "input"]
        resp = post(client, fake, stream=True)  # no usage chunk in a stream
        assert all(json.loads(d).get("usage") is None for _, d in sse_events(resp.text) if d != "[DONE]")
        over = post(client, fake, stream=True, text="word " * 100)
        assert over.status_code == 200 and over.content == b""
        over = post(client, fake, stream=False, text="word " * 100)
        error = over.json()["error"]
        assert over.status_code == 400 and error["code"] == "context_length_exceeded"
        assert error["message"].startswith("This model's maximum context length is 64 tokens. However, you requested ")


def test_ollama_shows_the_modelfile_and_lists_loaded_models_with_their_context() -> None:
    with FakeProvider("ollama", num_ctx=8192, context_length=131072) as fake, make_client() as client:
        show = client.post(fake.root_url + "/api/show", json={"model": "llama-test"}).json()
        assert "num_ctx                        8192" in show["parameters"]
        assert show["model_info"]["general.architecture"] == "llama"
        assert show["model_info"]["llama.context_length"] == 131072
        assert client.get(fake.root_url + "/api/ps").json() == {"models": []}
        post(client, fake, stream=False)
        running = client.get(fake.root_url + "/api/ps").json()["models"]
        assert [(m["name"], m["context_length"]) for m in running] == [("llama-test:latest", 8192)]
        missing = client.post(fake.root_url + "/api/show", json={"model": "nope"})
        assert missing.status_code == 404 and "not found" in missing.json()["error"]


def test_side_endpoints_take_scripted_faults() -> None:
    with FakeProvider("ollama") as fake, make_client() as client:
        fake.fault("status", status=500, endpoint="side")
        assert client.get(fake.root_url + "/api/ps").status_code == 500
        assert client.get(fake.root_url + "/api/ps").status_code == 200
