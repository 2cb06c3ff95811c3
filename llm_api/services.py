"""The completion service: resolve → check → hold credits → call the provider → settle.

Every LLM route (OpenAI-compatible or seed-compatible) goes through `chat_create`,
`chat_stream_open` or `embeddings_create`, so auth, metering and errors are the same everywhere.
No database transaction is open while a provider works: the hold commits before the call and the
settle after it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from billing.authentication import ApiKeyInfo
from billing.selectors import Price, price_for
from billing.services import credits_hold, credits_release, credits_settle
from llm_api.exceptions import ModelNotAllowed, UnsupportedParameter
from llm_api.models import UsageRecord
from llm_api.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    ChatStream,
    EmbeddingResult,
    ProviderError,
    Usage,
)
from llm_api.schemas import ChatInput
from llm_api.selectors import Target, model_resolve

logger = logging.getLogger(__name__)

HEARTBEAT = object()
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


# --- metering ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Meter:
    """One request's money and record: hold before the call, then settle or release once."""

    caller: Caller
    target: Target
    route: str
    stream: bool = False
    price: Price = field(init=False)
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    done: bool = False

    def __post_init__(self) -> None:
        self.price = price_for(provider=self.target.provider.name, model=self.target.model)

    def hold(self, *, prompt_tokens: int, completion_tokens: int) -> None:
        """Reserve the most this call can cost; raises InsufficientCredits (402).

        Then hand the database connection back while the provider works: the server runs a
        thread per request, and PostgreSQL's pool is far smaller than that.
        """
        credits_hold(
            user_id=self.caller.user_id,
            amount=self.price.cost(prompt_tokens, completion_tokens),
            request_id=self.caller.request_id,
            api_key_id=self.caller.api_key_id,
            model=self.target.name,
        )
        release_connection()

    def settle(
        self, usage: Usage, *, status: str = UsageRecord.Status.OK, error_code: str = ""
    ) -> int:
        """Charge the real usage, release the rest of the hold, record the request."""
        if self.done:
            return 0
        self.done = True
        cost = self.price.cost(usage.prompt_tokens, usage.completion_tokens)
        credits_settle(
            request_id=self.caller.request_id,
            cost=cost,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimated=usage.estimated,
        )
        self._record(usage, cost, status, error_code)
        return cost

    def release(self, error: ProviderError | None = None) -> None:
        """Charge nothing: the call failed before any output."""
        if self.done:
            return
        self.done = True
        credits_release(request_id=self.caller.request_id)
        code = error.code if error else "client_closed"
        status = UsageRecord.Status.UPSTREAM_ERROR if error else UsageRecord.Status.CLIENT_CLOSED
        self._record(Usage(0, 0), 0, status, code)

    @contextmanager
    def released_on_error(self) -> Iterator[None]:
        """Release the hold if the provider call raises: nothing is charged for a failure."""
        try:
            yield
        except ProviderError as error:
            self.release(error)
            raise
        except BaseException:
            self.release(ProviderError("The provider call failed.", code="gateway_error"))
            raise

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def _record(self, usage: Usage, cost: int, status: str, error_code: str) -> None:
        now = time.monotonic()
        UsageRecord.objects.create(
            request_id=self.caller.request_id,
            user_id=self.caller.user_id,
            api_key_id=self.caller.api_key_id,
            route=self.route,
            provider=self.target.provider.name,
            model=self.target.model,
            stream=self.stream,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimated=usage.estimated,
            credits=cost,
            status=status,
            error_code=error_code,
            latency_ms=int((now - self.started) * 1000),
            ttft_ms=int((self.first_token_at - self.started) * 1000)
            if self.first_token_at
            else None,
        )


# --- checks ------------------------------------------------------------------------------------


def target_for(caller: Caller, model: str | None, provider_name: str | None = None) -> Target:
    """Resolve the model and apply the key's allowlist."""
    target = model_resolve(model, provider_name=provider_name)
    if caller.api_key and not caller.api_key.allows(target.name):
        raise ModelNotAllowed(
            f"This API key may not use '{target.name}'. Allowed: "
            f"{', '.join(caller.api_key.allowed_models)}.",
            param="model",
        )
    return target


def capabilities_check(target: Target, request: ChatRequest, *, stream: bool) -> None:
    """Refuse what the provider cannot honour, naming the parameter; never drop it silently.

    `n` > 1 without native support is honoured by fanning out n calls, except in a stream.
    """
    caps = target.provider.capabilities
    kind = (request.response_format or {}).get("type")
    problems = [
        (request.has_images and not caps.images, "messages", "cannot take images"),
        (
            request.n > 1 and not caps.n and stream,
            "n",
            "streams one choice per request (n must be 1 when stream is true)",
        ),
        (
            kind == "json_object" and not caps.json_object,
            "response_format",
            "cannot do json_object",
        ),
        (
            kind == "json_schema" and not caps.json_schema,
            "response_format",
            "cannot do json_schema",
        ),
        (bool(request.tools) and not caps.tools, "tools", "cannot call tools"),
    ]
    for param in sorted(caps.unsupported_params):
        if getattr(request, param, None) is not None:
            problems.append((True, param, f"cannot honour '{param}'; remove it"))
    for failed, param, reason in problems:
        if failed:
            raise UnsupportedParameter(f"'{target.name}' {reason}.", param=param)


def release_connection() -> None:
    """Return the database connection to PostgreSQL's pool (SQLite's stays: it is cheap)."""
    if connection.vendor != "sqlite" and not connection.in_atomic_block:
        connection.close()


# --- chat --------------------------------------------------------------------------------------


def chat_prepare(caller: Caller, chat: ChatInput, route: str, provider_name: str | None) -> Meter:
    target = target_for(caller, chat.model, provider_name)
    capabilities_check(target, chat.request, stream=chat.stream)
    chat.request.model = target.model
    meter = Meter(caller=caller, target=target, route=route, stream=chat.stream)
    meter.hold(
        prompt_tokens=prompt_tokens_estimate(chat.request, generous=True),
        completion_tokens=chat.request.max_tokens * chat.request.n,
    )
    return meter


def provider_chat(target: Target, request: ChatRequest) -> ChatResult:
    """Return the provider's answer; n calls at once, merged, when it has no native `n`."""
    provider = target.provider
    if request.n == 1 or provider.capabilities.n:
        return provider.chat(request)
    single = dataclasses.replace(request, n=1)
    with ThreadPoolExecutor(max_workers=request.n, thread_name_prefix="llm-fan-out") as pool:
        results = list(pool.map(provider.chat, [single] * request.n))
    choices = [
        dataclasses.replace(result.choices[0], index=index) for index, result in enumerate(results)
    ]
    usages = [result.usage for result in results]
    usage = None
    if all(usages):
        usage = Usage(
            sum(u.prompt_tokens for u in usages),  # type: ignore[union-attr]
            sum(u.completion_tokens for u in usages),  # type: ignore[union-attr]
        )
    return ChatResult(model=results[0].model, choices=choices, usage=usage)


def chat_create(
    *,
    caller: Caller,
    chat: ChatInput,
    route: str = "chat.completions",
    provider_name: str | None = None,
) -> tuple[Target, ChatResult]:
    """Run a whole (non-streamed) chat call and charge its usage. Returns the target and result.

    The result's usage is the provider's, or an estimate flagged `estimated` when it gave none.
    """
    meter = chat_prepare(caller, chat, route, provider_name)
    with meter.released_on_error():
        result = provider_chat(meter.target, chat.request)
    meter.first_token()
    if result.usage is None:
        text = sum(len(choice.text) for choice in result.choices)
        result.usage = Usage(
            prompt_tokens_estimate(chat.request),
            completion_tokens_estimate(text, 0),
            estimated=True,
        )
    meter.settle(result.usage)
    return meter.target, result


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """An error after the first byte: sent to the client as an SSE error event."""

    error: ProviderError


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last item of every stream: the usage that was charged."""

    usage: Usage


class MeteredStream:
    """An open upstream stream that charges exactly what it delivered, however it ends.

    Iterate it for ChatChunks (plus HEARTBEAT while the upstream is silent, and a StreamFailed
    after an upstream error); the last item is a StreamEnd carrying the charged usage. Closing the
    iterator early (the client hung up) closes the upstream and charges what was produced.
    """

    def __init__(self, meter: Meter, chat: ChatInput, upstream: ChatStream) -> None:
        self.meter = meter
        self.chat = chat
        self.upstream = upstream
        self.reported: Usage | None = None
        self.text_length = 0
        self.deltas = 0
        self.error: ProviderError | None = None

    @property
    def target(self) -> Target:
        return self.meter.target

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self._items():
                if item is HEARTBEAT:
                    yield item
                    continue
                self._count(item)
                if item.text or item.finish_reason or item.tool_calls:
                    yield item
            usage = self._end(finished=True)
        finally:
            self.close()
        if self.error is not None:
            yield StreamFailed(self.error)
        yield StreamEnd(usage)

    def close(self) -> None:
        """End the stream now: close the upstream and charge what was delivered, once.

        Runs when the client hangs up, also before the first byte was ever asked for (the
        server closes the response without iterating it).
        """
        if not self.meter.done:
            self._end(finished=False)

    def _end(self, *, finished: bool) -> Usage:
        self.upstream.close()
        return self._settle(finished)

    def _items(self) -> Iterator[Any]:
        heartbeat = settings.STREAM_HEARTBEAT_SECONDS
        source = iter(self.upstream)
        items = pumped(source, heartbeat) if heartbeat > 0 else source
        try:
            yield from items
        except ProviderError as error:
            self.error = error

    def _count(self, chunk: ChatChunk) -> None:
        if chunk.usage is not None:
            self.reported = chunk.usage
        if chunk.text:
            self.meter.first_token()
            self.text_length += len(chunk.text)
            self.deltas += 1

    def _settle(self, finished: bool) -> Usage:
        produced = self.deltas > 0
        if not produced and (self.error is not None or not finished):
            self.meter.release(self.error)
            return Usage(0, 0)
        usage = self.reported if finished and self.reported else self._estimate()
        status = UsageRecord.Status.OK
        if self.error is not None:
            status = UsageRecord.Status.UPSTREAM_ERROR
        elif not finished:
            status = UsageRecord.Status.CLIENT_CLOSED
        self.meter.settle(usage, status=status, error_code=self.error.code if self.error else "")
        return usage

    def _estimate(self) -> Usage:
        return Usage(
            prompt_tokens_estimate(self.chat.request),
            completion_tokens_estimate(self.text_length, self.deltas),
            estimated=True,
        )


def pumped(source: Iterator[ChatChunk], heartbeat: float) -> Iterator[Any]:
    """Yield the source's items, and HEARTBEAT whenever it stays silent for `heartbeat` seconds.

    A thread reads the upstream so this generator (the server's response iterator) can speak
    while the upstream is silent; that is also how a hung-up client is noticed during silence.
    """
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    end = object()

    def pump() -> None:
        try:
            for item in source:
                items.put(item)
        except BaseException as error:  # handed to the reader, raised there
            items.put(error)
        items.put(end)

    # If the reader stops early, its caller closes the upstream, which ends the pump's read.
    threading.Thread(target=pump, name="llm-stream-pump", daemon=True).start()
    while True:
        try:
            item = items.get(timeout=heartbeat)
        except queue.Empty:
            yield HEARTBEAT
            continue
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def chat_stream_open(
    *,
    caller: Caller,
    chat: ChatInput,
    route: str = "chat.completions",
    provider_name: str | None = None,
) -> MeteredStream:
    """Hold credits and open the upstream stream; errors until here are ordinary HTTP errors."""
    meter = chat_prepare(caller, chat, route, provider_name)
    with meter.released_on_error():
        upstream = meter.target.provider.chat_stream(chat.request)
    return MeteredStream(meter, chat, upstream)


# --- embeddings --------------------------------------------------------------------------------


def embeddings_create(
    *, caller: Caller, model: str | None, inputs: list[str]
) -> tuple[Target, EmbeddingResult]:
    """Embed the inputs and charge the prompt tokens."""
    target = target_for(caller, model)
    if not target.provider.capabilities.embeddings:
        raise UnsupportedParameter(f"'{target.name}' does not offer embeddings.", param="model")
    meter = Meter(caller=caller, target=target, route="embeddings")
    estimate = sum(math.ceil(len(text) / 3) for text in inputs) + len(inputs)
    meter.hold(prompt_tokens=estimate, completion_tokens=0)
    with meter.released_on_error():
        result = target.provider.embed(target.model, inputs)
    if result.usage is None:
        result.usage = Usage(sum(math.ceil(len(text) / 4) for text in inputs), 0, estimated=True)
    meter.settle(result.usage)
    return target, result
