"""Secrets never leave the process: API keys and bearer tokens are scrubbed from anything shown.

``mask`` and ``clip`` are the one boundary every string from upstream crosses before it is
kept: adapters pass their own key (the only one a request of theirs carries), the engine passes
every key it knows before it stores an attempt's or a row's error. A quote is redacted first and
cut after, and the start of a key that ends the text is masked too: text that is itself only the
head of a body (read up to a cap) may cut a key in two, and what is left of it is still the key.

``Redactor`` is the net behind them, applied where text leaves the server: tool results and
errors, resources, log messages to the client, stderr logging and ``check``'s output.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["KEY_VARIABLES", "MASK", "Redactor", "clip", "mask"]

MASK = "[redacted]"
MIN_SECRET_CHARS = 8
"""Shorter values are not treated as secrets: scrubbing them would mangle ordinary text."""
CUT_START_CHARS = 4
"""A key's start this long or longer ending a text is taken for the key cut in two."""
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each secret replaced by ``[redacted]``, and with a secret's start that ends
    it (``CUT_START_CHARS`` or more of it) replaced too. Pass longer secrets first, so a key
    that contains another is removed whole."""
    for secret in secrets:
        if not secret or len(secret) < CUT_START_CHARS:
            continue
        if secret in text:
            text = text.replace(secret, MASK)
        text = _mask_cut_start(text, secret)
    return text


def _mask_cut_start(text: str, secret: str) -> str:
    start = secret[:CUT_START_CHARS]
    at = text.find(start, max(0, len(text) - len(secret) + 1))
    while at != -1:
        if secret.startswith(text[at:]):
            return text[:at] + MASK
        at = text.find(start, at + 1)
    return text


def clip(text: str, secrets: Iterable[str | None], limit: int) -> str:
    """At most ``limit`` characters of ``text`` as they may be kept: redacted first, then cut
    (a cut first can split a key and keep its start)."""
    return mask(text, secrets)[:limit]


class Redactor:
    """Replaces every known secret value with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    @classmethod
    def from_environment(cls, settings: Settings, env: Mapping[str, str] = os.environ) -> Redactor:
        """Every key a configured provider names (``api_key_env``), and the well-known key variables."""
        names = {*KEY_VARIABLES, *(p.api_key_env for p in settings.providers if p.api_key_env)}
        return cls(env[n] for n in names if env.get(n))

    def add(self, *secrets: str) -> None:
        # Longest first, so a key that contains another is removed whole.
        merged = {*self._secrets, *(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)}
        self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        return mask(text, self._secrets)

    def clip(self, text: str, limit: int) -> str:
        """At most ``limit`` characters of ``text``, every known key (whole, or cut at its end) removed first."""
        return clip(text, self._secrets, limit)

    def scrub(self, data: Any) -> Any:
        """The same JSON-like value with every string redacted."""
        if not self._secrets:
            return data
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {self(k) if isinstance(k, str) else k: self.scrub(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.scrub(v) for v in data]
        return data

    def logging_filter(self) -> logging.Filter:
        """A filter that rewrites each record's message (arguments merged in) without its secrets."""
        redactor = self

        class _Scrub(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                message = record.getMessage()
                clean = redactor(message)
                if record.exc_info and record.exc_info[1] is not None:
                    # The traceback is rendered later from exc_info: render it now, scrubbed.
                    clean += "\n" + redactor(logging.Formatter().formatException(record.exc_info))
                    record.exc_info = None
                    record.exc_text = None
                if clean != message:  # else leave msg and args alone: some formatters read the args
                    record.msg, record.args = clean, None
                return True

        return _Scrub()

    def install(self, logger: logging.Logger | None = None) -> None:
        """Scrub every record that reaches the handlers of ``logger`` (the root logger by default)."""
        target = logger or logging.getLogger()
        flt = self.logging_filter()
        for handler in target.handlers:
            handler.addFilter(flt)
