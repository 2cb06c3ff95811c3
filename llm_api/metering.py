"""Metering: what a call may cost (the hold), what it did cost (the settle), and its record.

A call holds credits before its provider is called and settles exactly once after: the real
usage is charged, the rest released, and the usage record written, in one short transaction.
No transaction is open while the provider works. A settle that cannot be written (the database
is down, its pool exhausted) is never dropped: it is journalled to a file and retried until it
is written (`pending`), so a delivered answer is always charged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from billing.authentication import ApiKeyInfo
from billing.selectors import Price, price_for
from billing.services import credits_hold, credits_release, credits_settle, rows
from llm_api import pending
from llm_api.models import UsageRecord
from llm_api.providers.base import ChatRequest, ProviderError, Usage

if TYPE_CHECKING:
    from llm_api.limits import Admission
    from llm_api.selectors import Target

logger = logging.getLogger(__name__)

IMAGE_TOKENS = 800  # what an image may cost in prompt tokens, for the hold only


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the user, the API key when one was used, and this request's id."""

    user_id: int
    request_id: str
    api_key: ApiKeyInfo | None = None

    @property
    def api_key_id(self) -> int | None:
        return self.api_key.id if self.api_key else None


# --- token estimates ----------------------------------------------------------------------------


def prompt_tokens_estimate(request: ChatRequest, *, generous: bool = False) -> int:
    """Return a prompt-token count for when a provider reports none (and, generous, for holds).

    About four characters a token, plus a few tokens of framing per message; the generous form
    (three characters a token, images at IMAGE_TOKENS) errs high so holds cover the real cost.
    """
    chars = sum(len(message.text) for message in request.messages)
    per_token = 3 if generous else 4
    images = sum(len(message.images) for message in request.messages)
    return math.ceil(chars / per_token) + 4 * len(request.messages) + images * IMAGE_TOKENS


def completion_tokens_estimate(text_length: int, deltas: int) -> int:
    """Return a completion-token count from what was streamed: a delta is about a token."""
    return max(deltas, math.ceil(text_length / 4))


def texts_tokens_estimate(texts: list[str], *, generous: bool = False) -> int:
    """Return a token count for embedding inputs."""
    per_token = 3 if generous else 4
    return sum(math.ceil(len(text) / per_token) for text in texts) + (len(texts) if generous else 0)


# --- the meter ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Meter:
    """One request's money and record: hold before the call, then settle or release once."""

    caller: Caller
    target: Target
    route: str
    stream: bool = False
    admission: Admission | None = None  # the limit step's, corrected to the real usage
    price: Price = field(init=False)
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    done: bool = False

    def __post_init__(self) -> None:
        self.price = price_for(provider=self.target.provider.name, model=self.target.model)

    def hold(self, *, prompt_tokens: int, completion_tokens: int) -> None:
        """Reserve the most this call can cost; raises InsufficientCredits (402).

        The database connection goes back to the pool with the write (`ledger_write`), so the
        request holds none while the provider works.
        """
        credits_hold(
            user_id=self.caller.user_id,
            amount=self.price.cost(prompt_tokens, completion_tokens),
            request_id=self.caller.request_id,
            api_key_id=self.caller.api_key_id,
            model=self.target.name,
        )

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def settle(self, usage: Usage, *, status: str = UsageRecord.Status.OK, error: str = "") -> int:
        """Charge the real usage, release the rest of the hold, record the request; once."""
        if self.done:
            return 0
        self.done = True
        if self.admission is not None:
            self.admission.settle(usage.total_tokens)
        cost = self.price.cost(usage.prompt_tokens, usage.completion_tokens)
        pending.write(
            "settle",
            request_id=self.caller.request_id,
            cost=cost,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimated=usage.estimated,
            record=self._record(usage, cost, status, error),
        )
        return cost

    def release(self, error: ProviderError | None = None) -> None:
        """Charge nothing: the call failed before any output (or the client left before it)."""
        if self.done:
            return
        self.done = True
        if self.admission is not None:
            self.admission.settle(0)
        code = error.code if error else "client_closed"
        status = UsageRecord.Status.UPSTREAM_ERROR if error else UsageRecord.Status.CLIENT_CLOSED
        record = self._record(Usage(0, 0), 0, status, code)
        pending.write("release", request_id=self.caller.request_id, record=record)

    def _record(self, usage: Usage, cost: int, status: str, error_code: str) -> dict:
        now = time.monotonic()
        ttft = self.first_token_at
        return {
            "request_id": self.caller.request_id,
            "user_id": self.caller.user_id,
            "api_key_id": self.caller.api_key_id,
            "route": self.route,
            "provider": self.target.provider.name,
            "model": self.target.model,
            "stream": self.stream,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "estimated": usage.estimated,
            "credits": cost,
            "status": status,
            "error_code": error_code,
            "latency_ms": int((now - self.started) * 1000),
            "ttft_ms": int((ttft - self.started) * 1000) if ttft else None,
        }


# --- what `pending` writes ----------------------------------------------------------------------


def usage_record_write(record: dict) -> None:
    rows.insert(UsageRecord, **record)


def settle_write(*, request_id: str, record: dict, **charge: object) -> None:
    """Write one settle (the ledger entry and the usage record, in one transaction)."""
    credits_settle(request_id=request_id, record=lambda: usage_record_write(record), **charge)


def release_write(*, request_id: str, record: dict) -> None:
    """Write one release (the hold freed, the usage record, in one transaction)."""
    credits_release(request_id=request_id, record=lambda: usage_record_write(record))


pending.register("settle", settle_write)
pending.register("release", release_write)
