"""Headless Chromium for the dashboard's tests: the page's DOM once its scripts ran (``dump_dom``),
the URLs it asked for (Chromium's own network log), and screenshots.

Chromium is the Debian package ``chromium`` (``.ci/run`` installs it). Without it the browser tests
are skipped, saying what to install; in CI (``CI=true``, or ``LLM_ROUTER_REQUIRE_CHROMIUM=1`` as
``.ci/run`` sets) they fail instead, so a missing browser can never pass for a green run.

Each run gets a new empty profile and every background service off, and is bounded: virtual time
(``--virtual-time-budget``) lets timers and fetches finish without waiting in real time, and a
wall-clock timeout ends a browser that hangs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Hooks", "chromium", "dump_dom", "hooks", "requested_urls", "screenshot"]

RUN_TIMEOUT_S = 90
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars"]


def _required() -> bool:
    return os.environ.get("LLM_ROUTER_REQUIRE_CHROMIUM") == "1" or os.environ.get("CI", "").lower() in ("1", "true", "yes")


def chromium() -> str:
    """The browser's path; skips (fails in CI) without one."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Chromium is not installed: apt-get install chromium (.ci/run does)"
        if _required():
            pytest.fail(message + " -- required in CI (CI=true or LLM_ROUTER_REQUIRE_CHROMIUM=1)", pytrace=False)
        pytest.skip(message)
    return found


def _run(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="llm-router-chromium-") as profile:
        out = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args, url],
                             capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def dump_dom(url: str, *, budget_ms: int = 5000, extra: tuple[str, ...] = ()) -> str:
    """The page's DOM after its scripts ran for ``budget_ms`` of virtual time."""
    return _run([f"--virtual-time-budget={budget_ms}", *extra, "--dump-dom"], url).stdout


def requested_urls(url: str, *, budget_ms: int = 5000) -> tuple[str, list[str]]:
    """The DOM, and every URL the page (or a frame in it) asked the network for while loading
    ``url``, from Chromium's own network log. A request a page makes names the page's origin as
    its initiator; the browser's own (a clock check, an account probe, even with background
    networking off) name none, and are left out. The navigation to ``url`` itself is left out too."""
    with tempfile.TemporaryDirectory(prefix="llm-router-netlog-") as tmp:
        log = Path(tmp) / "net.json"
        dom = dump_dom(url, budget_ms=budget_ms, extra=(f"--log-net-log={log}",))
        text = log.read_text(encoding="utf-8")
    try:
        netlog = json.loads(text)
    except ValueError:  # a log cut short at exit lacks its closing brackets
        netlog = json.loads(text.rstrip().rstrip(",") + "]}")
    start_job = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls: list[str] = []
    for event in netlog["events"]:
        params = event.get("params") or {}
        if event["type"] == start_job and params.get("initiator", "not an origin") != "not an origin":
            urls.append(params["url"])
    return dom, urls


def screenshot(url: str, path: Path, *, width: int = 1200, height: int = 1350, budget_ms: int = 5000,
               extra: tuple[str, ...] = ()) -> None:
    _run([f"--virtual-time-budget={budget_ms}", f"--window-size={width},{height}", f"--screenshot={path}", *extra], url)
    assert path.exists() and path.stat().st_size > 0


class Hooks(dict[str, tuple[str, str]]):
    """What a page shows under its ``data-k`` hooks: key -> (its ``data-v``, its text)."""

    def value(self, key: str) -> str:
        v, text = self[key]
        return v

    def keys_under(self, prefix: str) -> list[str]:
        return sorted(k for k in self if k.startswith(prefix))


class _HookParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found = Hooks()
        self._open: list[tuple[str, str, str, list[str]]] = []  # (tag, key, value, text parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self._open:
            self._open[-1][3].append("")
        if "data-k" in a:
            self._open.append((tag, a["data-k"] or "", a.get("data-v") or "", []))
        elif self._open:
            self._open.append((tag, "", "", []))

    def handle_endtag(self, tag: str) -> None:
        if not self._open:
            return
        t, key, value, parts = self._open.pop()
        text = "".join(parts)
        if self._open:
            self._open[-1][3].append(text)
        if key:
            self.found[key] = (value, text.strip())

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][3].append(data)


def hooks(dom: str, *, inside: str | None = None) -> Hooks:
    """Every ``data-k`` hook in ``dom`` (only in the element with id ``inside``, when given)."""
    if inside is not None:
        start = dom.find(f'id="{inside}"')
        assert start >= 0, f"no element {inside!r} in the page"
        dom = dom[dom.rfind("<", 0, start):]
    parser = _HookParser()
    parser.feed(dom)
    return parser.found


def parse_json_attr(dom: str, element_id: str) -> Any:
    """The JSON text of the element with id ``element_id`` (a host page's findings)."""
    start = dom.find(f'id="{element_id}"')
    assert start >= 0, f"no element {element_id!r} in the page"
    body = dom[dom.find(">", start) + 1:dom.find("</", start)]
    import html

    return json.loads(html.unescape(body))
