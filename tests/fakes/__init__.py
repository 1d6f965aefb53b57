"""Test-only fake LLM provider servers (see README.md)."""

from .provider_servers import (
    FAULTS,
    KINDS,
    FakeProvider,
    RecordedRequest,
    Step,
    Usage,
    refused_url,
    running,
    unused_url,
)

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
