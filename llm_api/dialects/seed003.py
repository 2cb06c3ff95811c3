"""Seed 003 ("Ollama REST API"): `/api/v1/generate`, `/api/v1/chat`, `/api/v1/completions`.

generate and chat answer `{"model", "response", "done": true}` (chat adds Ollama's `message`);
with `"stream": true` they send SSE events of that shape with `"done": false`, then one with
`"done": true`. completions is OpenAI's legacy completions shape, streamed as OpenAI's chunks.
Errors are seed 003's `{"error": short type, "message": ...}`. Images may come as Ollama's
`images` (base64 strings) beside a prompt or a message, or as OpenAI content parts.
"""

from __future__ import annotations

from typing import Any

from llm_api import schemas
from llm_api.dialects.base import Dialect, Writer, reply_text
from llm_api.dialects.openai import TextCompletion
from llm_api.exceptions import InvalidParameter
from llm_api.images import image_from_base64
from llm_api.pipeline import Call
from llm_api.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    ImagePart,
    Message,
    TextPart,
    Usage,
)
from llm_api.schemas import ChatInput
from llm_api.streaming import event

SAMPLING = {"temperature", "top_p", "max_tokens", "seed", "stop"}
GENERATE_FIELDS = {"prompt", "model", "stream", "system", "images", *SAMPLING}
CHAT_FIELDS = {"messages", "model", "stream", *SAMPLING}


# --- requests -----------------------------------------------------------------------------------


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
    request = ChatRequest(model="", messages=messages, **schemas.options(body, SAMPLING))
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
    request = ChatRequest(model="", messages=messages, **schemas.options(body, SAMPLING))
    return ChatInput(
        model=schemas.model_name(body), request=request, stream=schemas.boolean(body, "stream")
    )


# --- answers ------------------------------------------------------------------------------------


class Ollama(Dialect):
    """Seed 003's generate (`chat=False`) and chat answers and events."""

    error_format = "seed003"

    def __init__(self, *, chat: bool) -> None:
        self.chat = chat

    def body(self, call: Call, text: str, *, done: bool, usage: Usage | None = None) -> dict:
        """Return `{"model", "response", "done"}`, plus Ollama's `message` and token counts."""
        body: dict[str, Any] = {"model": call.chat.model or call.model, "response": text}
        body["done"] = done
        if self.chat:
            body["message"] = {"role": "assistant", "content": text}
        if usage is not None:
            body["prompt_eval_count"] = usage.prompt_tokens
            body["eval_count"] = usage.completion_tokens
        return body

    def answer(self, call: Call, result: ChatResult) -> dict[str, Any]:
        return self.body(call, reply_text(result), done=True, usage=result.usage)

    def chunk(self, writer: Writer, chunk: ChatChunk) -> bytes | None:
        return event(self.body(writer.call, chunk.text, done=False)) if chunk.text else None

    def end(self, writer: Writer, usage: Usage, *, failed: bool) -> bytes | None:
        return event(self.body(writer.call, "", done=True, usage=usage))


class OllamaCompletion(TextCompletion):
    """Seed 003's `/api/v1/completions`: OpenAI's legacy completions with seed 003's errors."""

    error_format = "seed003"


GENERATE = Ollama(chat=False)
CHAT = Ollama(chat=True)
COMPLETION = OllamaCompletion()
