"""Metering: what a call may cost (the hold), what it did cost (the settle), and its record.

A call holds credits before its provider is called and settles exactly once after: the real
usage is charged, the rest released, and the usage record written, in one short transaction.
No transaction is open while the provider works. A settle that cannot be written (the database
is down, its pool exhausted) is never dropped: it is journalled to a file and retried until it
is written (`pending`), so a delivered answer is always charged.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings

from billing.authentication import ApiKeyInfo
from billing.selectors import Price, price_for
from billing.services import (
    credits_hold,
    credits_hold_renew,
    credits_release,
    credits_settle,
    rows,
)
from billing.services.credits import MAX_AMOUNT
from llm_api import pending
from llm_api.concurrency import LeaseKeeper
from llm_api.images import image_tokens
from llm_api.models import UsageRecord
from llm_api.providers.base import ChatRequest, ProviderError, Usage
from operations import metrics

if TYPE_CHECKING:
    from llm_api.limits import Admission
    from llm_api.selectors import Target

logger = logging.getLogger(__name__)

FRAMING_TOKENS = 4  # per message: its role and separators


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the user, the API key when one was used, and this request's id."""

    user_id: int
    request_id: str
    api_key: ApiKeyInfo | None = None
    batch: bool = False  # a batch line: no live rpm/tpm, BATCH_PRICE_MULTIPLIER

    @property
    def api_key_id(self) -> int | None:
        return self.api_key.id if self.api_key else None


# --- token estimates ----------------------------------------------------------------------------


def prompt_texts(request: ChatRequest) -> Iterator[str]:
    """Yield every text of the request that reaches the model: each message's text, name,
    tool call id and tool calls, and the tools, tool choice and response format."""
    for message in request.messages:
        yield message.text
        yield from (value for value in (message.name, message.tool_call_id) if value)
        if message.tool_calls:
            yield _json(message.tool_calls)
    for extra in (request.tools, request.tool_choice, request.response_format):
        if extra:
            yield extra if isinstance(extra, str) else _json(extra)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def prompt_tokens_estimate(request: ChatRequest) -> int:
    """Return a prompt-token count for when a provider reports none: about four characters a
    token, plus a few tokens of framing per message and each image's tokens."""
    chars = sum(len(text) for text in prompt_texts(request))
    return math.ceil(chars / 4) + FRAMING_TOKENS * len(request.messages) + images_tokens(request)


def prompt_tokens_bound(request: ChatRequest) -> int:
    """Return the most prompt tokens one upstream call of the request can cost, for its hold.

    A token of a byte-level tokenizer (GPT's, Llama's, Gemini's byte fallback) stands for at
    least one byte of UTF-8, so the byte count of every text that reaches the model bounds its
    tokens; framing and images are added on top.
    """
    size = sum(len(text.encode("utf-8", "surrogatepass")) for text in prompt_texts(request))
    return size + FRAMING_TOKENS * len(request.messages) + images_tokens(request)


def images_tokens(request: ChatRequest) -> int:
    """Return what the request's images cost in prompt tokens, by their decoded size (an image
    URL not fetched yet: the most an image may be, IMAGE_MAX_PIXELS)."""
    return sum(image_tokens(image) for message in request.messages for image in message.images)


# More tokens than any one call can use: a count above it is a provider's mistake, not usage.
USAGE_TOKENS_MAX = 100_000_000


def usage_checked(usage: Usage | None, provider: str) -> Usage | None:
    """Return a provider's reported usage, or None (the gateway then estimates) when its counts
    make no sense: not whole numbers, negative, or beyond any call's size."""
    if usage is None:
        return None
    counts = (usage.prompt_tokens, usage.completion_tokens)
    if all(
        isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= USAGE_TOKENS_MAX
        for count in counts
    ):
        return usage
    logger.warning("Provider '%s' reported usage that makes no sense: %r.", provider, counts)
    return None


def completion_tokens_estimate(text_length: int, deltas: int) -> int:
    """Return a completion-token count from what was streamed: a delta is about a token."""
    return max(deltas, math.ceil(text_length / 4))


def texts_tokens_estimate(texts: list[str]) -> int:
    """Return a token count for embedding inputs, about four characters a token."""
    return sum(math.ceil(len(text) / 4) for text in texts)


def texts_tokens_bound(texts: list[str]) -> int:
    """Return the most tokens the embedding inputs can cost (a token per byte, plus one each)."""
    return sum(len(text.encode("utf-8", "surrogatepass")) + 1 for text in texts)


# --- a batch line's price ----------------------------------------------------------------------


def batch_priced(caller: Caller, amount: int) -> int:
    """Return `amount` times BATCH_PRICE_MULTIPLIER for a batch line, else `amount`."""
    if not caller.batch:
        return amount
    return math.ceil(amount * settings.BATCH_PRICE_MULTIPLIER)


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

    def hold(self, amount: int) -> None:
        """Reserve `amount`, the most this call can cost; raises InsufficientCredits (402).

        The database connection goes back to the pool with the write (`ledger_run`), so the
        request holds none while the provider works.
        """
        amount = batch_priced(self.caller, amount)
        credits_hold(
            user_id=self.caller.user_id,
            amount=amount,
            request_id=self.caller.request_id,
            api_key_id=self.caller.api_key_id,
            model=self.target.name,
        )
        running.hold(self.caller.request_id)
        if self.stream:
            metrics.stream_opened(request_id=self.caller.request_id)

    def answered_by(self, target: Target) -> None:
        """Meter `target` from now on (a fallback took over): its name and its price."""
        if target is not self.target:
            self.target = target
            self.price = price_for(provider=target.provider.name, model=target.model)

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def settle(self, usage: Usage, *, status: str = UsageRecord.Status.OK, error: str = "") -> int:
        """Charge the real usage, release the rest of the hold, record the request; once."""
        if self.done:
            return 0
        self.done = True
        running.drop(self.caller.request_id)
        if self.admission is not None:
            self.admission.settle(usage.total_tokens)
        cost = self.price.cost(usage.prompt_tokens, usage.completion_tokens)
        cost = min(batch_priced(self.caller, cost), MAX_AMOUNT)
        pending.write(
            "settle",
            request_id=self.caller.request_id,
            cost=cost,
            model=self.target.name,
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
        running.drop(self.caller.request_id)
        if self.admission is not None:
            self.admission.settle(0)
        code = error.code if error else "client_closed"
        status = UsageRecord.Status.UPSTREAM_ERROR if error else UsageRecord.Status.CLIENT_CLOSED
        record = self._record(Usage(0, 0), 0, status, code)
        pending.write("release", request_id=self.caller.request_id, record=record)

    def _record(self, usage: Usage, cost: int, status: str, error_code: str) -> dict:
        now = time.monotonic()
        ttft = self.first_token_at
        record = {
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
        # Every call ends here, settled or released, once: its metrics and its log line.
        metrics.call_observed(
            record=record, key_prefix=self.caller.api_key.prefix if self.caller.api_key else ""
        )
        return record


# --- holds of calls in progress ----------------------------------------------------------------


# The holds of this process's calls in progress, renewed together every third of
# HOLD_TTL_SECONDS in one statement: the sweep never releases the hold of a call still running
# (a long stream, a slow model), while the holds of a process that died expire within a TTL.
running: LeaseKeeper[str] = LeaseKeeper(
    lambda request_ids: credits_hold_renew(request_ids=request_ids),
    "hold-keeper",
    lease_seconds=lambda: settings.HOLD_TTL_SECONDS,
)


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
