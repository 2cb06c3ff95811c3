"""The OpenAI-compatible routes (/v1/…) and seed 002's provider routes (/api/…).

Views are thin: validate the body, call the completion service, shape the answer.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.authentication import api_key_of
from llm_api import schemas
from llm_api.exceptions import InvalidParameter
from llm_api.providers import providers
from llm_api.providers.base import ChatResult, Message
from llm_api.responses_api import ResponseBuilder, responses_input
from llm_api.schemas import ChatInput
from llm_api.selectors import models_list, provider_get
from llm_api.services import Caller, chat_create, chat_stream_open, embeddings_create
from llm_api.sse import (
    ChatChunkEncoder,
    TextCompletionEncoder,
    chunk_events,
    sse_response,
    usage_body,
)
from project.parsers import JSONParser

ANY_JSON = inline_serializer("AnyJson", {"any": serializers.JSONField(required=False)})


def caller_of(request: Request) -> Caller:
    return Caller(
        user_id=request.user.pk, request_id=request.request_id, api_key=api_key_of(request)
    )


def public_id(prefix: str, request: Request) -> str:
    return f"{prefix}-{request.request_id.removeprefix('req_')}"


class LlmApi(APIView):
    """Base of the LLM routes: JSON in and out, OpenAI's error shape."""

    error_format = "openai"
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]


def chat_completion_body(result: ChatResult, *, completion_id: str, model: str) -> dict[str, Any]:
    """Return OpenAI's `chat.completion` object."""
    choices = []
    for choice in result.choices:
        message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
        if choice.tool_calls:
            message["tool_calls"] = choice.tool_calls
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
        )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_body(result.usage) if result.usage else None,
        "system_fingerprint": None,
    }


def text_completion_body(result: ChatResult, *, completion_id: str, model: str) -> dict[str, Any]:
    """Return OpenAI's legacy `text_completion` object."""
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"text": c.text, "index": c.index, "logprobs": None, "finish_reason": c.finish_reason}
            for c in result.choices
        ],
        "usage": usage_body(result.usage) if result.usage else None,
    }


@dataclass(frozen=True)
class AnswerShape:
    """How a route shapes its answer: the id prefix, the stream encoder, the whole body."""

    id_prefix: str
    encoder: type[ChatChunkEncoder]
    body: Callable[..., dict[str, Any]]


CHAT_COMPLETION = AnswerShape("chatcmpl", ChatChunkEncoder, chat_completion_body)
TEXT_COMPLETION = AnswerShape("cmpl", TextCompletionEncoder, text_completion_body)


def chat_answer(
    request: Request,
    chat: ChatInput,
    *,
    route: str,
    provider_name: str | None = None,
    shape: AnswerShape = CHAT_COMPLETION,
) -> HttpResponseBase:
    """Answer a chat call as one completion object or as a stream of chunks, in `shape`."""
    caller = caller_of(request)
    completion_id = public_id(shape.id_prefix, request)
    if chat.stream:
        stream = chat_stream_open(
            caller=caller, chat=chat, route=route, provider_name=provider_name
        )
        encoder = shape.encoder(
            completion_id=completion_id,
            created=int(time.time()),
            model=stream.target.name,
            include_usage=chat.include_usage,
        )
        return sse_response(chunk_events(stream, encoder.chunk, encoder.end), stream.close)
    target, result = chat_create(caller=caller, chat=chat, route=route, provider_name=provider_name)
    return Response(shape.body(result, completion_id=completion_id, model=target.name))


class ChatCompletionsApi(LlmApi):
    """OpenAI's chat completions: `model` as provider/model, an alias, or a bare name."""

    @extend_schema(request=ANY_JSON, responses={200: ANY_JSON}, tags=["OpenAI-compatible"])
    def post(self, request: Request) -> HttpResponseBase:
        return chat_answer(request, schemas.chat_input(request.data), route="chat.completions")


COMPLETION_FIELDS = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
    "frequency_penalty", "presence_penalty", "user", "stream", "stream_options",
}  # fmt: skip


def completion_input(body: Any) -> ChatInput:
    """Validate a legacy /v1/completions body into a chat call with one user message."""
    body = schemas.require_object(body)
    schemas.reject_unknown(body, COMPLETION_FIELDS)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidParameter(
            "'prompt' must be a non-empty string (one prompt per request).", param="prompt"
        )
    stream = schemas.boolean(body, "stream")
    request = schemas.ChatRequest(
        model="",
        messages=[Message(role="user", content=prompt)],
        max_tokens=schemas.max_tokens(body),
        **schemas.sampling(body),
    )
    return ChatInput(
        model=schemas.model_name(body),
        request=request,
        stream=stream,
        include_usage=schemas.stream_options(body, stream),
    )


class CompletionsApi(LlmApi):
    """OpenAI's legacy prompt API, answered by the model's chat endpoint."""

    @extend_schema(request=ANY_JSON, responses={200: ANY_JSON}, tags=["OpenAI-compatible"])
    def post(self, request: Request) -> HttpResponseBase:
        return chat_answer(
            request, completion_input(request.data), route="completions", shape=TEXT_COMPLETION
        )


def embedding_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


class EmbeddingsApi(LlmApi):
    """OpenAI's embeddings, for providers that offer them."""

    @extend_schema(request=ANY_JSON, responses={200: ANY_JSON}, tags=["OpenAI-compatible"])
    def post(self, request: Request) -> HttpResponseBase:
        body = schemas.require_object(request.data)
        schemas.reject_unknown(body, {"model", "input", "encoding_format", "user", "dimensions"})
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) and i for i in inputs)
        ):
            raise InvalidParameter(
                "'input' must be a non-empty string or list of non-empty strings (token arrays are "
                "not supported).",
                param="input",
            )
        if body.get("dimensions") is not None:
            raise InvalidParameter(
                "'dimensions' is not supported by this gateway.", param="dimensions"
            )
        encoding = body.get("encoding_format") or "float"
        if encoding not in {"float", "base64"}:
            raise InvalidParameter(
                "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
            )
        target, result = embeddings_create(
            caller=caller_of(request), model=schemas.model_name(body), inputs=inputs
        )
        usage = result.usage
        return Response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": n, "embedding": embedding_vector(v, encoding)}
                    for n, v in enumerate(result.vectors)
                ],
                "model": target.name,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}
                if usage
                else None,
            }
        )


class ResponsesApi(LlmApi):
    """OpenAI's Responses API basics: input, instructions, temperature, max tokens, stream."""

    @extend_schema(request=ANY_JSON, responses={200: ANY_JSON}, tags=["OpenAI-compatible"])
    def post(self, request: Request) -> HttpResponseBase:
        chat = responses_input(request.data)
        caller = caller_of(request)
        response_id = f"resp_{request.request_id.removeprefix('req_')}"
        if chat.stream:
            stream = chat_stream_open(caller=caller, chat=chat, route="responses")
            builder = ResponseBuilder(response_id=response_id, model=stream.target.name, chat=chat)
            return sse_response(builder.events(stream), stream.close)
        target, result = chat_create(caller=caller, chat=chat, route="responses")
        builder = ResponseBuilder(response_id=response_id, model=target.name, chat=chat)
        text = result.choices[0].text if result.choices else ""
        return Response(builder.response(status="completed", text=text, usage=result.usage))


class ModelsApi(LlmApi):
    """Every available model as provider/model, plus the aliases."""

    @extend_schema(responses={200: ANY_JSON}, tags=["OpenAI-compatible"])
    def get(self, request: Request) -> Response:
        created = int(time.time())
        data = [{"object": "model", "created": created, **entry} for entry in models_list()]
        key = api_key_of(request)
        if key is not None:
            data = [entry for entry in data if key.allows(entry.get("alias_of", entry["id"]))]
        return Response({"object": "list", "data": data})


# --- seed 002: /api/supported-models/?provider= and /api/chat/completions/?provider= -------------

PROVIDER_PARAMETER = OpenApiParameter(
    "provider", str, required=True, description="openai, gemini, inhouse…"
)


def provider_param(request: Request) -> str:
    name = request.query_params.get("provider")
    if not name or name not in providers:
        raise InvalidParameter(
            f"Query parameter 'provider' must be one of: {', '.join(providers.names)}.",
            param="provider",
        )
    return name


class SupportedModelsApi(APIView):
    """Seed 002: the models of one provider, as `{"models": [...]}`."""

    @extend_schema(
        parameters=[PROVIDER_PARAMETER],
        responses=inline_serializer("SupportedModels", {"models": serializers.ListField()}),
    )
    def get(self, request: Request) -> Response:
        provider = provider_get(provider_param(request))
        return Response({"models": provider.list_models()})


class ProviderChatApi(APIView):
    """Seed 002: a chat completion from the provider named by `?provider=`."""

    parser_classes = [JSONParser]

    @extend_schema(parameters=[PROVIDER_PARAMETER], request=ANY_JSON, responses={200: ANY_JSON})
    def post(self, request: Request) -> HttpResponseBase:
        name = provider_param(request)
        chat = schemas.chat_input(request.data)
        if chat.model and chat.model.startswith(f"{name}/"):
            chat.model = chat.model.removeprefix(f"{name}/")
        return chat_answer(request, chat, route="api.chat.completions", provider_name=name)
