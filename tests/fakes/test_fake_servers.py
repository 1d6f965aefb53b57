"""Tests of the fake provider servers themselves, with plain httpx and hand-written parsers.

These pin the fakes to the wire formats in each provider's docs (see README.md), so adapter
tests built on them test the adapters, not the fakes.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import anyio
import httpx
import pytest

from . import KINDS, FakeProvider, Usage, refused_url, unused_url

USAGE = Usage(input_tokens=100, output_tokens=20, cached_tokens=30, cache_write_tokens=5)


# -- hand-written wire parsers (independent of the fakes' code) -----------------------------


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """(event, data) pairs per the SSE format: fields per line, a blank line ends an event."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    data: list[str] = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        if line == "":
            if data or name:
                events.append((name, "\n".join(data)))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    return events


def ndjson(raw: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def request_for(
    fake: FakeProvider, *, stream: bool, text: str = "hello there", model: str | None = None, **extra: Any
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """URL, headers and JSON body a well-behaved client would send, from each provider's docs."""
    kind = fake.kind
    model = model or fake.models[0]
    if kind == "anthropic":
        body = {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }
        return (
            fake.base_url + "/v1/messages",
            {"x-api-key": str(fake.api_key), "anthropic-version": "2023-06-01"},
            {**body, **extra},
        )
    if kind == "openai":
        body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return (
            fake.base_url + "/chat/completions",
            {"authorization": f"Bearer {fake.api_key}"},
            {**body, **extra},
        )
    if kind == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        return (
            f"{fake.base_url}/v1beta/models/{model}:{method}",
            {"x-goog-api-key": str(fake.api_key)},
            {**body, **extra},
        )
    headers = {"authorization": f"Bearer {fake.api_key}"} if fake.api_key else {}
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    return fake.base_url + "/api/chat", headers, {**body, **extra}


def post(client: httpx.Client, fake: FakeProvider, *, stream: bool, **kw: Any) -> httpx.Response:
    url, headers, body = request_for(fake, stream=stream, **kw)
    return client.post(url, headers=headers, json=body)


def parse_json_reply(kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any] | None, str]:
    """(text, usage fields in the provider's own names, finish reason) from a non-stream reply."""
    if kind == "anthropic":
        return "".join(b["text"] for b in body["content"]), body.get("usage"), body["stop_reason"]
    if kind == "openai":
        choice = body["choices"][0]
        return choice["message"]["content"], body.get("usage"), choice["finish_reason"]
    if kind == "gemini":
        cand = body["candidates"][0]
        return (
            "".join(p["text"] for p in cand["content"]["parts"]),
            body.get("usageMetadata"),
            cand["finishReason"],
        )
    usage: dict[str, Any] | None = {k: body[k] for k in ("prompt_eval_count", "eval_count") if k in body}
    return body["message"]["content"], usage or None, body["done_reason"]


def parse_stream(kind: str, raw: str) -> tuple[str, dict[str, Any] | None, str | None, bool]:
    """(text, usage, finish, saw the provider's terminating event) from a streamed body."""
    text, usage, finish, terminated = "", None, None, False
    if kind == "anthropic":
        for name, data in sse_events(raw):
            event = json.loads(data)
            assert event["type"] == name  # docs: SSE event name matches data.type
            if name == "message_start":
                usage = dict(event["message"].get("usage") or {}) or None
            elif name == "content_block_delta":
                text += event["delta"]["text"]
            elif name == "message_delta":
                finish = event["delta"]["stop_reason"]
                if "usage" in event and usage is not None:
                    usage.update(event["usage"])  # cumulative counts replace earlier ones
            elif name == "message_stop":
                terminated = True
    elif kind == "openai":
        for _, data in sse_events(raw):
            if data == "[DONE]":
                terminated = True
                continue
            chunk = json.loads(data)
            assert chunk["object"] == "chat.completion.chunk"
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
                finish = choice["finish_reason"] or finish
            if chunk.get("usage"):
                assert chunk["choices"] == []  # docs: the usage chunk has empty choices
                usage = chunk["usage"]
    elif kind == "gemini":
        for _, data in sse_events(raw):
            chunk = json.loads(data)
            for cand in chunk.get("candidates", []):
                text += "".join(p.get("text", "") for p in cand["content"]["parts"])
                if "finishReason" in cand:
                    finish, terminated = cand["finishReason"], True
            usage = chunk.get("usageMetadata", usage)
    else:
        for line in ndjson(raw):
            text += line["message"]["content"]
            if line["done"]:
                terminated, finish = True, line["done_reason"]
                usage = {k: line[k] for k in ("prompt_eval_count", "eval_count") if k in line} or None
    return text, usage, finish, terminated


def expected_usage(kind: str, u: Usage) -> dict[str, int]:
    if kind == "anthropic":
        return {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cached_tokens,
            "cache_creation_input_tokens": u.cache_write_tokens,
        }
    if kind == "openai":
        prompt = u.input_tokens + u.cached_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": u.output_tokens,
            "total_tokens": prompt + u.output_tokens,
        }
    if kind == "gemini":
        prompt = u.input_tokens + u.cached_tokens
        return {
            "promptTokenCount": prompt,
            "candidatesTokenCount": u.output_tokens,
            "totalTokenCount": prompt + u.output_tokens,
            "cachedContentTokenCount": u.cached_tokens,
        }
    return {"prompt_eval_count": u.input_tokens, "eval_count": u.output_tokens}


def assert_usage(kind: str, got: dict[str, Any] | None, u: Usage) -> None:
    assert got is not None
    for key, value in expected_usage(kind, u).items():
        assert got[key] == value, key
    if kind == "openai":
        assert got["prompt_tokens_details"]["cached_tokens"] == u.cached_tokens


STOP = {"anthropic": "end_turn", "openai": "stop", "gemini": "STOP", "ollama": "stop"}


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Any:
    yield
    alive = [t.name for t in threading.enumerate() if t.name.startswith("fake-provider")]
    assert not alive, f"fake server threads still alive: {alive}"


@pytest.fixture(params=KINDS)
def fake(request: pytest.FixtureRequest) -> Any:
    with FakeProvider(request.param, usage=USAGE) as f:
        yield f
    assert not f.server_errors


def make_client(timeout: float | httpx.Timeout = 30.0) -> httpx.Client:
    """Plain-HTTP client; verify=False skips loading CA certificates (~85 ms per client). Its
    timeout only ends a test gone wrong (tests of timeouts give their own): wide enough for an
    answer to get through a paused machine."""
    return httpx.Client(timeout=timeout, verify=False)


@pytest.fixture
def client() -> Any:
    with make_client() as c:
        yield c


# -- normal replies --------------------------------------------------------------------------


def test_json_reply(fake: FakeProvider, client: httpx.Client) -> None:
    resp = post(client, fake, stream=False, text="what is two plus two")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    text, usage, finish = parse_json_reply(fake.kind, body)
    assert text == "echo: what is two plus two"
    assert finish == STOP[fake.kind]
    assert_usage(fake.kind, usage, USAGE)
    if fake.kind == "anthropic":
        assert body["type"] == "message" and body["role"] == "assistant" and body["stop_sequence"] is None
        assert body["id"].startswith("msg_") and resp.headers["request-id"]
    elif fake.kind == "openai":
        assert body["object"] == "chat.completion" and isinstance(body["created"], int)
        assert body["choices"][0]["message"]["role"] == "assistant"
    elif fake.kind == "gemini":
        assert body["candidates"][0]["content"]["role"] == "model"
        assert body["modelVersion"] == fake.models[0]
    else:
        assert body["done"] is True and body["message"]["role"] == "assistant"
        for key in ("created_at", "total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
            assert key in body


def test_stream_reply(fake: FakeProvider, client: httpx.Client) -> None:
    resp = post(client, fake, stream=True, text="stream me")
    assert resp.status_code == 200
    expected_type = "application/x-ndjson" if fake.kind == "ollama" else "text/event-stream"
    assert resp.headers["content-type"] == expected_type
    text, usage, finish, terminated = parse_stream(fake.kind, resp.text)
    assert text == "echo: stream me"
    assert finish == STOP[fake.kind] and terminated
    assert_usage(fake.kind, usage, USAGE)


def test_anthropic_stream_event_order(client: httpx.Client) -> None:
    with FakeProvider("anthropic") as fake:
        fake.reply(chunks=("Hel", "lo"))
        names = [n for n, _ in sse_events(post(client, fake, stream=True).text)]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_openai_stream_without_include_usage_has_no_usage_chunk(client: httpx.Client) -> None:
    with FakeProvider("openai") as fake:
        url, headers, body = request_for(fake, stream=True)
        del body["stream_options"]
        raw = client.post(url, headers=headers, json=body).text
    chunks = [json.loads(d) for _, d in sse_events(raw) if d != "[DONE]"]
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert raw.rstrip().endswith("data: [DONE]")


def test_ollama_streams_by_default(client: httpx.Client) -> None:
    with FakeProvider("ollama") as fake:
        url, headers, body = request_for(fake, stream=False)
        del body["stream"]  # Ollama's default is stream=true
        resp = client.post(url, headers=headers, json=body)
    lines = ndjson(resp.text)
    assert resp.headers["content-type"] == "application/x-ndjson"
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]


def test_gemini_stream_without_alt_sse_is_a_json_array(client: httpx.Client) -> None:
    with FakeProvider("gemini") as fake:
        url, headers, body = request_for(fake, stream=True)
        resp = client.post(url.replace("?alt=sse", ""), headers=headers, json=body)
    chunks = resp.json()
    assert isinstance(chunks, list) and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "candidatesTokenCount" in chunks[-1]["usageMetadata"]


def test_scripted_text_usage_and_finish(fake: FakeProvider, client: httpx.Client) -> None:
    custom = Usage(input_tokens=7, output_tokens=3, cached_tokens=2, cache_write_tokens=1)
    fake.reply(text="exactly this", usage=custom, finish="length")
    text, usage, finish = parse_json_reply(fake.kind, post(client, fake, stream=False).json())
    assert text == "exactly this"
    assert_usage(fake.kind, usage, custom)
    assert (
        finish
        == {"anthropic": "max_tokens", "openai": "length", "gemini": "MAX_TOKENS", "ollama": "length"}[
            fake.kind
        ]
    )
    # the script is used up: the next call is the default echo again
    assert parse_json_reply(fake.kind, post(client, fake, stream=False, text="x").json())[0] == "echo: x"


def test_fixed_default_text(client: httpx.Client) -> None:
    with FakeProvider("openai", text="always this") as fake:
        assert parse_json_reply("openai", post(client, fake, stream=False).json())[0] == "always this"


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_auth_missing_and_wrong_key(kind: str, client: httpx.Client) -> None:
    with FakeProvider(kind, api_key="right-key-123456") as fake:  # type: ignore[arg-type]
        url, headers, body = request_for(fake, stream=False)
        missing = client.post(
            url,
            json=body,
            headers={
                k: v for k, v in headers.items() if k not in ("x-api-key", "authorization", "x-goog-api-key")
            },
        )
        wrong_headers = {
            k: (
                "Bearer wrong-key-000000"
                if k == "authorization"
                else "wrong-key-000000"
                if k in ("x-api-key", "x-goog-api-key")
                else v
            )
            for k, v in headers.items()
        }
        wrong = client.post(url, json=body, headers=wrong_headers)
        assert fake.counts[httpx.URL(url).path] == 2  # both reached the server and were logged
    if kind == "anthropic":
        for r in (missing, wrong):
            assert r.status_code == 401
            assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
    elif kind == "openai":
        assert missing.status_code == wrong.status_code == 401
        assert missing.json()["error"]["type"] == "invalid_request_error"
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert set(wrong.json()["error"]) == {"message", "type", "param", "code"}
    elif kind == "gemini":  # Google answers a missing key 403, a bad key 400 API_KEY_INVALID
        assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
        assert wrong.status_code == 400 and wrong.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    else:
        assert missing.status_code == wrong.status_code == 401
        assert missing.json() == {"error": "unauthorized"}


def test_gemini_accepts_key_query_parameter(client: httpx.Client) -> None:
    with FakeProvider("gemini") as fake:
        url, _, body = request_for(fake, stream=False)
        assert client.post(url, params={"key": fake.api_key}, json=body).status_code == 200


def test_anthropic_requires_version_header(client: httpx.Client) -> None:
    with FakeProvider("anthropic") as fake:
        url, headers, body = request_for(fake, stream=False)
        del headers["anthropic-version"]
        resp = client.post(url, headers=headers, json=body)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_ollama_without_key_needs_no_auth(client: httpx.Client) -> None:
    with FakeProvider("ollama") as fake:
        assert fake.api_key is None
        assert post(client, fake, stream=False).status_code == 200


# -- request validation catches adapter mistakes ---------------------------------------------


@pytest.mark.parametrize(
    ("kind", "change", "needle"),
    [
        ("anthropic", {"max_tokens": None}, "max_tokens"),
        ("anthropic", {"messages": [{"role": "system", "content": "x"}]}, "role"),
        ("anthropic", {"system": [{"type": "image"}]}, "system"),
        ("anthropic", {"temperature": 1.5}, "temperature"),
        ("openai", {"stream_options": {"include_usage": True}}, "stream_options"),
        ("openai", {"messages": [{"role": "model", "content": "x"}]}, "role"),
        ("gemini", {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "role"),
        ("gemini", {"max_tokens": 5}, "max_tokens"),
        ("ollama", {"model": ""}, "model"),
    ],
)
def test_validation_errors(kind: str, change: dict[str, Any], needle: str, client: httpx.Client) -> None:
    with FakeProvider(kind) as fake:  # type: ignore[arg-type]
        url, headers, body = request_for(fake, stream=False)
        body.update(change)
        body = {k: v for k, v in body.items() if v is not None}
        resp = client.post(url, headers=headers, json=body)
    assert resp.status_code == 400
    assert needle in json.dumps(resp.json())


def test_valid_optional_fields_are_accepted(client: httpx.Client) -> None:
    with (
        FakeProvider("anthropic") as a,
        FakeProvider("openai") as o,
        FakeProvider("gemini") as g,
        FakeProvider("ollama") as ol,
    ):
        assert (
            post(
                client, a, stream=False, system=[{"type": "text", "text": "be brief"}], temperature=0.2
            ).status_code
            == 200
        )
        assert post(client, a, stream=False, system="be brief").status_code == 200
        assert post(client, o, stream=False, max_completion_tokens=10, temperature=1.5).status_code == 200
        assert (
            post(
                client,
                g,
                stream=False,
                systemInstruction={"parts": [{"text": "be brief"}]},
                generationConfig={"maxOutputTokens": 10, "temperature": 0.5},
            ).status_code
            == 200
        )
        assert (
            post(client, ol, stream=False, options={"num_predict": 10, "temperature": 0.1}).status_code == 200
        )


# -- faults ----------------------------------------------------------------------------------


def test_status_fault_with_retry_after(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("status", status=429, retry_after=7)
    resp = post(client, fake, stream=True)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    body = resp.json()
    if fake.kind == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert body["error"]["message"]
    elif fake.kind == "openai":
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert set(body["error"]) == {"message", "type", "param", "code"}
    elif fake.kind == "gemini":
        assert body["error"] == {
            "code": 429,
            "message": body["error"]["message"],
            "status": "RESOURCE_EXHAUSTED",
        }
    else:
        assert set(body) == {"error"} and isinstance(body["error"], str)
    assert post(client, fake, stream=False).status_code == 200  # one-shot by default


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_documented_error_types(status: int, etype: str, client: httpx.Client) -> None:
    with FakeProvider("anthropic") as fake:
        fake.fault("status", status=status)
        resp = post(client, fake, stream=False)
    assert resp.status_code == status and resp.json()["error"]["type"] == etype


@pytest.mark.parametrize(
    ("status", "gstatus"),
    [
        (400, "INVALID_ARGUMENT"),
        (403, "PERMISSION_DENIED"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ],
)
def test_gemini_documented_statuses(status: int, gstatus: str, client: httpx.Client) -> None:
    with FakeProvider("gemini") as fake:
        fake.fault("status", status=status)
        resp = post(client, fake, stream=False)
    assert resp.status_code == status and resp.json()["error"]["status"] == gstatus
    assert resp.json()["error"]["code"] == status


def test_openai_error_codes(client: httpx.Client) -> None:
    with FakeProvider("openai") as fake:
        fake.fault("status", status=400, code="context_length_exceeded")
        fake.fault("status", status=429, error_type="insufficient_quota")
        fake.fault("status", status=500)
        too_long, quota, server = (post(client, fake, stream=False).json()["error"] for _ in range(3))
    assert too_long["code"] == "context_length_exceeded" and too_long["type"] == "invalid_request_error"
    assert too_long["param"] == "messages"
    assert quota["type"] == quota["code"] == "insufficient_quota"
    assert server["type"] == "server_error"


def test_ollama_model_not_found(client: httpx.Client) -> None:
    with FakeProvider("ollama") as fake:
        fake.fault("status", status=404)
        resp = post(client, fake, stream=False, model="nope:latest")
    assert resp.status_code == 404
    assert resp.json() == {"error": 'model "nope:latest" not found, try pulling it first'}


def test_hang_times_out_and_stop_is_prompt(fake: FakeProvider) -> None:
    fake.fault("hang")
    with make_client(0.2) as c, pytest.raises(httpx.ReadTimeout):
        post(c, fake, stream=False)
    assert len(fake.requests) == 1  # it reached the server


def test_stop_cancels_a_request_that_is_still_hanging() -> None:
    """The hang is cut by the server (stop raises if it cannot end it within its timeout), not by
    the client's timeout, which is far longer. No stopwatch: a busy machine is slow, not wrong."""
    fake = FakeProvider("openai").start()
    fake.fault("hang")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with make_client(120) as c:
                post(c, fake, stream=False)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    fake.wait_for_requests(1)
    fake.stop()
    caller.join(60)
    assert not caller.is_alive()
    assert errors and isinstance(errors[0], httpx.RemoteProtocolError)


def test_close_drops_the_connection(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("close")
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, fake, stream=False)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_body(fake: FakeProvider, client: httpx.Client, stream: bool) -> None:
    fake.fault("malformed")
    resp = post(client, fake, stream=stream)
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        if stream and fake.kind == "ollama":
            ndjson(resp.text)
        elif stream:
            [json.loads(d) for _, d in sse_events(resp.text)]
        else:
            resp.json()


def test_malformed_missing_fields(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("malformed", malformed="missing_fields")
    resp = post(client, fake, stream=False)
    assert resp.status_code == 200
    with pytest.raises((KeyError, IndexError)):
        parse_json_reply(fake.kind, resp.json())


def test_cut_stream_drops_connection_mid_stream(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("cut_stream", after_chunks=1)
    url, headers, body = request_for(fake, stream=True)
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", url, headers=headers, json=body) as r,
    ):
        assert r.status_code == 200
        for part in r.iter_raw():
            received += part
    text, _, _, terminated = parse_stream(fake.kind, received.decode())
    assert not terminated
    assert text == "echo: hello there"[: len(text)] and 0 < len(text) < len("echo: hello there")


def test_cut_stream_clean_eof_ends_without_terminator(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("cut_stream", after_chunks=2, clean_eof=True)
    resp = post(client, fake, stream=True)  # HTTP-complete, protocol-incomplete
    _, _, _, terminated = parse_stream(fake.kind, resp.text)
    assert not terminated


def test_cut_non_stream_body(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("cut_stream")
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, fake, stream=False)


def test_stall_sends_some_chunks_then_goes_silent(fake: FakeProvider) -> None:
    fake.fault("stall", after_chunks=1)
    url, headers, body = request_for(fake, stream=True)
    received = b""
    with (
        make_client(httpx.Timeout(3.0, read=0.2)) as c,
        pytest.raises(httpx.ReadTimeout),
        c.stream("POST", url, headers=headers, json=body) as r,
    ):
        for part in r.iter_raw():
            received += part
    assert received


@pytest.mark.parametrize("stream", [False, True])
def test_no_usage(fake: FakeProvider, client: httpx.Client, stream: bool) -> None:
    fake.fault("no_usage")
    resp = post(client, fake, stream=stream)
    assert resp.status_code == 200
    if stream:
        text, usage, _, terminated = parse_stream(fake.kind, resp.text)
        assert terminated
    else:
        text, usage, _ = parse_json_reply(fake.kind, resp.json())
    assert text == "echo: hello there"
    assert usage is None
    assert "input_tokens" not in resp.text and "prompt_tokens" not in resp.text
    assert "TokenCount" not in resp.text and "eval_count" not in resp.text


def test_slow_delays_the_answer(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fault("slow", delay=0.15)
    started = time.monotonic()
    assert post(client, fake, stream=False).status_code == 200
    assert time.monotonic() - started >= 0.15
    with make_client(0.05) as quick:
        # Far slower than the client waits: on a busy machine the server's 0.3 s could pass before
        # the client's 0.05 s timeout was ever looked at, and the answer came through. Stop cuts it.
        fake.fault("slow", delay=60)
        with pytest.raises(httpx.ReadTimeout):
            post(quick, fake, stream=False)


def test_chunk_delay_spaces_stream_frames(client: httpx.Client) -> None:
    with FakeProvider("openai") as fake:
        fake.reply(chunks=("a", "b", "c"), chunk_delay=0.05)
        started = time.monotonic()
        assert parse_stream("openai", post(client, fake, stream=True).text)[0] == "abc"
        assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_blocked(kind: str, stream: bool, client: httpx.Client) -> None:
    with FakeProvider(kind) as fake:  # type: ignore[arg-type]
        fake.fault("blocked")
        resp = post(client, fake, stream=stream)
    assert resp.status_code == 200
    if kind == "gemini":
        chunks = [json.loads(d) for _, d in sse_events(resp.text)] if stream else [resp.json()]
        assert chunks[-1]["promptFeedback"]["blockReason"] == "SAFETY"
        assert "candidates" not in chunks[-1]
        return
    if stream:
        text, _, finish, _ = parse_stream(kind, resp.text)
    else:
        text, _, finish = parse_json_reply(kind, resp.json())
    assert text == ""
    assert finish == {"anthropic": "refusal", "openai": "content_filter"}[kind]


def test_gemini_candidate_safety_finish(client: httpx.Client) -> None:
    with FakeProvider("gemini") as fake:
        fake.reply(finish="filter")
        assert parse_json_reply("gemini", post(client, fake, stream=False).json())[2] == "SAFETY"


def test_unsupported_faults_are_rejected_up_front() -> None:
    fake = FakeProvider("ollama")  # never started: checks happen when queueing
    with pytest.raises(ValueError):
        fake.fault("blocked")
    with pytest.raises(ValueError):
        fake.reply(finish="filter")
    with pytest.raises(ValueError):
        FakeProvider("openai").fault("stream_error")
    with pytest.raises(ValueError):
        fake.fault("status")  # needs status=
    with pytest.raises(ValueError):
        fake.fault("slow")  # needs delay=
    with pytest.raises(TypeError):
        fake.fault("status", status=500, bogus=1)


@pytest.mark.parametrize("kind", ["anthropic", "ollama"])
def test_stream_error_event(kind: str, client: httpx.Client) -> None:
    with FakeProvider(kind) as fake:  # type: ignore[arg-type]
        fake.fault("stream_error", after_chunks=1)
        resp = post(client, fake, stream=True)
        fake.fault("stream_error")
        non_stream = post(client, fake, stream=False)
    assert resp.status_code == 200
    if kind == "anthropic":
        name, data = sse_events(resp.text)[-1]
        assert name == "error" and json.loads(data)["error"]["type"] == "overloaded_error"
        assert non_stream.status_code == 529
    else:
        last = ndjson(resp.text)[-1]
        assert set(last) == {"error"}
        assert non_stream.status_code == 500 and "error" in non_stream.json()


# -- scripting semantics, request log, models, lifecycle -------------------------------------


def test_script_order_times_and_persistent_steps(client: httpx.Client) -> None:
    with FakeProvider("openai") as fake:
        fake.fault("status", status=500, times=2)
        fake.reply(text="third")
        assert [post(client, fake, stream=False).status_code for _ in range(3)] == [500, 500, 200]
        assert fake.pending == 0
        fake.fault("status", status=503, times=None)
        assert {post(client, fake, stream=False).status_code for _ in range(3)} == {503}
        assert fake.pending == 1
        fake.clear()
        assert fake.pending == 0 and fake.requests == []
        assert post(client, fake, stream=False).status_code == 200


def test_request_log_and_counts(fake: FakeProvider, client: httpx.Client) -> None:
    assert fake.requests == [] and sum(fake.counts.values()) == 0
    url, headers, body = request_for(fake, stream=False, text="logged")
    client.post(url, headers={**headers, "X-Custom": "Yes"}, json=body)
    req = fake.last_request
    assert req.method == "POST"
    assert req.path == httpx.URL(url).path
    assert req.headers["x-custom"] == "Yes"  # names lowercased, values kept
    assert req.json == body and json.loads(req.body) == body
    assert fake.counts[req.path] == 1


def test_models_endpoint(fake: FakeProvider, client: httpx.Client) -> None:
    _, headers, _ = request_for(fake, stream=False)
    path = {
        "anthropic": "/v1/models",
        "openai": "/models",
        "gemini": "/v1beta/models",
        "ollama": "/api/tags",
    }[fake.kind]
    resp = client.get(fake.base_url + path, headers=headers)
    assert resp.status_code == 200
    body = resp.json()
    if fake.kind == "anthropic":
        assert body["data"][0]["id"] == fake.models[0] and body["has_more"] is False
    elif fake.kind == "openai":
        assert body["object"] == "list" and body["data"][0]["object"] == "model"
    elif fake.kind == "gemini":
        assert body["models"][0]["name"] == f"models/{fake.models[0]}"
    else:
        assert body["models"][0]["name"] == fake.models[0] and "details" in body["models"][0]
    # generation steps are not consumed by model listing, and vice versa
    fake.fault("status", status=500, endpoint="models")
    assert client.get(fake.base_url + path, headers=headers).status_code == 500
    assert post(client, fake, stream=False).status_code == 200


def test_unknown_path_is_404(fake: FakeProvider, client: httpx.Client) -> None:
    assert client.post(fake.root_url + "/nowhere", json={}).status_code == 404


def test_openai_alternative_base_path(client: httpx.Client) -> None:
    with FakeProvider("openai", base_path="/openai/v1") as fake:
        assert fake.base_url.endswith("/openai/v1")
        assert post(client, fake, stream=False).status_code == 200
        assert client.post(fake.root_url + "/v1/chat/completions", json={}).status_code == 404


def test_refused_url(client: httpx.Client) -> None:
    with refused_url("/v1") as url:
        assert url.endswith("/v1")
        with pytest.raises(httpx.ConnectError):
            client.get(url + "/models")
    assert unused_url().startswith("http://127.0.0.1:")


def test_base_urls_bind_localhost_only() -> None:
    for kind in KINDS:
        with FakeProvider(kind) as fake:
            assert fake.root_url.startswith("http://127.0.0.1:") and fake.port > 0
            assert fake.base_url == fake.root_url + ("/v1" if kind == "openai" else "")


def test_stop_is_idempotent_and_bounded() -> None:
    """Bounded by stop's own timeout (it raises past it), rather than by a stopwatch here."""
    fake = FakeProvider("anthropic").start()
    fake.stop()
    fake.stop()
    assert fake._thread is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_usable_from_async_tests() -> None:
    async with FakeProvider("gemini", usage=USAGE) as fake:
        fake.fault("status", status=503)
        async with httpx.AsyncClient(timeout=30, verify=False) as client:
            url, headers, body = request_for(fake, stream=True)
            assert (await client.post(url, headers=headers, json=body)).status_code == 503
            async with client.stream("POST", url, headers=headers, json=body) as resp:
                raw = "".join([part async for part in resp.aiter_text()])
        text, usage, _, terminated = parse_stream("gemini", raw)
        assert text == "echo: hello there" and terminated
        assert_usage("gemini", usage, USAGE)
        await anyio.to_thread.run_sync(fake.wait_for_requests, 2)
