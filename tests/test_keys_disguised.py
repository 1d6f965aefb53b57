"""A key quoted on its way (percent-encoded, JSON-escaped, base64 of its header line, HTML
character references) is still the key: redaction removes it in every such form, whole or cut off
at the end of a quote, and so does it for credentials written into a URL.

What redaction must catch is what honest software makes of a key it quotes: a gateway that
percent-encodes a URL, a JSON encoder that escapes every character (or only quotes and
backslashes), a proxy that dumps its request headers in base64, an HTML error page, a 401 that
stars out the key's tail or cuts it with an ellipsis (any 8 consecutive characters of a key are
masked). What it cannot catch is a key transformed on purpose (reversed, split into pieces of 7,
XORed): an upstream doing that already holds the key, and no text filter can undo every
transformation (see ``llm_router.redaction``).

The search (``tests/key_leaks``) undoes the same quotings independently and looks for any 8
consecutive characters of a key.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import settings_from_dict
from llm_router.engine import Engine
from llm_router.providers.errors import error_from_transport
from llm_router.redaction import Redactor, clip, mask
from llm_router.types import ServerError

from .conftest import FAKE_MODELS, settings_for_fakes
from .fakes.echoing_upstream import DISGUISES, echoing_upstreams
from .key_leaks import all_leaks, drive_every_path, files_under, leaks, ledger_files, redacting_logs, sqlite_rows
from .test_keys_never_leak import KEYS, SPECIAL_KEYS

pytestmark = pytest.mark.anyio

KEY = KEYS["openai"]


def _percent(key: str) -> str:
    return "".join(f"%{b:02X}" for b in key.encode())


QUOTINGS: dict[str, Callable[[str], str]] = {
    "as it is": lambda k: k,
    "percent-encoded, every character": _percent,
    "percent-encoded, lowercase hex": lambda k: _percent(k).lower(),
    "url-quoted (only special characters)": lambda k: quote(k, safe=""),
    "JSON \\u00xx, every character": lambda k: "".join(f"\\u{ord(c):04x}" for c in k),
    "JSON \\u00xx, every other character": lambda k: "".join(
        f"\\u{ord(c):04X}" if i % 2 else json.dumps(c)[1:-1] for i, c in enumerate(k)),
    "JSON string as json.dumps writes it": lambda k: json.dumps(k)[1:-1],
    "Python repr": lambda k: repr(k)[1:-1],
    "HTML decimal references": lambda k: "".join(f"&#{ord(c)};" for c in k),
    "HTML hex references": lambda k: "".join(f"&#x{ord(c):X};" for c in k),
    "HTML escaped": lambda k: html.escape(k),
    "base64 of its header line": lambda k: base64.b64encode(f"authorization: Bearer {k}".encode()).decode(),
    "base64 of its header line, one byte further": lambda k: base64.b64encode(f"x-api-key:  {k}".encode()).decode(),
    "base64 of its header line, two bytes further": lambda k: base64.b64encode(f"x-api-key:   {k}".encode()).decode(),
    "base64url of its header line": lambda k: base64.urlsafe_b64encode(f"x-goog-api-key: {k}".encode()).decode(),
    "base64 of the key alone": lambda k: base64.b64encode(k.encode()).decode(),
}


@pytest.mark.parametrize("quoting", list(QUOTINGS))
@pytest.mark.parametrize("key", [KEY, SPECIAL_KEYS["anthropic"], SPECIAL_KEYS["gemini"], SPECIAL_KEYS["openai"],
                                 SPECIAL_KEYS["ollama"]], ids=["random", "regex_chars", "url_chars", "percent_signs", "html_chars"])
def test_a_quoted_key_is_redacted_whole_and_cut_off_at_any_point_of_a_head(quoting: str, key: str) -> None:
    """Redacted first, then cut at every length: whatever is kept holds no 8 characters of the
    key, in any quoting a reader could undo; a quote cut inside an escape included."""
    quoted = QUOTINGS[quoting](key)
    text = f"upstream said: {quoted} | and again {quoted}"
    assert leaks("unredacted", text, {"key": key})  # the search does see the key in this quoting
    masked = mask(text, [key])
    assert masked == "upstream said: [redacted] | and again [redacted]", masked
    for cut in range(len("upstream said: "), len(text) + 1):
        head = text[:cut]  # a body read up to a cap
        found = leaks(f"cut at {cut}", mask(head, [key]), {"key": key}) + leaks(
            f"clipped at {cut}", clip(text, [key], cut), {"key": key})
        assert not found, "\n".join(found)


def test_a_key_with_a_shorter_key_inside_it_is_redacted_whole_in_every_quoting() -> None:
    inner = KEY[:40]
    outer = "prefix-.*+?\\\"" + inner + "-suffix%20"
    for quoting, how in QUOTINGS.items():
        out = mask(f"a {how(outer)} b", [outer, inner])
        assert out == "a [redacted] b", (quoting, out)


def test_ordinary_text_with_escapes_percent_signs_and_urls_is_left_alone_by_the_net() -> None:
    """The net runs on answers: their escapes, percent signs and URLs are theirs to keep."""
    redact = Redactor(KEYS.values())
    answer = ('print("50% done \\u00e9 &amp; \\\\path") # see https://api.example.com/v1?api_key=YOUR_KEY '
              "and postgresql://user:password@db/x; " + base64.b64encode(b"hello world, nothing secret").decode())
    assert redact(answer) == answer
    assert redact.scrub({"text": answer, "n": [1, answer]}) == {"text": answer, "n": [1, answer]}
    assert mask(answer, KEYS.values()).count("[redacted]") == 2  # an error's quote loses the URL credentials


@pytest.mark.parametrize("url", [
    "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent?alt=sse&key={k}",
    "https://example.com/v1?api_key={k}&x=1",
    "https://example.com/v1?access_token={k}#frag",
    "https://proxy-user:{k}@proxy.internal:8443/v1",
])
def test_a_credential_in_a_url_quoted_by_an_error_is_never_printed_known_or_not(url: str) -> None:
    """httpx errors and upstream messages can name a request's URL: its credentials go, whether
    or not they are a configured key (a key typed into a URL is not in the environment)."""
    unknown = "AIzaSyD-unconfigured-key-0123456789abcd"
    for k in (KEY, unknown, quote(SPECIAL_KEYS["gemini"], safe="")):
        shown = url.format(k=k)
        text = f"could not reach gemini (ConnectError: connecting to {shown}: [Errno 111] Connection refused)"
        for out in (mask(text, [KEY]), Redactor([KEY]).quote(text), Redactor([KEY]).clip(text, 2000)):
            assert not leaks("error", out, {"key": k, "unquoted": KEY}), out
            assert "[redacted]" in out and "Connection refused" in out


def test_the_transport_error_of_an_adapter_keeps_no_key_from_the_url_it_names() -> None:
    """``error_from_transport`` words an httpx failure; one naming the URL (as an
    ``HTTPStatusError`` does, and a proxy's message may) keeps none of the key in it."""
    key = SPECIAL_KEYS["gemini"]  # httpx percent-encodes what a query string may not hold
    request = httpx.Request("POST", "https://generativelanguage.googleapis.com/v1beta/models/m:generateContent",
                            params={"alt": "sse", "key": key})
    url = str(request.url)
    assert key not in url and "%3F" in url  # the key is in the URL only percent-encoded
    status = httpx.HTTPStatusError(f"Server error '502 Bad Gateway' for url '{url}'", request=request,
                                   response=httpx.Response(502, request=request))
    for exc in (httpx.ConnectError(f"connecting to {url} failed", request=request), status,
                httpx.ReadError(repr(request))):
        err = error_from_transport(exc, provider="gemini", model="m", secrets=(key,))
        text = f"{err} {err!r} {err.to_dict()}"
        assert "gemini" in text and not leaks("transport error", text, {"key": key}), text


async def test_every_error_path_of_the_engine_keeps_no_key_from_a_url_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """An adapter that lets an httpx error escape (its message naming the request's URL, the key
    in the query string as Gemini takes it), and a failure past the adapter whose ``repr`` names
    the request: the tool error, the attempt, the row and the log record hold none of the key."""
    from .conftest import make_settings

    caplog.set_level(logging.DEBUG)
    key = SPECIAL_KEYS["gemini"]
    settings = make_settings(tmp_path)
    engine = Engine(settings, env={"GEMINI_API_KEY": key})
    monkeypatch.setenv("GEMINI_API_KEY", key)  # for the logging filter, as serve reads it
    name, provider = next(iter(engine.providers.items()))
    ref = next(e.ref for e in engine.catalog if e.provider == name)
    request = httpx.Request("POST", "https://generativelanguage.googleapis.com/v1beta/models/m:generateContent",
                            params={"alt": "sse", "key": key})  # the key percent-encoded in the query string

    async def escaping(*_args: Any, **_kwargs: Any) -> Any:
        response = httpx.Response(502, request=request)
        response.raise_for_status()  # HTTPStatusError: "Server error '502 Bad Gateway' for url '...?key=...'"

    async def bug(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(f"a bug while preparing {request!r}")  # httpx's repr names the whole URL

    monkeypatch.setattr(provider, "complete", escaping)
    errors: list[BaseException] = []
    with redacting_logs(settings):
        try:
            with pytest.raises(Exception) as raised:
                await engine.complete(CompleteArgs(prompt="hello", model=[ref]))
            errors.append(raised.value)
            monkeypatch.setattr(engine, "_reserve", bug)
            with pytest.raises(RuntimeError, match="a bug"):  # a bug is the caller's to see; its row is searched
                await engine.complete(CompleteArgs(prompt="hello again", model=[ref]))
        finally:
            await engine.aclose()
    assert "502 Bad Gateway" in str(errors[0])  # the failure is told...
    rows = sqlite_rows(tmp_path / "ledger.db")["requests"]
    assert "502 Bad Gateway" in rows and "a bug while preparing" in rows  # ...and both calls were recorded
    outputs = [(f"error {e!r}", f"{e} {getattr(e, 'to_dict', dict)()}") for e in errors]
    outputs += [("requests", rows), *ledger_files(tmp_path).items(),
                ("logging", "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records))]
    found = all_leaks(outputs, {"key": key})
    assert not found, "\n".join(found)


async def test_an_attempt_error_quoting_a_key_its_adapter_does_not_hold_is_stored_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An adapter redacts only the credentials of its own requests; a failure quoting another
    provider's key percent-encoded (a gateway shared by two providers), or a URL credential no
    provider configured, is redacted by the engine in every form before the attempt is stored,
    as the row's error is."""
    from .conftest import make_settings

    settings = make_settings(tmp_path, resilience={"max_retries": 0})
    engine = Engine(settings, env={"OPENAI_API_KEY": KEY})  # the engine knows it; the (mock) adapter does not
    name, provider = next(iter(engine.providers.items()))
    ref = next(e.ref for e in engine.catalog if e.provider == name)
    unknown = "AIzaSyD-unconfigured-key-0123456789abcd"
    said = f"gateway said: {_percent(KEY)} for https://gw.example/v1?key={unknown}"

    async def failing(*_args: Any, **_kwargs: Any) -> Any:
        raise ServerError(said, provider=name, model=ref, status=502)

    monkeypatch.setattr(provider, "complete", failing)
    try:
        with pytest.raises(Exception, match="gateway said"):
            await engine.complete(CompleteArgs(prompt="hello", model=[ref]))
    finally:
        await engine.aclose()
    rows = sqlite_rows(tmp_path / "ledger.db")["requests"]
    assert "gateway said: [redacted] for https://gw.example/v1?key=[redacted]" in rows, rows
    found = all_leaks([("requests", rows), *ledger_files(tmp_path).items()], {"key": KEY, "unknown": unknown})
    assert not found, "\n".join(found)


@pytest.mark.slow
@pytest.mark.parametrize("disguise", list(DISGUISES))
async def test_a_key_an_upstream_echoes_disguised_in_every_error_and_malformed_body_never_reaches_disk_or_output(
    disguise: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The whole hostile script of ``test_keys_never_leak``, every adapter, with the key (or its
    header line) rewritten in every body as quoting software would: nothing of it anywhere."""
    caplog.set_level(logging.DEBUG)
    keys = SPECIAL_KEYS if disguise == "url_quoted" else KEYS  # quote() changes only special characters
    async with echoing_upstreams(keys, disguise=disguise) as ups:
        settings = settings_for_fakes(tmp_path, ups, monkeypatch, resilience={"max_retries": 0, "breaker_failures": 100})
        with redacting_logs(settings):
            outputs = await drive_every_path(settings, ups, ledger=tmp_path / "ledger.db")
    assert all(up.disguised > 0 for up in ups.values()), {k: up.disguised for k, up in ups.items()}
    captured = capfd.readouterr()
    outputs += [("stderr", captured.err), ("stdout", captured.out),
                ("logging", "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records))]
    stored = {f"file {n}": data for n, data in files_under(tmp_path).items()}
    stored |= {f"sqlite table {t}": rows for t, rows in sqlite_rows(tmp_path / "ledger.db").items()}
    assert "unreadable usage" in stored["sqlite table requests"]
    found = all_leaks([*stored.items(), *outputs], keys)
    assert not found, "\n".join(found)


@pytest.mark.slow
async def test_a_credential_in_a_configured_header_or_a_base_url_is_redacted_like_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy's token set in ``[providers.headers]``, and a password in a ``base_url``
    (``http://user:password@host``, which httpx sends as Basic auth), are echoed like the key:
    they must go wherever the key goes."""
    caplog.set_level(logging.DEBUG)
    header_secret = "Zq8PrOxyT0ken" + KEYS["gemini"][:30]
    password = "pr0xy-Passw0rd-" + KEYS["ollama"][:20]
    async with echoing_upstreams(KEYS) as ups:
        providers = []
        for kind, up in ups.items():
            entry: dict[str, Any] = {"name": kind, "kind": kind, "base_url": up.base_url, "models": [FAKE_MODELS[kind]],
                                     "timeout_s": 5, "headers": {"x-proxy-token": header_secret}}
            if kind == "ollama":  # keyless: the proxy's Basic auth is its only credential
                entry["base_url"] = up.base_url.replace("http://", f"http://proxyuser:{password}@")
                up.api_key = "Basic " + base64.b64encode(f"proxyuser:{password}".encode()).decode()
            else:
                monkeypatch.setenv(f"TEST_{kind.upper()}_KEY", up.api_key)
                entry["api_key_env"] = f"TEST_{kind.upper()}_KEY"
            providers.append(entry)
        settings = settings_from_dict({"ledger": {"path": str(tmp_path / "ledger.db")}, "providers": providers,
                                       "resilience": {"max_retries": 0, "breaker_failures": 100}}, source="test")
        with redacting_logs(settings):
            outputs = await drive_every_path(settings, ups, ledger=tmp_path / "ledger.db")
    assert ups["ollama"].saw_key and all(up.served for up in ups.values())
    outputs += [("logging", "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records))]
    stored = {**files_under(tmp_path), **sqlite_rows(tmp_path / "ledger.db")}
    found = all_leaks([*stored.items(), *outputs], {"header": header_secret, "password": password, **KEYS})
    assert not found, "\n".join(found)


# -- a part of a key: starred out, cut mid-sentence, quoted; and keys in answers -------------------

VENDOR_KEY = "sk-proj-" + KEYS["openai"][:40]
"""A key with a public vendor prefix, as an upstream's 401 names it."""


@pytest.mark.parametrize("quoting", list(QUOTINGS)[:11])  # the quotings of text (base64: whole or cut off at the end)
@pytest.mark.parametrize("size", [8, 9, 13, 24, 37])
def test_a_run_of_eight_or_more_characters_of_a_key_anywhere_in_a_quote_is_redacted_in_every_quoting(
    quoting: str, size: int,
) -> None:
    """Any 8 consecutive characters of a key are the key: its start, its middle or its end, in
    the middle of a sentence, quoted or not; its tail starred out or its head cut by an ellipsis."""
    key = VENDOR_KEY
    for at in range(len(key) - size + 1):
        if at + size <= len("sk-proj-"):
            continue  # the vendor's public prefix, the same in every key (see the next test)
        part = QUOTINGS[quoting](key[at : at + size])
        text = f"Incorrect API key provided: {part}****. You can find your API key at ..."
        for out in (mask(text, [key]), clip(text, [key], 200), Redactor([key]).quote(text)):
            assert not leaks("quote", out, {"key": key}), (at, out)
            assert "[redacted]" in out and out.endswith("You can find your API key at ..."), out


def test_seven_characters_of_a_key_and_its_public_vendor_prefix_are_left_in_a_quote() -> None:
    """Fewer than 8 characters are not the key; nor is the prefix every key of a vendor starts with."""
    key = VENDOR_KEY
    for text in (f"keys look like sk-proj-... and {key[20:27]} is 7", "expected sk-proj- or sk-ant-api03-, 50% & more"):
        assert mask(text, [key, SPECIAL_KEYS["anthropic"]]) == text
        assert Redactor([key, SPECIAL_KEYS["anthropic"]])(text) == text
    assert mask(f"a {key[:9]} b", [key]) == "a [redacted] b"  # the prefix and one character more


@pytest.mark.parametrize("shown", [VENDOR_KEY[:-4] + "****", VENDOR_KEY[:24] + "... is not valid"],
                         ids=["tail_starred_out", "cut_by_an_ellipsis"])
async def test_a_401_quoting_the_key_starred_out_or_cut_mid_sentence_keeps_none_of_it_in_the_ledger_or_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shown: str,
) -> None:
    """37 and 24 characters of the key reached ``requests.error``, ``requests.attempts`` and the
    tool result: only the whole key, or its start ending the text, was masked."""
    from mcp import Client

    from llm_router.mcp_server import create_server

    from .fakes import FakeProvider

    fake = FakeProvider("openai", models=[FAKE_MODELS["openai"]], api_key=VENDOR_KEY)
    fake.start()
    try:
        fake.fault("status", status=401, message=f"Incorrect API key provided: {shown}. You can find your API key at ...")
        settings = settings_for_fakes(tmp_path, {"openai": fake}, monkeypatch)
        engine = Engine(settings)
        try:
            async with Client(create_server(engine, redact=Redactor.from_environment(settings))) as client:
                r = await client.call_tool("complete", {"prompt": "hi", "model": f"openai:{FAKE_MODELS['openai']}"})
        finally:
            await engine.aclose()
    finally:
        fake.stop()
    assert r.is_error
    out = json.dumps([getattr(b, "text", "") for b in r.content]) + json.dumps(r.meta)
    rows = sqlite_rows(tmp_path / "ledger.db")["requests"]
    assert "Incorrect API key provided: [redacted]" in rows, rows
    found = leaks("tool result", out, {"key": VENDOR_KEY}) + leaks("requests row", rows, {"key": VENDOR_KEY})
    found += all_leaks(ledger_files(tmp_path).items(), {"key": VENDOR_KEY})
    assert not found, "\n".join(found)


ANSWER_FORMS: dict[str, Callable[[str], str]] = {
    "as it is": lambda k: k,
    "percent-encoded": _percent,
    "JSON \\u00xx": QUOTINGS["JSON \\u00xx, every character"],
    "HTML decimal references": QUOTINGS["HTML decimal references"],
    "HTML hex references": QUOTINGS["HTML hex references"],
    "its start cut by an ellipsis": lambda k: k[:24] + "... (truncated)",
    "its start percent-encoded, cut by an ellipsis": lambda k: _percent(k[:16]) + "...",
    "its middle as HTML references": lambda k: QUOTINGS["HTML decimal references"](k[20:32]),
}


@pytest.mark.parametrize("form", list(ANSWER_FORMS))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed_with_progress"])
async def test_a_key_an_upstream_echoes_in_its_answer_encoded_or_cut_never_reaches_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str, stream: bool,
) -> None:
    """Answer text and progress messages passed only the plain net: an answer holding the key
    percent-encoded or as HTML character references, or its start cut mid-text, reached the client."""
    from mcp import Client

    from llm_router.mcp_server import create_server

    from .fakes import FakeProvider

    answer = f"your header was: {ANSWER_FORMS[form](VENDOR_KEY)} ok"
    assert leaks("unredacted", answer, {"key": VENDOR_KEY})
    progress: list[str] = []

    async def on_progress(_p: float, _t: float | None, message: str | None) -> None:
        progress.append(message or "")

    fake = FakeProvider("openai", models=[FAKE_MODELS["openai"]], api_key=VENDOR_KEY, text=answer)
    fake.start()
    try:
        settings = settings_for_fakes(tmp_path, {"openai": fake}, monkeypatch)
        engine = Engine(settings)
        try:
            async with Client(create_server(engine, redact=Redactor.from_environment(settings))) as client:
                r = await client.call_tool("complete", {"prompt": "hi", "model": f"openai:{FAKE_MODELS['openai']}"},
                                           progress_callback=on_progress if stream else None)
        finally:
            await engine.aclose()
    finally:
        fake.stop()
    assert not r.is_error, r.content
    text = "".join(getattr(b, "text", "") for b in r.content)
    assert text.startswith("your header was: [redacted]") and " ok" in text, text
    assert r.structured_content is not None and r.structured_content["text"].startswith("your header was: [redacted]")
    assert not stream or progress, "the streamed call reported no progress"
    found = leaks("answer", text, {"key": VENDOR_KEY}) + leaks("structured", json.dumps(r.structured_content),
                                                              {"key": VENDOR_KEY})
    found += leaks("progress", "\n".join(progress), {"key": VENDOR_KEY})
    assert not found, "\n".join(found)


def test_the_net_finds_an_encoded_key_or_a_run_of_it_in_an_answer_and_leaves_ordinary_text_alone() -> None:
    """The net's cheap check: only a text with ``%``, ``&``, a backslash or a key's start is read
    further; the full reading keeps the text's URLs and its own escapes."""
    redact = Redactor([VENDOR_KEY, *KEYS.values()])
    for form, how in ANSWER_FORMS.items():
        out = redact(f"echo: {how(VENDOR_KEY)} | 50% done &amp; \\u00e9 https://x.example/?api_key=YOUR_KEY")
        assert out.startswith("echo: [redacted]"), (form, out)
        assert out.endswith(" | 50% done &amp; \\u00e9 https://x.example/?api_key=YOUR_KEY"), (form, out)
        assert not leaks(form, out, {"key": VENDOR_KEY}), out
    ordinary = "sk-proj- keys (and sk-ant-api03- ones) go in the header; 100% of \\\\path &lt;b&gt; %41%42"
    assert redact(ordinary) == ordinary
    assert redact.scrub({"text": ordinary}) == {"text": ordinary}
