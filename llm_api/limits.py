"""Per-key and per-user limits: requests per minute, tokens per minute, requests in flight.

The pipeline's limit step: `admitted(caller, tokens=…)` admits a call or raises 429, yields its
`Admission` (the `x-ratelimit-*` headers of the answer), and gives its in-flight place back when
the block ends, however the call ends. `Admission.settle(tokens)` corrects tokens per minute from
the held estimate to the real usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from llm_api.metering import Caller


@dataclass(slots=True)
class Admission:
    """One admitted call: the headers its answer carries, and its token correction."""

    headers: dict[str, str] = field(default_factory=dict)

    def settle(self, tokens: int) -> None:
        """Count `tokens` (the real usage) instead of the estimate taken at admission."""


@contextmanager
def admitted(caller: Caller, *, tokens: int) -> Iterator[Admission]:
    """Admit one call of `caller` that may use up to `tokens`; raise 429 over a limit."""
    yield Admission()
