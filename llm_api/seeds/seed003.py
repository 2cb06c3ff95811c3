"""Seed 003 ("Ollama REST API"): `/api/v1/generate`, `/api/v1/chat`, `/api/v1/completions`.

generate and chat answer `{"model", "response", "done": true}` (chat adds Ollama's `message`);
with `"stream": true` they send SSE events of that shape with `"done": false`, then one with
`"done": true`. completions is OpenAI's legacy completions shape, streamed as OpenAI's chunks.
Errors are seed 003's `{"error": short type, "message": ...}`. Images may come as Ollama's
`images` (base64 strings) beside a prompt or a message, or as OpenAI content parts.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.http import HttpResponseBase
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from llm_api import apis, schemas
from llm_api.apis import ANY_JSON, caller_of
from llm_api.exceptions import InvalidParameter
from llm_api.images import image_from_base64
from llm_api.providers.base import (
    ChatChunk,
    ChatRequest,
    ImagePart,
    Message,
    ProviderError,
    TextPart,
    Usage,
)
from llm_api.schemas import ChatInput
from llm_api.seeds.common import SeedApi, reply_text
from llm_api.services import chat_create, chat_stream_open
from llm_api.sse import chunk_events, event, sse_response
from project.exception_handler import ApiError

SAMPLING = {"temperature", "top_p", "max_tokens", "seed", "stop"}
GENERATE_FIELDS = {"prompt", "model", "stream", "system", "images", *SAMPLING}
CHAT_FIELDS = {"messages", "model", "stream", *SAMPLING}


# --- requests -----------------------------------------------------------------------------------


def sampling(body: dict[str, Any]) -> dict[str, Any]:
    """Return the sampling options these routes take, checked as /v1 checks them."""
    return {
        "max_tokens": schemas.max_tokens(body),
        "temperature": schemas.number(body, "temperature", 0, 2),
        "top_p": schemas.number(body, "top_p", 0, 1),
        "seed": schemas.integer(body, "seed"),
        "stop": schemas.stop_sequences(body),
    }


def base64_images(raw: Any, param: str) -> list[ImagePart]:
    """Return Ollama's `images`: a list of base64-encoded images, each checked."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise InvalidParameter(f"'{param}' must be a list of base64 strings.", param=param)
    return [image_from_base64(item, param=f"{param}.{n}") for n, item in enumerate(raw)]


def generate_input(body: Any) -> ChatInput:
    """Validate a /api/v1/generate body: a prompt (with images), an optional system prompt."""
    body = schemas.require_object(body)
    schemas.reject_unknown(body, GENERATE_FIELDS)
    prompt = schemas.string(body, "prompt", required=True) or ""
    images = base64_images(body.get("images"), "images")
    messages = [Message(role="user", content=[TextPart(prompt), *images] if images else prompt)]
    system = schemas.string(body, "system")
    if system:
        messages.insert(0, Message(role="system", content=system))
    request = ChatRequest(model="", messages=messages, **sampling(body))
    return ChatInput(
        model=schemas.model_name(body), request=request, stream=schemas.boolean(body, "stream")
    )


def chat_message(raw: Any, index: int) -> Message:
    """Return one message in OpenAI's shape, or in Ollama's with `images` beside the text."""
    if not isinstance(raw, dict) or "images" not in raw:
        return schemas.message(raw, index)
    param = f"messages.{index}.images"
    message = schemas.message({k: v for k, v in raw.items() if k != "images"}, index)
    if message.role != "user":
        raise InvalidParameter(
            f"'{param}': images are accepted in user messages only.", param=param
        )
    parts = [TextPart(message.content)] if isinstance(message.content, str) else message.content
    message.content = [*parts, *base64_images(raw["images"], param)]
    return message


def chat_input(body: Any) -> ChatInput:
    """Validate a /api/v1/chat body."""
    body = schemas.require_object(body)
    schemas.reject_unknown(body, CHAT_FIELDS)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidParameter("'messages' must be a non-empty list of messages.", param="messages")
    messages = [chat_message(item, index) for index, item in enumerate(raw)]
    request = ChatRequest(model="", messages=messages, **sampling(body))
    return ChatInput(
        model=schemas.model_name(body), request=request, stream=schemas.boolean(body, "stream")
    )


# --- answers ------------------------------------------------------------------------------------


class OllamaShape:
    """Seed 003's answer objects and stream events for one call."""

    def __init__(self, *, model: str, chat: bool) -> None:
        self.model = model
        self.chat = chat

    def body(self, text: str, *, done: bool, usage: Usage | None = None) -> dict[str, Any]:
        """Return `{"model", "response", "done"}`, plus Ollama's `message` and token counts."""
        body: dict[str, Any] = {"model": self.model, "response": text, "done": done}
        if self.chat:
            body["message"] = {"role": "assistant", "content": text}
        if usage is not None:
            body["prompt_eval_count"] = usage.prompt_tokens
            body["eval_count"] = usage.completion_tokens
        return body

    def chunk(self, chunk: ChatChunk) -> bytes | None:
        return event(self.body(chunk.text, done=False)) if chunk.text else None

    def end(self, usage: Usage) -> bytes:
        return event(self.body("", done=True, usage=usage))

    def failure(self, error: ProviderError) -> bytes:
        return event(ApiError(error.status_code, error.message, error.code).body("seed003"))


class OllamaApi(SeedApi):
    """Base of seed 003's generate and chat: one answer object, or its SSE events."""

    error_format = "seed003"
    chat: ClassVar[bool] = False

    def answer(self, request: Request, chat: ChatInput) -> HttpResponseBase:
        caller = caller_of(request)
        route = "seed003.chat" if self.chat else "seed003.generate"
        if chat.stream:
            stream = chat_stream_open(caller=caller, chat=chat, route=route)
            shape = OllamaShape(model=chat.model or stream.target.name, chat=self.chat)
            events = chunk_events(stream, shape.chunk, shape.end, shape.failure, done=None)
            return sse_response(events, stream.close)
        target, result = chat_create(caller=caller, chat=chat, route=route)
        shape = OllamaShape(model=chat.model or target.name, chat=self.chat)
        return Response(shape.body(reply_text(result), done=True, usage=result.usage))


class OllamaGenerateApi(OllamaApi):
    """Seed 003: a completion of `prompt` as `{"model", "response", "done"}`."""

    @extend_schema(request=ANY_JSON, responses={200: ANY_JSON}, tags=["Seed 003"])
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, generate_input(request.data))


class OllamaChatApi(OllamaApi):
    """Seed 003: a reply to `messages` as `{"model", "response", "message", "done"}`."""

    chat = True

    @extend_schema(request=ANY_JSON, responses={200: ANY_JSON}, tags=["Seed 003"])
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, chat_input(request.data))


class OllamaCompletionsApi(apis.CompletionsApi):
    """Seed 003: OpenAI's legacy completions, with seed 003's error shape."""

    error_format = "seed003"

    @extend_schema(request=ANY_JSON, responses={200: ANY_JSON}, tags=["Seed 003"])
    def post(self, request: Request) -> HttpResponseBase:
        return super().post(request)
