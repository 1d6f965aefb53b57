"""How hard a request looks, for ``quality: "auto"``: a cheap local estimate, no model asked.

Each feature of the request adds a bounded share to a score in 0..1 (``_WEIGHTS`` and ``_CUES``
below say how much); cues of easy work (summarise, translate, classify, ...) take some back. The
tier is cut from the score at ``CUT_POINTS``:

    score < 0.25 low  <  0.50 medium  <  0.80 high  <=  critical

Every share only grows with its feature (a longer prompt, one more reasoning cue, a larger
``max_tokens``, another image never lowers the verdict; one more easy cue never raises it).

Cues are English words and phrases, matched on whole lowercased words (a set intersection) and
plain substrings (the phrases): no regex per cue. Only the first and the last ``SCAN_CHARS``
characters of the text are scanned, so a very long prompt costs no more than a 40 kB one; its
length still counts in full (``prompt_tokens``).

Measured (CPython 3.11, one core of the development machine, ``time.perf_counter`` over repeated
calls on an English prompt dense with cues): about 37 µs for a 1 kB prompt, about 0.8 ms for a 1 MB one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .estimates import prompt_tokens_by_chars
from .types import CompletionRequest, Quality

__all__ = ["CUT_POINTS", "SCAN_CHARS", "Complexity", "assess"]

SCAN_CHARS = 20_000
"""At most this many characters are scanned from each end of the request's text."""

CUT_POINTS: tuple[tuple[float, Quality], ...] = ((0.25, "medium"), (0.50, "high"), (0.80, "critical"))
"""The lowest score of each tier above ``low``."""


@dataclass(frozen=True, slots=True)
class _Cue:
    kind: str
    """``reasoning``, ``code``, ``long_output`` (raise the score) or ``easy`` (lowers it)."""
    weight: float
    reason: str
    words: frozenset[str] = frozenset()
    phrases: tuple[str, ...] = ()


def _cue(kind: str, weight: float, reason: str, words: str = "", phrases: tuple[str, ...] = ()) -> _Cue:
    return _Cue(kind, weight, reason, frozenset(words.split()), phrases)


_CUES: tuple[_Cue, ...] = (
    # Reasoning and maths: the work is in the thinking, not the typing.
    _cue("reasoning", 0.50, "asks for a proof", "prove proves proving proof proofs theorem lemma"),
    _cue("reasoning", 0.35, "asks for a derivation", "derive derives deriving derivation"),
    _cue("reasoning", 0.20, "asks for step-by-step reasoning", phrases=("step by step", "step-by-step")),
    _cue("reasoning", 0.10, "asks why", "why"),
    _cue("reasoning", 0.15, "asks for an analysis", "analyse analyze analysis evaluate assess critique"),
    _cue("reasoning", 0.20, "asks to optimise", "optimise optimize optimisation optimization minimise minimize"),
    _cue("reasoning", 0.20, "weighs trade-offs", "tradeoffs tradeoff", ("trade-off", "trade off", "pros and cons")),
    _cue("reasoning", 0.15, "asks about edge cases", phrases=("edge case", "corner case")),
    _cue("reasoning", 0.20, "involves equations", "equation equations integral derivative eigenvalue"),
    _cue("reasoning", 0.20, "asks about an algorithm or its complexity", "algorithm algorithms",
         ("big-o", "time complexity", "o(n")),
    _cue("reasoning", 0.20, "asks for a design", "architecture architect", ("design a", "design an", "design the")),
    _cue("reasoning", 0.20, "involves distributed or concurrent systems",
         "distributed concurrency concurrent consensus deadlock", ("race condition",)),
    _cue("reasoning", 0.15, "involves security", "vulnerability exploit", ("threat model",)),
    # Writing code: more than prose, less than a proof.
    _cue("code", 0.30, "asks for code",
         "implement implementation refactor debug function functions script program code regex sql "
         "python javascript typescript rust golang java kotlin c++ bash", ("fix the bug",)),
    _cue("code", 0.10, "mentions a stack trace", "traceback", ("stack trace",)),
    # A long answer.
    _cue("long_output", 0.10, "asks for a long answer", "detailed thorough comprehensive essay",
         ("in depth", "in-depth", "in detail")),
    # Easy work: a small model does it as well.
    _cue("easy", 0.20, "summarise", "summarise summarize summary tldr", ("tl;dr",)),
    _cue("easy", 0.15, "translate", "translate translation"),
    _cue("easy", 0.20, "classify", "classify categorise categorize label sentiment"),
    _cue("easy", 0.15, "extract", "extract"),
    _cue("easy", 0.15, "rewrite", "rewrite rephrase paraphrase proofread", ("fix the typo", "fix the grammar")),
    _cue("easy", 0.20, "a one-word answer", phrases=("one word", "single word", "yes or no", "yes/no")),
)
"""The cue table. A cue counts once however often it appears; the shares of one kind are capped
at ``_WEIGHTS[kind]``."""

_WEIGHTS: dict[str, float] = {
    "reasoning": 0.60,       # the sum of reasoning cues, at most
    "code": 0.35,            # the sum of code-asking cues, at most
    "long_output": 0.15,     # the sum of long-answer cues, at most
    "easy": 0.30,            # taken off, at most
    "prompt_tokens": 0.20,   # log-scaled, full at LONG_PROMPT_TOKENS
    "turns": 0.10,           # full at 11 turns
    "code_present": 0.15,    # a fenced block or a few lines of code
    "parts": 0.25,           # 0.04 for each listed requirement beyond the first
    "questions": 0.15,       # 0.04 for each question beyond the first
    "max_tokens": 0.20,      # log-scaled above 1024, full at 32k
    "schema": 0.20,          # json_schema: base plus size and depth
    "json_object": 0.03,
    "tools": 0.15,           # 0.05 plus 0.02 a tool
    "images": 0.20,          # 0.10 plus 0.03 an image beyond the first
}
_LONG_PROMPT_TOKENS = 100_000
_BIG_SCHEMA_PROPERTIES = 40
_SCHEMA_NODES_WALKED = 2_000

_PUNCTUATION = str.maketrans({ch: " " for ch in "!\"#$%&()*+,./:;<=>?@[\\]^_`{|}~"})
"""Turned to spaces before splitting into words (apostrophes and hyphens stay: ``trade-offs``)."""
_CODE_STARTS = ("def ", "class ", "import ", "function ", "const ", "let ", "var ", "public ", "private ",
                "#include", "fn ", "func ", "package ", "for (", "if (", "while (", "select ", "@")
_CODE_ENDS = (";", "{", "}", "):", "=>")
_LIST_ITEM = re.compile(r"(?:\d{1,2}[.)]|[-*\u2022])[ \t]+\S")
_QUESTION = re.compile(r"\?(?=\s|$)")
_WORD_CUES: dict[str, _Cue] = {w: c for c in _CUES for w in c.words}
_PHRASE_CUES: tuple[tuple[str, _Cue], ...] = tuple((p, c) for c in _CUES for p in c.phrases)


@dataclass(frozen=True, slots=True)
class Complexity:
    """What ``assess`` found: the tier, the score it is cut from, every feature, and the reasons
    (in words) for what raised the score."""

    quality: Quality
    score: float
    features: dict[str, int | float | bool]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.quality, "score": round(self.score, 3), "features": dict(self.features),
                "reasons": list(self.reasons)}


def assess(request: CompletionRequest) -> Complexity:
    """The tier a request looks like it needs, from the request alone (cheap: see the module's
    docstring). Never raises on a request that was built, however odd (no text, only images)."""
    texts = ([request.system] if request.system else []) + [m.content for m in request.messages]
    text, truncated = _bounded(texts, SCAN_CHARS)
    lowered = text.lower()
    cues = _cues_in(lowered)
    shares: list[tuple[float, str]] = []

    for kind in ("reasoning", "code", "long_output"):
        found = [c for c in cues if c.kind == kind]
        left = _WEIGHTS[kind]
        for c in sorted(found, key=lambda c: -c.weight):
            shares.append((min(c.weight, left), c.reason))
            left -= min(c.weight, left)

    tokens = prompt_tokens_by_chars(request)
    shares.append((_WEIGHTS["prompt_tokens"] * _log_share(tokens, 500, _LONG_PROMPT_TOKENS),
                   f"a long prompt (about {tokens} tokens)"))
    turns = len(request.messages)
    shares.append((_WEIGHTS["turns"] * min(1.0, max(0, turns - 1) / 10), f"a conversation of {turns} turns"))
    code_blocks = text.count("```") // 2
    code_lines, parts = _lines(lowered)
    code_present = code_blocks > 0 or code_lines >= 3
    shares.append((_WEIGHTS["code_present"] if code_present else 0.0, "contains code"))
    shares.append((min(_WEIGHTS["parts"], 0.04 * max(0, parts - 1)), f"lists {parts} requirements"))
    questions = len(_QUESTION.findall(text))
    shares.append((min(_WEIGHTS["questions"], 0.04 * max(0, questions - 1)), f"asks {questions} questions"))
    shares.append((_WEIGHTS["max_tokens"] * _log_share(request.max_tokens - 1024, 1024, 31 * 1024),
                   f"allows a long answer ({request.max_tokens} tokens)"))

    rf = request.response_format
    properties, depth = _schema_size(rf.schema) if rf is not None and rf.schema is not None else (0, 0)
    if rf is not None and rf.type == "json_schema":
        schema = 0.05 + 0.10 * min(1.0, properties / _BIG_SCHEMA_PROPERTIES) + 0.05 * min(1.0, max(0, depth - 1) / 4)
        shares.append((min(_WEIGHTS["schema"], schema), f"asks for structured output ({properties} fields)"))
    json_object = rf is not None and rf.type == "json_object"
    shares.append((_WEIGHTS["json_object"] if json_object else 0.0, "asks for JSON"))
    tools = len(request.tools)
    shares.append((min(_WEIGHTS["tools"], 0.05 + 0.02 * tools) if tools else 0.0, f"offers {tools} tools"))
    images = sum(len(m.images()) for m in request.messages)
    shares.append((min(_WEIGHTS["images"], 0.07 + 0.03 * images) if images else 0.0, f"holds {images} images"))

    easy = [c for c in cues if c.kind == "easy"]
    relief = min(_WEIGHTS["easy"], sum(c.weight for c in easy))
    score = min(1.0, max(0.0, sum(s for s, _ in shares) - relief))
    raised = sorted((s for s in shares if s[0] >= 0.02), key=lambda s: -s[0])
    features: dict[str, int | float | bool] = {
        "prompt_tokens": tokens, "turns": turns,
        "tool_turns": sum(1 for m in request.messages if m.role == "tool" or m.tool_calls),
        "code_blocks": code_blocks, "code_lines": code_lines, "code_present": code_present,
        "code_cues": sum(1 for c in cues if c.kind == "code"),
        "reasoning_cues": sum(1 for c in cues if c.kind == "reasoning"),
        "parts": parts, "questions": questions, "max_tokens": request.max_tokens,
        "long_output_cues": sum(1 for c in cues if c.kind == "long_output"),
        "schema_properties": properties, "schema_depth": depth, "json_object": json_object,
        "tools": tools, "images": images, "easy_cues": len(easy),
        "scanned_chars": len(text), "truncated": truncated,
    }
    return Complexity(_tier(score), score, features, tuple(r for _, r in raised))


def _tier(score: float) -> Quality:
    quality: Quality = "low"
    for cut, tier in CUT_POINTS:
        if score >= cut:
            quality = tier
    return quality


def _log_share(n: int, unit: int, full: int) -> float:
    """0 at ``n <= 0``, growing with log(1 + n/unit), 1 at ``n >= full``."""
    if n <= 0:
        return 0.0
    return min(1.0, math.log1p(n / unit) / math.log1p(full / unit))


def _cues_in(lowered: str) -> list[_Cue]:
    words = set(lowered.translate(_PUNCTUATION).split())
    found = {id(c): c for c in (_WORD_CUES[w] for w in words & _WORD_CUES.keys())}
    found.update((id(c), c) for p, c in _PHRASE_CUES if p in lowered)
    return list(found.values())


def _lines(lowered: str) -> tuple[int, int]:
    """How many lines look like code, and how many are items of a numbered or bulleted list."""
    code = items = 0
    for line in lowered.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith(_CODE_STARTS) or s.endswith(_CODE_ENDS):
            code += 1
        elif (s[0].isdigit() or s[0] in "-*\u2022") and _LIST_ITEM.match(s):
            items += 1
    return code, items


def _bounded(texts: list[str], limit: int) -> tuple[str, bool]:
    """The texts joined by newlines, or only their first and last ``limit`` characters (and True)
    when they are longer than twice that: never joins a huge prompt whole."""
    total = sum(len(t) + 1 for t in texts)
    if total <= 2 * limit:
        return "\n".join(texts), False
    head: list[str] = []
    need = limit
    for t in texts:
        head.append(t[:need])
        need -= len(head[-1]) + 1
        if need <= 0:
            break
    tail: list[str] = []
    need = limit
    for t in reversed(texts):
        tail.append(t[-need:])
        need -= len(tail[-1]) + 1
        if need <= 0:
            break
    return "\n".join(head) + "\n" + "\n".join(reversed(tail)), True


def _schema_size(schema: dict[str, Any]) -> tuple[int, int]:
    """How many properties a JSON schema declares (all levels), and how deep its objects nest.
    Walks at most ``_SCHEMA_NODES_WALKED`` nodes: a huge schema is simply big."""
    properties = depth = walked = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack and walked < _SCHEMA_NODES_WALKED:
        node, level = stack.pop()
        walked += 1
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                properties += len(props)
                depth = max(depth, level)
                stack.extend((v, level + 1) for v in props.values())
            stack.extend((v, level) for k, v in node.items() if k != "properties" and isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, level) for v in node if isinstance(v, (dict, list)))
    return properties, depth
