"""Test-only fake LLM provider servers (see README.md).

One module per provider dialect (``anthropic``, ``openai``, ``gemini``, ``ollama``), what they
share (``dialect``), the loopback server with its scripted faults (``server``, over ``http1``),
the llama.cpp and Ollama side questions (``side_endpoints``) and the upstream that echoes keys
back (``echoing_upstream``). Tests import what they need from here.
"""

from .dialect import FAULTS, KINDS, RecordedRequest, Step, Usage
from .server import FakeProvider, refused_url, running, unused_url

__all__ = [
    "FAULTS",
    "KINDS",
    "FakeProvider",
    "RecordedRequest",
    "Step",
    "Usage",
    "refused_url",
    "running",
    "unused_url",
]
