"""The one pipeline every LLM route goes through.

authenticate (DRF, before the view) → validate (the dialect parses its wire shape into a
`ChatInput`) → resolve the model and its allowlist → limit (the dialect's admission, such as
seed 001's model slots) → hold credits → call the provider → settle → respond (the dialect
writes the answer, the stream and its errors in its own shape).

The stream/non-stream fork, the closers and the metering exist here once; a dialect maps names
and shapes, never rules or money. No database transaction is open while a provider works.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from django.http import HttpResponseBase
from rest_framework.request import Request
from rest_framework.response import Response

from billing.authentication import api_key_of
from billing.selectors import price_for
from llm_api import fallbacks, limits
from llm_api.exceptions import ModelNotAllowed, UnsupportedParameter
from llm_api.images import images_fetch
from llm_api.metering import (
    Caller,
    Meter,
    completion_tokens_estimate,
    prompt_tokens_bound,
    prompt_tokens_estimate,
    texts_tokens_bound,
    texts_tokens_estimate,
    usage_checked,
)
from llm_api.providers.base import ChatRequest, ChatResult, EmbeddingResult, ProviderError, Usage
from llm_api.schemas import ChatInput
from llm_api.selectors import Target, model_targets
from llm_api.streaming import MeteredStream, sse_response
from project.exceptions import ServiceError

if TYPE_CHECKING:
    from llm_api.dialects.base import Dialect

T = TypeVar("T")


@dataclass(slots=True)
class Call:
    """One call as a dialect sees it while writing the answer."""

    request_id: str
    chat: ChatInput
    target: Target
    created: int
    caller: Caller | None = None  # who calls: seed 001's slots are shared fairly between keys

    @property
    def model(self) -> str:
        """Return the model name the answer reports: provider/model."""
        return self.target.name

    def public_id(self, prefix: str, separator: str = "-") -> str:
        return f"{prefix}{separator}{self.request_id.removeprefix('req_')}"


def caller_of(request: Request) -> Caller:
    return Caller(
        user_id=request.user.pk,
        request_id=request.request_id,
        api_key=api_key_of(request),
        batch=getattr(request, "batch_line", False),  # set by batches.services for a batch line
    )


# --- resolve --------------------------------------------------------------------------------------


def target_for(caller: Caller, model: str | None, provider_name: str | None = None) -> Target:
    """Resolve the model and apply the key's allowlist."""
    return targets_for(caller, model, provider_name)[0]


def targets_for(
    caller: Caller, model: str | None, provider_name: str | None = None
) -> list[Target]:
    """Resolve the model into its targets (an alias's fallbacks after the first), keeping
    those the key's allowlist allows; raise ModelNotAllowed when it allows none."""
    targets = model_targets(model, provider_name=provider_name)
    allowed = [t for t in targets if not caller.api_key or caller.api_key.allows(t.name)]
    if not allowed:
        raise ModelNotAllowed(
            f"This API key may not use '{targets[0].name}'. Allowed: "
            f"{', '.join(caller.api_key.allowed_models)}.",  # type: ignore[union-attr]
            param="model",
        )
    return allowed


def usable(targets: list[Target], request: ChatRequest, *, stream: bool) -> list[Target]:
    """Return the targets that can honour the request and have a price; when none can, raise
    the first target's refusal (UnsupportedParameter, PriceMissing)."""
    kept: list[Target] = []
    refusal: ServiceError | None = None
    for target in targets:
        try:
            capabilities_check(target, request, stream=stream)
            price_for(provider=target.provider.name, model=target.model)
        except ServiceError as problem:
            refusal = refusal or problem
            continue
        kept.append(target)
    if not kept and refusal is not None:
        raise refusal
    return kept


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


# --- the chat pipeline ------------------------------------------------------------------------


def chat_answer(
    request: Request,
    chat: ChatInput,
    dialect: Dialect,
    *,
    route: str,
    provider_name: str | None = None,
) -> HttpResponseBase:
    """Answer a chat call in `dialect`: one answer object, or a stream of its events."""
    caller = caller_of(request)
    targets = targets_for(caller, chat.model, provider_name)
    targets = usable(targets, chat.request, stream=chat.stream)
    chat.request.model = targets[0].model
    call = Call(caller.request_id, chat, targets[0], int(time.time()), caller)
    with ExitStack() as admitted:
        tokens = max(tokens_bound(target, chat.request) for target in targets)
        admission = admitted.enter_context(limits.admitted(caller, tokens=tokens))
        admitted.enter_context(dialect.admit(call))
        meter = Meter(
            caller=caller, target=targets[0], route=route, stream=chat.stream, admission=admission
        )
        meter.hold(max(cost_bound(target, chat.request) for target in targets))
        with released_on_error(meter):
            images_fetch(chat.request)  # image URLs: fetched only once credits are held
        if chat.stream:
            upstream = first_answer(
                meter, targets, lambda target: target.provider.chat_stream(on(target, chat.request))
            )
            call.target = meter.target
            stream = MeteredStream(meter, chat.request, upstream, dialect.writer(call))
            # From here the response owns the admission: its close releases it.
            response = sse_response(iter(stream), [stream.close, admitted.pop_all().close])
        else:
            result = first_answer(
                meter, targets, lambda target: provider_chat(target, on(target, chat.request))
            )
            call.target = meter.target
            response = Response(dialect.answer(call, chat_settle(meter, chat.request, result)))
    for name, value in admission.headers.items():
        response[name] = value
    return response


def first_answer(meter: Meter, targets: list[Target], attempt: Callable[[Target], T]) -> T:
    """Return the first answer of the targets, in order: one that fails before its first byte
    in a way worth retrying (no connection, timeout, 429, 5xx) hands over to the next, after a
    jittered pause. Nothing has reached the client yet, so a fallback is invisible to it; the
    meter ends on the target that answered (its name and price). Release the hold if all fail.
    """
    candidates = fallbacks.ordered(targets)
    with released_on_error(meter):
        for number, target in enumerate(candidates):
            meter.answered_by(target)
            try:
                answer = attempt(target)
            except ProviderError as error:
                if not error.retryable or number == len(candidates) - 1:
                    raise
                fallbacks.failed(target, error)
                fallbacks.pause(number + 1)
                continue
            fallbacks.answered(target)
            return answer
    raise AssertionError("unreachable: the last target's failure is raised")


def on(target: Target, request: ChatRequest) -> ChatRequest:
    """Return the request as `target` receives it: its own model name."""
    return dataclasses.replace(request, model=target.model)


def chat_settle(meter: Meter, request: ChatRequest, result: ChatResult) -> ChatResult:
    """Charge a whole answer's usage (estimated when the provider gave none)."""
    meter.first_token()
    result.usage = usage_checked(result.usage, meter.target.provider.name)
    if result.usage is None:
        text = sum(len(choice.text) for choice in result.choices)
        result.usage = Usage(
            prompt_tokens_estimate(request), completion_tokens_estimate(text, 0), estimated=True
        )
    meter.settle(result.usage)
    return result


def tokens_bound(target: Target, request: ChatRequest) -> int:
    """Return the most tokens the request can use on `target` (prompt and completion)."""
    prompt = prompt_tokens_bound(request) * upstream_calls(target, request)
    return prompt + request.max_tokens * request.n


def cost_bound(target: Target, request: ChatRequest) -> int:
    """Return the most the request can cost on `target`: its hold."""
    price = price_for(provider=target.provider.name, model=target.model)
    prompt = prompt_tokens_bound(request) * upstream_calls(target, request)
    return price.cost(prompt, request.max_tokens * request.n)


def upstream_calls(target: Target, request: ChatRequest) -> int:
    """Return how many upstream calls the request takes: n without native `n`, else one."""
    return request.n if request.n > 1 and not target.provider.capabilities.n else 1


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


@contextmanager
def released_on_error(meter: Meter) -> Iterator[None]:
    """Release the hold if the provider call raises: nothing is charged for a failure."""
    try:
        yield
    except ProviderError as error:
        meter.release(error)
        raise
    except BaseException:
        meter.release(ProviderError("The provider call failed.", code="gateway_error"))
        raise


# --- embeddings -------------------------------------------------------------------------------


def embeddings_answer(
    request: Request,
    *,
    model: str | None,
    inputs: list[str],
    body: Callable[[Target, EmbeddingResult], dict],
) -> Response:
    """Embed the inputs through the same resolve → limit → hold → call → settle steps, and
    answer `body(target, result)`; charge tokens."""
    caller = caller_of(request)
    target = target_for(caller, model)
    if not target.provider.capabilities.embeddings:
        raise UnsupportedParameter(f"'{target.name}' does not offer embeddings.", param="model")
    tokens = texts_tokens_bound(inputs)
    with limits.admitted(caller, tokens=tokens) as admission:
        meter = Meter(caller=caller, target=target, route="embeddings", admission=admission)
        meter.hold(meter.price.cost(tokens, 0))
        with released_on_error(meter):
            result = target.provider.embed(target.model, inputs)
        result.usage = usage_checked(result.usage, target.provider.name)
        if result.usage is None:
            result.usage = Usage(texts_tokens_estimate(inputs), 0, estimated=True)
        meter.settle(result.usage)
    return Response(body(target, result), headers=admission.headers)
