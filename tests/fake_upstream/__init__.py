"""A fake LLM upstream on a real socket: the OpenAI, Gemini and Ollama wire protocols on one port.

Providers are tested through their real SDKs against it; it is the network seam of the test
suite (loaded as a pytest plugin by tests/conftest.py). Tell it how to behave before a call,
then look at what it received:

    fake_upstream.behave(text="Hi", chunk_delay=0.05, drop_after=2)
    ...
    assert fake_upstream.last.body["temperature"] == 0.2
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_upstream.server import FakeUpstream, closed_port_url, wait_until
from tests.fake_upstream.wires import Behaviour, RecordedRequest

__all__ = [
    "Behaviour",
    "FakeUpstream",
    "RecordedRequest",
    "closed_port_url",
    "fake_upstream",
    "upstream_providers",
    "wait_until",
]


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A fresh fake upstream on its own port for one test."""
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream_providers(settings: Any, fake_upstream: FakeUpstream) -> FakeUpstream:
    """Point all four LLM_PROVIDERS at the fake (5 s timeout); return the fake."""
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=5.0)
    return fake_upstream
