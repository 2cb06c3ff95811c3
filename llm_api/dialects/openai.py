"""OpenAI's wire shapes: `chat.completion` (and its chunks), legacy `text_completion`,
embeddings. Seed 002's `/api/chat/completions/` speaks chat completions with its own errors."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from llm_api import schemas
from llm_api.dialects.base import Dialect, Writer
from llm_api.exceptions import InvalidParameter
from llm_api.pipeline import Call
from llm_api.providers.base import ChatChunk, ChatResult, EmbeddingResult, Message, Usage
from llm_api.schemas import ChatInput
from llm_api.streaming import DONE


def usage_body(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.estimated:
        body["estimated"] = True
    return body


class ChatCompletion(Dialect):
    """OpenAI's `chat.completion` object and `chat.completion.chunk` events."""

    id_prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    def answer(self, call: Call, result: ChatResult) -> dict[str, Any]:
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
            "id": call.public_id(self.id_prefix),
            "object": "chat.completion",
            "created": call.created,
            "model": call.model,
            "choices": choices,
            "usage": usage_body(result.usage) if result.usage else None,
            "system_fingerprint": None,
        }

    def head(self, writer: Writer) -> str:
        """Return what every chunk of the stream starts with, encoded once per stream."""
        head = writer.state.get("head")
        if head is None:
            call = writer.call
            head = writer.state["head"] = (
                f'data: {{"id":"{call.public_id(self.id_prefix)}","object":"{self.chunk_object}",'
                f'"created":{call.created},"model":{json.dumps(call.model)},'
                f"{self.fingerprint}"
                '"choices":'
            )
        return head

    fingerprint = '"system_fingerprint":null,'

    def chunk(self, writer: Writer, chunk: ChatChunk) -> bytes | None:
        started = writer.state.setdefault("started", set())
        delta: dict[str, Any] = {}
        if chunk.index not in started:
            started.add(chunk.index)
            delta["role"] = "assistant"
        if chunk.text:
            delta["content"] = chunk.text
        if chunk.tool_calls:
            delta["tool_calls"] = chunk.tool_calls
        choice = {
            "index": chunk.index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": chunk.finish_reason,
        }
        return f"{self.head(writer)}[{json.dumps(choice, ensure_ascii=False)}]}}\n\n".encode()

    def end(self, writer: Writer, usage: Usage, *, failed: bool) -> bytes | None:
        if not writer.call.chat.include_usage:
            return DONE
        usage_json = json.dumps(usage_body(usage))
        return f'{self.head(writer)}[],"usage":{usage_json}}}\n\n'.encode() + DONE


class TextCompletion(ChatCompletion):
    """OpenAI's legacy `text_completion` object and events, for /v1/completions."""

    id_prefix = "cmpl"
    chunk_object = "text_completion"
    fingerprint = ""

    def answer(self, call: Call, result: ChatResult) -> dict[str, Any]:
        return {
            "id": call.public_id(self.id_prefix),
            "object": "text_completion",
            "created": call.created,
            "model": call.model,
            "choices": [
                {
                    "text": c.text,
                    "index": c.index,
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for c in result.choices
            ],
            "usage": usage_body(result.usage) if result.usage else None,
        }

    def chunk(self, writer: Writer, chunk: ChatChunk) -> bytes | None:
        choice = {
            "text": chunk.text,
            "index": chunk.index,
            "logprobs": None,
            "finish_reason": chunk.finish_reason,
        }
        return f"{self.head(writer)}[{json.dumps(choice, ensure_ascii=False)}]}}\n\n".encode()


class Seed002Chat(ChatCompletion):
    """Seed 002's `/api/chat/completions/?provider=`: chat completions with its `detail` errors,
    in the answer and in the stream alike."""

    error_format = "detail"


CHAT = ChatCompletion()
TEXT = TextCompletion()
SEED002 = Seed002Chat()


# --- requests ----------------------------------------------------------------------------------

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
        **schemas.options(body, COMPLETION_FIELDS),
    )
    return ChatInput(
        model=schemas.model_name(body),
        request=request,
        stream=stream,
        include_usage=schemas.stream_options(body, stream),
    )


def embeddings_input(body: Any) -> tuple[str | None, list[str], str]:
    """Validate an embeddings body: return the model, the inputs and the encoding."""
    body = schemas.require_object(body)
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
        raise InvalidParameter("'dimensions' is not supported by this gateway.", param="dimensions")
    encoding = body.get("encoding_format") or "float"
    if not isinstance(encoding, str) or encoding not in {"float", "base64"}:
        raise InvalidParameter(
            "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    return schemas.model_name(body), inputs, encoding


def embedding_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings_body(model: str, result: EmbeddingResult, encoding: str) -> dict[str, Any]:
    """Return OpenAI's embeddings list."""
    usage = result.usage
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": n, "embedding": embedding_vector(v, encoding)}
            for n, v in enumerate(result.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}
        if usage
        else None,
    }
