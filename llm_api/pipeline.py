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
from typing import TYPE_CHECKING

from django.http import HttpResponseBase
from rest_framework.request import Request
from rest_framework.response import Response

from billing.authentication import api_key_of
from llm_api import limits
from llm_api.exceptions import ModelNotAllowed, UnsupportedParameter
from llm_api.metering import (
    Caller,
    Meter,
    completion_tokens_estimate,
    prompt_tokens_estimate,
    texts_tokens_estimate,
)
from llm_api.providers.base import ChatRequest, ChatResult, EmbeddingResult, ProviderError, Usage
from llm_api.schemas import ChatInput
from llm_api.selectors import Target, model_resolve
from llm_api.streaming import MeteredStream, sse_response

if TYPE_CHECKING:
    from llm_api.dialects.base import Dialect


@dataclass(slots=True)
class Call:
    """One call as a dialect sees it while writing the answer."""

    request_id: str
    chat: ChatInput
    target: Target
    created: int

    @property
    def model(self) -> str:
        """Return the model name the answer reports: provider/model."""
        return self.target.name

    def public_id(self, prefix: str, separator: str = "-") -> str:
        return f"{prefix}{separator}{self.request_id.removeprefix('req_')}"


def caller_of(request: Request) -> Caller:
    return Caller(
        user_id=request.user.pk, request_id=request.request_id, api_key=api_key_of(request)
    )


# --- resolve --------------------------------------------------------------------------------------


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
    target = target_for(caller, chat.model, provider_name)
    capabilities_check(target, chat.request, stream=chat.stream)
    chat.request.model = target.model
    call = Call(caller.request_id, chat, target, int(time.time()))
    prompt_tokens = prompt_tokens_estimate(chat.request, generous=True)
    completion_tokens = chat.request.max_tokens * chat.request.n
    with ExitStack() as admitted:
        admission = admitted.enter_context(
            limits.admitted(caller, tokens=prompt_tokens + completion_tokens)
        )
        admitted.enter_context(dialect.admit(call))
        meter = Meter(
            caller=caller, target=target, route=route, stream=chat.stream, admission=admission
        )
        meter.hold(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        if chat.stream:
            with released_on_error(meter):
                upstream = target.provider.chat_stream(chat.request)
            stream = MeteredStream(meter, chat.request, upstream, dialect.writer(call))
            # From here the response owns the admission: its close releases it.
            response = sse_response(iter(stream), [stream.close, admitted.pop_all().close])
        else:
            response = Response(dialect.answer(call, chat_run(meter, chat.request)))
    for name, value in admission.headers.items():
        response[name] = value
    return response


def chat_run(meter: Meter, request: ChatRequest) -> ChatResult:
    """Call the provider for a whole answer and charge its usage (estimated when it gave none)."""
    with released_on_error(meter):
        result = provider_chat(meter.target, request)
    meter.first_token()
    if result.usage is None:
        text = sum(len(choice.text) for choice in result.choices)
        result.usage = Usage(
            prompt_tokens_estimate(request), completion_tokens_estimate(text, 0), estimated=True
        )
    meter.settle(result.usage)
    return result


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
    tokens = texts_tokens_estimate(inputs, generous=True)
    with limits.admitted(caller, tokens=tokens) as admission:
        meter = Meter(caller=caller, target=target, route="embeddings", admission=admission)
        meter.hold(prompt_tokens=tokens, completion_tokens=0)
        with released_on_error(meter):
            result = target.provider.embed(target.model, inputs)
        if result.usage is None:
            result.usage = Usage(texts_tokens_estimate(inputs), 0, estimated=True)
        meter.settle(result.usage)
    return Response(body(target, result), headers=admission.headers)
