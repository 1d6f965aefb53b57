"""Secrets never leave the process: API keys and bearer tokens are scrubbed from anything shown.

``mask`` and ``clip`` are the one boundary every string from upstream crosses before it is
kept: adapters pass the credentials their own requests carry (``credentials``: the key, a
credential header's value, a ``base_url`` password), the engine passes every one it knows before
it stores an attempt's or a row's error. A quote is redacted first and cut after. Any run of 8 or
more consecutive characters of a key is masked wherever it stands (``RUN_CHARS``): an upstream
that quotes a key with its tail starred out (``sk-...6kL0****``) or cut with an ellipsis
mid-sentence still shows the key. Runs that lie wholly inside a key's public vendor prefix
(``sk-ant-api03-``, ``sk-proj-``: lowercase words each ending in ``-``) do not count: every key of
that vendor starts so, and prose naming it is not a leak. The start of a key (4 characters or
more) that ends the text is masked too: text that is itself only the head of a body (read up to a
cap) may cut a key in two, and what is left of it is still the key.

A key is found as it is and as plain quoting writes it: JSON string escapes (``\\u0067``,
``\\"``, ``\\/``) and Python's ``\\'``, percent-encoding (``%67``, either case), HTML character
references (``&#103;``, ``&#x67;``, ``&amp;``...), any mix of those and plain characters, and base64
of a text that holds it (a header line ``authorization: Bearer KEY`` dumped by a proxy, in any
alignment, standard or URL-safe alphabet); whole, or cut off at the end of the text (the runs of
8 above are found as it is and in every quoted form; in base64 the key is found whole or cut off
at the end). ``mask`` (for errors) also removes the credentials of any URL it quotes (``?key=``, ``&access_token=``...,
``user:password@``), known or not: httpx errors and upstream messages can name a request's URL.

Not caught, by design: a key reversed, split into pieces shorter than 8, or otherwise
transformed on purpose. An upstream that does that already holds the key; no text filter can undo
every transformation. What is caught is what honest software (proxies, gateways, JSON encoders,
URL builders, error messages that star out or cut a key) makes of a key it quotes. Runs of 8 of a
random key do not occur in ordinary text by chance (62^8 choices each).

``Redactor`` is the net behind them, applied where text leaves the server: tool results and
errors, resources, log messages to the client, stderr logging and ``check``'s output. It knows
every key a configured provider names, the values of configured headers that look like
credentials, and credentials written into a provider's ``base_url``. On answers and progress
messages it stays cheap: a text with no ``%``, ``&`` or ``\\`` and none of a key's 4-character
starts is returned as it is after a few substring checks; any other is searched for a key as it
is, quoted, or a run of 8 of it (not base64, and its URLs are kept: an answer's
``?api_key=YOUR_KEY`` is its own). A run of 8 that holds neither a key's start nor an escape
character passes the net: finding it would cost a pass over every answer.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["KEY_VARIABLES", "MASK", "Redactor", "clip", "credentials", "mask"]

MASK = "[redacted]"
MIN_SECRET_CHARS = 8
"""Shorter values are not treated as secrets: scrubbing them would mangle ordinary text."""
CUT_START_CHARS = 4
"""A key's start this long or longer ending a text is taken for the key cut in two."""
RUN_CHARS = 8
"""This many consecutive characters of a key, anywhere in a text, are masked as the key."""
_GRAM = 4
"""Every run of ``RUN_CHARS`` holds a whole ``_GRAM``-character slice of the text at a multiple of
``_GRAM`` (``RUN_CHARS >= 2 * _GRAM``): the slices at those positions, all a text needs looked up."""
_PUBLIC_PREFIX = re.compile(r"[a-z]{2,4}-(?:[a-z]{2,8}[0-9]{0,2}-){0,2}")
"""A vendor's public key prefix (``sk-``, ``sk-proj-``, ``sk-ant-api03-``): the same in every key."""
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each secret replaced by ``[redacted]`` (as it is or quoted, whole or its
    start ending the text: see the module docstring), and with the credentials of any URL in it
    removed. A secret inside another is removed with it, whole."""
    return _mask_urls(_mask_secrets(text, [s for s in secrets if s and len(s) >= CUT_START_CHARS]))


def _mask_secrets(text: str, secrets: Sequence[str], base64_forms: bool = True) -> str:
    """Every secret masked in one pass over spans of the original text, found as it is and in
    each reading of the text with escapes undone: a key that holds what looks like an escape
    (``%20``, ``\\"``) is found as it is, one quoted partly (JSON escapes only its quotes) in a
    reading, and a key inside another is masked with it whole. Base64 forms after.

    When no secret holds what may look like an escape, the one reading of a text with escapes
    holds every run of a secret the text holds as it is: the runs are looked for there only."""
    key = tuple(secrets)
    spans = _plain_spans(text, key, runs=False)
    covered = False
    if key and ("\\" in text or "%" in text or "&" in text):
        escape_like = _escape_like(key)
        for pattern in _readings(text, escape_like):
            found = _quoted_spans(text, key, pattern)
            if found is not None:
                spans += found
                covered = not escape_like
    if not covered:
        spans += _run_spans(text, key)
    if spans:
        text = _masked(text, spans)
    if base64_forms:
        for secret in key:
            for start, form in _base64_forms(secret):
                if start in text:
                    text = _mask_base64(text, form)
    return text


def _plain_spans(text: str, secrets: tuple[str, ...], runs: bool = True) -> list[tuple[int, int]]:
    """Where ``text`` holds a secret as it is: whole, its start ending the text, or (``runs``) a
    run of ``RUN_CHARS`` of it."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        at = text.find(secret)
        while at != -1:
            spans.append((at, at + len(secret)))
            at = text.find(secret, at + len(secret))
        at = _cut_start_at(text, secret)
        if at != -1:
            spans.append((at, len(text)))
    return spans + _run_spans(text, secrets) if runs else spans


def _public_length(secret: str) -> int:
    """How many leading characters of ``secret`` are its vendor's public prefix (0 if none, or if
    too little would be left of it to be a key)."""
    m = _PUBLIC_PREFIX.match(secret)
    return m.end() if m and len(secret) - m.end() >= 2 * RUN_CHARS else 0


@functools.lru_cache(maxsize=64)
def _run_index(secrets: tuple[str, ...]) -> tuple[frozenset[tuple[str, ...]], dict[str, list[tuple[str, int, int]]]]:
    """Every ``_GRAM``-character slice of the secrets (as a tuple of characters, what ``zip``
    makes of a text, and as a string), each with where it stands in which secret, and where that
    secret's public prefix ends."""
    index: dict[str, list[tuple[str, int, int]]] = {}
    for secret in secrets:
        if len(secret) >= RUN_CHARS:
            public = _public_length(secret)
            for q in range(len(secret) - _GRAM + 1):
                index.setdefault(secret[q : q + _GRAM], []).append((secret, q, public))
    return frozenset(tuple(g) for g in index), index


def _run_spans(text: str, secrets: tuple[str, ...]) -> list[tuple[int, int]]:
    """The stretches of ``text`` that are ``RUN_CHARS`` or more consecutive characters of a secret
    (not all of them in its public prefix).

    A text holding none costs one pass in C: its slices at multiples of ``_GRAM`` against every
    slice of the secrets. A secret with a hit is looked for by its own slices at multiples of
    ``_GRAM`` (every run of it holds one), each hit grown both ways along it; a run is grown once
    (kept by its offset in the secret), however many of its slices the text holds."""
    grams, index = _run_index(secrets)
    if not grams or len(text) < RUN_CHARS:
        return []
    chars = iter(text)
    if grams.isdisjoint(zip(*[chars] * _GRAM, strict=False)):
        return []
    chars = iter(text)
    hit = {secret: public for g in grams.intersection(zip(*[chars] * _GRAM, strict=False)) for secret, _, public in index["".join(g)]}
    spans: list[tuple[int, int]] = []
    for secret, public in hit.items():
        grown: dict[int, list[tuple[int, int]]] = {}
        for q in range(0, len(secret) - _GRAM + 1, _GRAM):
            piece = secret[q : q + _GRAM]
            at = text.find(piece)
            while at != -1:
                done = grown.setdefault(at - q, [])
                if not any(s <= at < e for s, e in done):
                    left = 0
                    while left < min(at, q) and text[at - left - 1] == secret[q - left - 1]:
                        left += 1
                    right = _GRAM
                    while at + right < len(text) and q + right < len(secret) and text[at + right] == secret[q + right]:
                        right += 1
                    done.append((at - left, at + right))
                    if left + right >= RUN_CHARS and q + right > public:
                        spans.append((at - left, at + right))
                at = text.find(piece, at + 1)
    return spans


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each stretch of ``spans`` (merged where they touch) replaced by ``[redacted]``."""
    out: list[str] = []
    last = 0
    for start, end in _merged(spans):
        out += (text[last:start], MASK)
        last = end
    out.append(text[last:])
    return "".join(out)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _cut_start_at(text: str, secret: str) -> int:
    """Where a start of ``secret`` (``CUT_START_CHARS`` or more of it, not all) ends ``text``, or -1."""
    start = secret[:CUT_START_CHARS]
    at = text.find(start, max(0, len(text) - len(secret) + 1))
    while at != -1:
        if secret.startswith(text[at:]):
            return at
        at = text.find(start, at + 1)
    return -1


# -- quoted forms: JSON and Python escapes, percent-encoding, HTML character references ----------

_JSON_ESCAPES = r"\\u[0-9a-fA-F]{4}|\\[\"'\\/]"
_PERCENT_ESCAPES = r"%[0-9a-fA-F]{2}"
_HTML_ESCAPES = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|amp|quot|apos|lt|gt);"
_QUOTED = re.compile(f"{_JSON_ESCAPES}|{_PERCENT_ESCAPES}|{_HTML_ESCAPES}")
_EACH_QUOTING = (("\\", re.compile(_JSON_ESCAPES)), ("%", re.compile(_PERCENT_ESCAPES)), ("&", re.compile(_HTML_ESCAPES)))
_QUOTED_CUT = re.compile(r"(?:\\u[0-9a-fA-F]{0,3}|\\|%[0-9a-fA-F]?|&#?[xX]?[0-9a-zA-Z]{0,6})\Z")
"""The start of an escape that ends a text (a head cut in the middle of one)."""
_ENTITIES = {"amp": "&", "quot": '"', "apos": "'", "lt": "<", "gt": ">"}


def _readings(text: str, escape_like: bool) -> list[re.Pattern[str]]:
    """The escapes to undo to read ``text``: all of them at once (a key quoted twice over, JSON
    around a URL), and, when a secret holds what may look like an escape (``escape_like``), each
    kind alone where several are present (an escape of one kind that is part of the key)."""
    kinds = [pattern for trigger, pattern in _EACH_QUOTING if trigger in text]
    if len(kinds) < 2:
        return kinds
    return [_QUOTED, *kinds] if escape_like else [_QUOTED]


@functools.lru_cache(maxsize=64)
def _escape_like(secrets: tuple[str, ...]) -> bool:
    """Whether a secret holds ``%``, ``&`` or a backslash (real API keys never do)."""
    return any(c in s for s in secrets for c in "%&\\")


def _unquote_one(match: re.Match[str]) -> str:
    """One escape as the one character it stands for."""
    q = match.group()
    if q[0] == "\\":
        return chr(int(q[2:], 16)) if q[1] == "u" else q[1]
    if q[0] == "%":
        return chr(int(q[1:], 16))
    name = q[1:-1]
    if name[0] != "#":
        return _ENTITIES[name]
    n = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
    return chr(n) if n <= 0x10FFFF else "\ufffd"


def _quoted_spans(text: str, secrets: tuple[str, ...], escapes: re.Pattern[str]) -> list[tuple[int, int]] | None:
    """The stretches of ``text`` that spell a secret, or a run of it, once ``escapes`` are undone
    (escapes mixed with plain characters too), a secret's start ending it included; None when
    ``text`` holds none of those escapes (nothing was read).

    The text is read with every escape undone (one character each); a secret found there is
    masked over the stretch of the original it was read from. The rare text where one is found
    pays for the map of positions; every other one costs a scan and a substitution."""
    cut = _QUOTED_CUT.search(text, max(0, len(text) - 10))
    body = text if cut is None else text[: cut.start()]
    if cut is None and escapes.search(body) is None:
        return None
    read = escapes.sub(_unquote_one, body)
    found = _plain_spans(read, secrets)
    if not found:
        return []
    starts: list[int] = []  # where in ``text`` each character of ``read`` begins
    pos = 0
    for m in escapes.finditer(body):
        starts.extend(range(pos, m.start()))
        starts.append(m.start())
        pos = m.end()
    starts.extend(range(pos, len(body)))
    starts.append(len(body))
    # A stretch that ends the reading takes the escape cut in the middle with it, if any.
    return [(starts[a], starts[b] if b < len(read) else len(text)) for a, b in found]


# -- base64 --------------------------------------------------------------------------------------

_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_TO_URLSAFE = str.maketrans("+/", "-_")


@functools.lru_cache(maxsize=256)
def _base64_forms(secret: str) -> tuple[tuple[str, str], ...]:
    """What base64 makes of ``secret`` inside a longer text: for each of the three alignments it
    may fall at, the characters that encode only its own bytes, in both alphabets (each with its
    first ``CUT_START_CHARS``, which any trace of it holds)."""
    raw = secret.encode()
    forms = []
    for lead in range(3):
        encoded = base64.b64encode(b"\0" * lead + raw).decode()
        form = encoded[-(-8 * lead // 6) : (8 * (lead + len(raw))) // 6]
        forms += [form, form.translate(_TO_URLSAFE)]
    return tuple((f[:CUT_START_CHARS], f) for f in dict.fromkeys(forms) if len(f) >= MIN_SECRET_CHARS)


def _mask_base64(text: str, form: str) -> str:
    """``text`` with each run of base64 holding ``form`` (whole, or its start ending the text)
    replaced by ``[redacted]``: the run's edges hold bits of the secret too."""
    at = text.find(form)
    while at != -1:
        start, end = at, at + len(form)
        while start > 0 and text[start - 1] in _BASE64_CHARS:
            start -= 1
        while end < len(text) and (text[end] in _BASE64_CHARS or text[end] == "="):
            end += 1
        text = text[:start] + MASK + text[end:]
        at = text.find(form, start + len(MASK))
    at = _cut_start_at(text, form)
    if at != -1:
        while at > 0 and text[at - 1] in _BASE64_CHARS:
            at -= 1
        text = text[:at] + MASK
    return text


# -- credentials in URLs -------------------------------------------------------------------------

_SECRET_PARAMS = r"(?:key|api[-_]?key|x-goog-api-key|access[-_]?token|token|auth|password|passwd|secret|sig|signature)"
_URL_SECRET = re.compile(rf"(?i)([?&;]{_SECRET_PARAMS}=)[^&#\s'\"<>\\]+")
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/?#@\s:'\"]*:)[^/?#@\s'\"]+(@)")
_SECRET_NAME = re.compile(r"(?i)authorization|api[-_]?key|token|secret|password|credential|signature|cookie")
"""A configured header whose name says it carries a credential."""


def _mask_urls(text: str) -> str:
    """``text`` without the credentials of the URLs in it: a query parameter that names one
    (``?key=``, ``&access_token=``...) and the password of ``user:password@host``."""
    if "=" in text:
        text = _URL_SECRET.sub(r"\1" + MASK, text)
    if "://" in text:
        text = _URL_USERINFO.sub(r"\1" + MASK + r"\2", text)
    return text


def _url_credentials(url: str) -> list[str]:
    """The secrets written into a URL: its password, and the values of query parameters that name one."""
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    pattern = re.compile(rf"(?i){_SECRET_PARAMS}")
    found += [v for k, v in parse_qsl(parts.query) if pattern.fullmatch(k)]
    return found


def credentials(api_key: str | None, base_url: str | None, headers: Mapping[str, str]) -> tuple[str, ...]:
    """Every secret a provider's requests carry, to redact its quotes with: its API key, the
    values of configured headers whose name says they carry a credential (and the token after a
    scheme such as ``Bearer``), and the credentials written into its ``base_url`` (a password,
    which httpx sends as Basic auth; ``?key=``...). Longest first; header and URL values shorter
    than ``MIN_SECRET_CHARS`` are left out, as ``Redactor`` leaves them out."""
    found = [api_key] if api_key else []
    for name, value in headers.items():
        if _SECRET_NAME.search(name):
            found += [value, value.split(" ", 1)[1]] if " " in value else [value]
    found += _url_credentials(base_url or "")
    kept = dict.fromkeys(s for s in found if s == api_key or len(s) >= MIN_SECRET_CHARS)
    return tuple(sorted(kept, key=len, reverse=True))


def _strings(data: Any, into: list[str]) -> None:
    """Every string in a JSON-like value, keys included."""
    if isinstance(data, str):
        into.append(data)
    elif isinstance(data, dict):
        for k, v in data.items():
            if isinstance(k, str):
                into.append(k)
            _strings(v, into)
    elif isinstance(data, list | tuple):
        for v in data:
            _strings(v, into)


def clip(text: str, secrets: Iterable[str | None], limit: int) -> str:
    """At most ``limit`` characters of ``text`` as they may be kept: redacted first, then cut
    (a cut first can split a key and keep its start)."""
    return mask(text, secrets)[:limit]


class Redactor:
    """Replaces every known secret value with ``[redacted]``.

    As a net (``__call__``, ``scrub``) it runs on every result, answers and progress included,
    so it first asks whether a text could hold a secret at all: a key as it is begins with one of
    a few 4-character starts, and a quoted one needs ``%``, ``&`` or ``\\``; it asks that once for
    all the strings of a result. Such a text gets every form ``mask`` knows but base64 and the
    URL credentials (an answer's URLs are its own). Errors, quotes of upstream text and log records
    get the whole treatment (``quote``, ``clip``, the logging filter), URL credentials too."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self._starts: tuple[str, ...] = ()
        self._filter: logging.Filter | None = None
        self.add(*secrets)

    @classmethod
    def from_environment(cls, settings: Settings, env: Mapping[str, str] = os.environ) -> Redactor:
        """Every key a configured provider names (``api_key_env``), the well-known key variables,
        configured headers that carry a credential (``authorization``, ``x-api-key``...), and the
        credentials written into a provider's ``base_url`` (``?key=``, ``user:password@``)."""
        names = {*KEY_VARIABLES, *(p.api_key_env for p in settings.providers if p.api_key_env)}
        secrets = [env[n] for n in names if env.get(n)]
        for p in settings.providers:
            secrets += credentials(None, p.base_url, p.headers)
        return cls(secrets)

    def add(self, *secrets: str) -> None:
        # Longest first, so a key that contains another is removed whole.
        merged = {*self._secrets, *(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)}
        self._secrets = tuple(sorted(merged, key=len, reverse=True))
        self._starts = tuple(dict.fromkeys(s[:CUT_START_CHARS] for s in self._secrets))

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def _suspect(self, text: str) -> bool:
        """Whether ``text`` may hold a secret as it is, whole or cut (False: it certainly holds none)."""
        return any(start in text for start in self._starts)

    def _may_hold(self, text: str) -> bool:
        """Whether ``text`` may hold a secret as it is or quoted (False: it certainly holds none)."""
        return "%" in text or "&" in text or "\\" in text or self._suspect(text)

    def __call__(self, text: str) -> str:
        """``text`` without any known secret, in every form ``mask`` knows; its URLs kept.

        The net over what leaves the server, answers and progress included: a text that cannot
        hold a secret (``_may_hold``) costs a few substring checks. A run of ``RUN_CHARS`` is
        found only in a text that holds a key's start or an escape character: finding one that
        holds neither would cost a pass over every answer. URL credentials are for what is
        quoted from upstream (``quote``, ``clip``)."""
        if not self._secrets or not self._may_hold(text):
            return text
        return _mask_secrets(text, self._secrets, base64_forms=False)

    def quote(self, text: str) -> str:
        """``text`` as it may be kept or shown when it quotes an upstream or an error: every known
        secret removed in every form ``mask`` knows, and the credentials of any URL."""
        return mask(text, self._secrets)

    def clip(self, text: str, limit: int) -> str:
        """At most ``limit`` characters of ``text``: redacted as ``quote`` does first, then cut."""
        return clip(text, self._secrets, limit)

    def scrub(self, data: Any) -> Any:
        """The same JSON-like value with every string redacted (``data`` itself when none holds a secret)."""
        if not self._secrets:
            return data
        strings: list[str] = []
        _strings(data, strings)
        if not self._may_hold("\0".join(strings)):  # no start spans two: none holds a NUL
            return data
        return self._scrub(data)

    def _scrub(self, data: Any) -> Any:
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {self(k) if isinstance(k, str) else k: self._scrub(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self._scrub(v) for v in data]
        return data

    def logging_filter(self) -> logging.Filter:
        """A filter that rewrites each record's message (arguments merged in) without its secrets."""
        redactor = self

        class _Scrub(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                message = record.getMessage()
                clean = mask(message, redactor._secrets)
                if record.exc_info and record.exc_info[1] is not None:
                    # The traceback is rendered later from exc_info: render it now, scrubbed.
                    clean += "\n" + mask(logging.Formatter().formatException(record.exc_info), redactor._secrets)
                    record.exc_info = None
                    record.exc_text = None
                if clean != message:  # else leave msg and args alone: some formatters read the args
                    record.msg, record.args = clean, None
                return True

        return _Scrub()

    def install(self, logger: logging.Logger | None = None) -> logging.Filter:
        """Scrub every record that reaches the handlers of ``logger`` (the root logger by default).
        Returns the filter added to each of them (once: installing again adds nothing)."""
        target = logger or logging.getLogger()
        if self._filter is None:
            self._filter = self.logging_filter()
        for handler in target.handlers:
            handler.addFilter(self._filter)  # a no-op on a handler that has it
        return self._filter
