"""A fake LLM upstream on a real socket: the OpenAI, Gemini and Ollama wire protocols on one port.

Providers are tested through their real SDKs against it; it is the network seam of the test
suite (loaded as a pytest plugin by tests/conftest.py). Tell it how to behave before a call,
then look at what it received:

    fake_upstream.behave(text="Hi", chunk_delay=0.05, drop_after=2)
    ...
    assert fake_upstream.last.body["temperature"] == 0.2

To prove that something streams, don't time it: stream in lock-step. The fake then sends piece
k + 1 only after the test has seen piece k (wherever it reads it) and said so:

    gate = fake_upstream.behave(chunks=["a", "b"], lockstep=True).gate
    ...  # read piece k, then
    assert gate.holding(k), gate.describe()  # piece k + 1 has not been sent yet
    gate.release()

(see tests/fake_upstream/lockstep.py; a test that never releases fails after 30 s, not hangs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_upstream.lockstep import Gate
from tests.fake_upstream.server import FakeUpstream, closed_port_url, unanswered_url, wait_until
from tests.fake_upstream.wires import Behaviour, RecordedRequest

__all__ = [
    "Behaviour",
    "FakeUpstream",
    "Gate",
    "RecordedRequest",
    "closed_port_url",
    "fake_upstream",
    "unanswered_url",
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
