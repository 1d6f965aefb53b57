"""What the redacting net costs per call on answer text and progress messages (µs per call).

    python bench/redaction_net.py [--number N]

A ``Redactor`` holding four realistic keys (an Anthropic, an OpenAI project, a Gemini key and a
long random one) runs on the strings a ``complete`` answer sends through it: the text, and the
structured result holding it (``scrub``); then on a progress message. Each text is timed as it
is and, for the escape-bearing ones, with none of the key in it (the common case).
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from llm_router.redaction import Redactor  # noqa: E402

_RANDOM = random.Random(14)  # made up here, of the shapes real keys have: nothing real is in the file


def _chars(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_RANDOM.choice(alphabet) for _ in range(n))


KEYS = (
    "sk-ant-api03-" + _chars(95, string.ascii_letters + string.digits + "_-") + "-AA",
    "sk-proj-" + _chars(156),
    "AIzaSy" + _chars(33),
    _chars(96),
)
PROSE = "The router must cost next to nothing on the path of every call, and it does. " * 3
CODE = ('def pct(values, q):\n    """Nearest-rank percentile."""\n    s = sorted(values)\n'
        '    print(f"{q}% done \\u00e9 &amp; \\\\path")  # see https://example.com/v1?a=1&b=2\n    return s[-1]\n')
TEXTS = {
    "short prose (240 chars)": PROSE,
    "long prose (4 kB)": (PROSE * 18)[:4000],
    "short code with % & \\ (220 chars)": CODE,
    "long code with % & \\ (4 kB)": (CODE * 20)[:4000],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=2000)
    n = parser.parse_args().number
    redact = Redactor(KEYS)
    print(f"{'text':40} {'answer+scrub µs':>16} {'progress µs':>12}")
    for name, text in TEXTS.items():
        structured = {"text": text, "model": "openai:gpt-x", "cost_usd": "0.000012", "attempts": []}

        def answer(text: str = text, structured: dict[str, Any] = structured) -> None:
            redact(text)
            redact.scrub(structured)

        def progress(head: str = text[:200]) -> None:
            redact(head)

        a = min(timeit.repeat(answer, number=n, repeat=5)) / n * 1e6
        p = min(timeit.repeat(progress, number=n, repeat=5)) / n * 1e6
        print(f"{name:40} {a:16.2f} {p:12.2f}")


if __name__ == "__main__":
    main()
