"""The LLM routes: OpenAI-compatible (/v1/…) and the seeds' (000, 001, 002, 003).

Every view is the same three lines: its dialect parses the body into a `ChatInput`, the one
pipeline answers it, the dialect shapes the answer. Rules, limits and money live in
`llm_api.pipeline`, never here.
"""

from __future__ import annotations

import time
from typing import ClassVar

from django.http import HttpResponseBase
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.authentication import api_key_of
from llm_api import openapi, schemas
from llm_api.dialects import openai, responses, seed000, seed001, seed003
from llm_api.dialects.base import Dialect
from llm_api.exceptions import InvalidParameter
from llm_api.images import ImageUploadLimit
from llm_api.negotiation import EventStreamRenderer, GatewayContentNegotiation, answer_negotiated
from llm_api.pipeline import chat_answer, embeddings_answer
from llm_api.providers import providers
from llm_api.selectors import models_list, provider_get, provider_model_names
from project.parsers import JSONParser

IMAGE_FORM = inline_serializer(
    "Seed001ImageForm",
    {
        "image": serializers.ImageField(),
        "prompt": serializers.CharField(),
        "temperature": serializers.FloatField(required=False),
        "max_tokens": serializers.IntegerField(required=False),
        "top_p": serializers.FloatField(required=False),
        "frequency_penalty": serializers.FloatField(required=False),
        "presence_penalty": serializers.FloatField(required=False),
        "seed": serializers.IntegerField(required=False),
        "response_format": serializers.CharField(required=False, help_text="JSON"),
    },
)


class LlmApi(APIView):
    """Base of the LLM routes: JSON in, JSON or Server-Sent Events out (llm_api.negotiation);
    errors in the dialect's shape."""

    parser_classes = [JSONParser]
    # JSON first: whole answers and errors. A route that never streams lists JSON alone.
    renderer_classes = [JSONRenderer, EventStreamRenderer]
    content_negotiation_class = GatewayContentNegotiation
    dialect: ClassVar[Dialect] = openai.CHAT
    route: ClassVar[str] = ""

    @property
    def error_format(self) -> str:
        return self.dialect.error_format

    def answer(self, request: Request, chat: schemas.ChatInput, **options: str) -> HttpResponseBase:
        answer_negotiated(request, stream=chat.stream)
        return chat_answer(request, chat, self.dialect, route=self.route, **options)


# --- OpenAI ------------------------------------------------------------------------------------


class ChatCompletionsApi(LlmApi):
    """OpenAI's chat completions: `model` as provider/model, an alias, or a bare name."""

    route = "chat.completions"

    @extend_schema(
        request={"application/json": openapi.CHAT_REQUEST},
        responses=openapi.answers(openapi.CHAT_COMPLETION),
    )
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, schemas.chat_input(request.data))


class CompletionsApi(LlmApi):
    """OpenAI's legacy prompt API, answered by the model's chat endpoint."""

    dialect = openai.TEXT
    route = "completions"

    @extend_schema(
        request={"application/json": openapi.COMPLETION_REQUEST},
        responses=openapi.answers(openapi.TEXT_COMPLETION),
    )
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, openai.completion_input(request.data))


class ResponsesApi(LlmApi):
    """OpenAI's Responses API basics: input, instructions, temperature, max tokens, stream."""

    dialect = responses.RESPONSES
    route = "responses"

    @extend_schema(
        request={"application/json": openapi.RESPONSES_REQUEST},
        responses=openapi.answers(openapi.RESPONSE),
    )
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, responses.responses_input(request.data))


class EmbeddingsApi(LlmApi):
    """OpenAI's embeddings, for providers that offer them."""

    renderer_classes = [JSONRenderer]

    @extend_schema(
        request={"application/json": openapi.EMBEDDINGS_REQUEST},
        responses=openapi.answers(openapi.EMBEDDINGS, streams=False),
    )
    def post(self, request: Request) -> HttpResponseBase:
        model, inputs, encoding = openai.embeddings_input(request.data)
        return embeddings_answer(
            request,
            model=model,
            inputs=inputs,
            body=lambda target, result: openai.embeddings_body(target.name, result, encoding),
        )


class ModelsApi(LlmApi):
    """Every available model as provider/model, plus the aliases."""

    renderer_classes = [JSONRenderer]

    @extend_schema(responses=openapi.answers(openapi.MODELS, streams=False))
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

    renderer_classes = [JSONRenderer]
    content_negotiation_class = GatewayContentNegotiation

    @extend_schema(
        parameters=[PROVIDER_PARAMETER],
        responses=inline_serializer("SupportedModels", {"models": serializers.ListField()}),
    )
    def get(self, request: Request) -> Response:
        provider = provider_get(provider_param(request))
        return Response({"models": provider_model_names(provider)})


class ProviderChatApi(LlmApi):
    """Seed 002: a chat completion from the provider named by `?provider=`."""

    dialect = openai.SEED002
    route = "api.chat.completions"

    @extend_schema(
        parameters=[PROVIDER_PARAMETER],
        request={"application/json": openapi.CHAT_REQUEST},
        responses=openapi.answers(openapi.CHAT_COMPLETION),
    )
    def post(self, request: Request) -> HttpResponseBase:
        name = provider_param(request)
        chat = schemas.chat_input(request.data)
        if chat.model and chat.model.startswith(f"{name}/"):
            chat.model = chat.model.removeprefix(f"{name}/")
        return self.answer(request, chat, provider_name=name)


# --- seed 000 ----------------------------------------------------------------------------------


class GenerateApi(LlmApi):
    """Seed 000: answer the `prompt` query parameter as `{"response": text}`."""

    dialect = seed000.SEED000
    route = "seed000.generate"
    renderer_classes = [JSONRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("prompt", str, required=True)],
        request=None,
        responses=openapi.answers(openapi.SEED_REPLY, streams=False),
    )
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, seed000.generate_input(request.query_params.get("prompt")))


# --- seed 001 ----------------------------------------------------------------------------------


class TextModelCompletionApi(LlmApi):
    """Seed 001: a reply from TEXT_MODEL to JSON `messages`, as `{"response": text}`."""

    dialect = seed001.TEXT_MODEL
    route = "seed001.text_model.completion"
    missing_credentials_message = seed001.MISSING_KEY
    renderer_classes = [JSONRenderer]
    stream = False

    @extend_schema(
        request={"application/json": openapi.SEED001_TEXT_REQUEST},
        responses=openapi.answers(openapi.SEED_REPLY, streams=False),
    )
    def post(self, request: Request) -> HttpResponseBase:
        chat = seed001.text_input(request.data)
        chat.stream = self.stream
        return self.answer(request, chat)


@extend_schema_view(post=extend_schema(responses=openapi.answers(None)))
class TextModelStreamApi(TextModelCompletionApi):
    """Seed 001: the reply from TEXT_MODEL as SSE `{"response": piece}` events."""

    route = "seed001.text_model.stream"
    renderer_classes = LlmApi.renderer_classes
    stream = True


class ImageModelCompletionApi(LlmApi):
    """Seed 001: a reply from IMAGE_MODEL to an uploaded `image` and a `prompt`."""

    dialect = seed001.IMAGE_MODEL
    route = "seed001.image_model.completion"
    missing_credentials_message = seed001.MISSING_KEY
    parser_classes = [MultiPartParser]
    renderer_classes = [JSONRenderer]
    stream = False

    @extend_schema(
        request={"multipart/form-data": IMAGE_FORM},
        responses=openapi.answers(openapi.SEED_REPLY, streams=False),
    )
    def post(self, request: Request) -> HttpResponseBase:
        seed001.image_model_check()
        # Before the body is read: an oversized image stops as it streams in.
        django_request = request._request
        django_request.upload_handlers = [
            ImageUploadLimit(django_request),
            *django_request.upload_handlers,
        ]
        chat = seed001.image_input(request)
        chat.stream = self.stream
        return self.answer(request, chat)


@extend_schema_view(post=extend_schema(responses=openapi.answers(None)))
class ImageModelStreamApi(ImageModelCompletionApi):
    """Seed 001: the reply from IMAGE_MODEL as SSE `{"response": piece}` events."""

    route = "seed001.image_model.stream"
    renderer_classes = LlmApi.renderer_classes
    stream = True


# --- seed 003 ----------------------------------------------------------------------------------


class OllamaGenerateApi(LlmApi):
    """Seed 003: a completion of `prompt` as `{"model", "response", "done"}`."""

    dialect = seed003.GENERATE
    route = "seed003.generate"

    @extend_schema(
        request={"application/json": openapi.SEED003_GENERATE_REQUEST},
        responses=openapi.answers(openapi.SEED003_REPLY),
    )
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, seed003.generate_input(request.data))


class OllamaChatApi(LlmApi):
    """Seed 003: a reply to `messages` as `{"model", "response", "message", "done"}`."""

    dialect = seed003.CHAT
    route = "seed003.chat"

    @extend_schema(
        request={"application/json": openapi.SEED003_CHAT_REQUEST},
        responses=openapi.answers(openapi.SEED003_REPLY),
    )
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, seed003.chat_input(request.data))


class OllamaCompletionsApi(LlmApi):
    """Seed 003: OpenAI's legacy completions, with seed 003's error shape."""

    dialect = seed003.COMPLETION
    route = "seed003.completions"

    @extend_schema(
        request={"application/json": openapi.COMPLETION_REQUEST},
        responses=openapi.answers(openapi.TEXT_COMPLETION),
    )
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, openai.completion_input(request.data))
