"""OpenAI's Responses API (the basics) on top of the chat completion service.

`input` (a string or a list of messages) and `instructions` become chat messages; the answer is
a real `response` object, so `client.responses.create(...).output_text` works, and a stream is
the Responses API's typed events (`response.output_text.delta` … `response.completed`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from llm_api import schemas
from llm_api.exceptions import InvalidParameter
from llm_api.providers.base import (
    ChatChunk,
    ChatRequest,
    ImagePart,
    Message,
    Part,
    ProviderError,
    TextPart,
    Usage,
)
from llm_api.schemas import ChatInput
from llm_api.services import MeteredStream
from llm_api.sse import chunk_events, event

FIELDS = {
    "model", "input", "instructions", "temperature", "top_p", "max_output_tokens", "stream",
    "user", "store", "metadata",
}  # fmt: skip
ROLES = {"user", "assistant", "system", "developer"}


def input_part(part: Any, param: str) -> Part:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in {"input_text", "output_text", "text"} and isinstance(part.get("text"), str):
        return TextPart(part["text"])
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidParameter(f"'{param}.image_url' must be a data: URL.", param=param)
        image: ImagePart = schemas.image_from_url(
            url, param=f"{param}.image_url", detail=part.get("detail")
        )
        return image
    raise InvalidParameter(
        f"'{param}' must be an input_text or input_image part; got {kind!r}.", param=param
    )


def input_message(item: Any, index: int) -> Message:
    param = f"input.{index}"
    if not isinstance(item, dict) or item.get("role") not in ROLES:
        raise InvalidParameter(
            f"'{param}' must be a message with a role (user, assistant, system, developer) and "
            "content.",
            param=param,
        )
    content = item.get("content")
    if isinstance(content, list):
        content = [input_part(part, f"{param}.content.{n}") for n, part in enumerate(content)]
    elif not isinstance(content, str):
        raise InvalidParameter(
            f"'{param}.content' must be a string or a list of parts.", param=param
        )
    role = "system" if item["role"] == "developer" else item["role"]
    return Message(role=role, content=content)


def responses_input(body: Any) -> ChatInput:
    """Validate a /v1/responses body into a chat call."""
    body = schemas.require_object(body)
    schemas.reject_unknown(body, FIELDS)
    raw = body.get("input")
    if isinstance(raw, str) and raw.strip():
        messages = [Message(role="user", content=raw)]
    elif isinstance(raw, list) and raw:
        messages = [input_message(item, index) for index, item in enumerate(raw)]
    else:
        raise InvalidParameter(
            "'input' must be a non-empty string or list of messages.", param="input"
        )
    instructions = schemas.string(body, "instructions")
    if instructions:
        messages.insert(0, Message(role="system", content=instructions))
    if body.get("store"):
        raise InvalidParameter("'store' is not supported: responses are not kept.", param="store")
    request = ChatRequest(
        model="",
        messages=messages,
        max_tokens=schemas.max_tokens(body, "max_output_tokens"),
        temperature=schemas.number(body, "temperature", 0, 2),
        top_p=schemas.number(body, "top_p", 0, 1),
        user=schemas.string(body, "user"),
    )
    stream = schemas.boolean(body, "stream")
    return ChatInput(model=schemas.model_name(body), request=request, stream=stream, extra=body)


class ResponseBuilder:
    """Builds the `response` object and its stream events for one call."""

    def __init__(self, *, response_id: str, model: str, chat: ChatInput) -> None:
        self.response_id = response_id
        self.message_id = f"msg_{response_id.removeprefix('resp_')}"
        self.model = model
        self.chat = chat
        self.created_at = int(time.time())
        self.sequence = 0
        self.text: list[str] = []
        self.failed = False

    def message(self, text: str, status: str) -> dict[str, Any]:
        content = (
            [{"type": "output_text", "text": text, "annotations": []}]
            if status == "completed"
            else []
        )
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def response(
        self, *, status: str, text: str = "", usage: Usage | None = None
    ) -> dict[str, Any]:
        request, extra = self.chat.request, self.chat.extra
        body: dict[str, Any] = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": extra.get("instructions"),
            "max_output_tokens": extra.get("max_output_tokens"),
            "model": self.model,
            "output": [self.message(text, "completed")] if status == "completed" else [],
            "parallel_tool_calls": False,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "tool_choice": "auto",
            "tools": [],
            "metadata": extra.get("metadata") or {},
            "usage": None,
        }
        if usage is not None:
            body["usage"] = {
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.total_tokens,
            }
            if usage.estimated:
                body["usage"]["estimated"] = True
        return body

    def event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return event(payload, kind)

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": []}

    def opening(self) -> Iterator[bytes]:
        yield self.event("response.created", response=self.response(status="in_progress"))
        yield self.event("response.in_progress", response=self.response(status="in_progress"))
        yield self.event(
            "response.output_item.added", output_index=0, item=self.message("", "in_progress")
        )
        yield self.event(
            "response.content_part.added",
            item_id=self.message_id,
            output_index=0,
            content_index=0,
            part=self.part(""),
        )

    def delta(self, chunk: ChatChunk) -> bytes | None:
        if not chunk.text:
            return None
        self.text.append(chunk.text)
        return self.event(
            "response.output_text.delta",
            item_id=self.message_id,
            output_index=0,
            content_index=0,
            delta=chunk.text,
            logprobs=[],
        )

    def closing(self, usage: Usage) -> bytes:
        text = "".join(self.text)
        if self.failed:
            failed = self.response(status="failed", usage=usage)
            return self.event("response.failed", response=failed)
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        return b"".join(
            [
                self.event("response.output_text.done", **where, text=text, logprobs=[]),
                self.event("response.content_part.done", **where, part=self.part(text)),
                self.event(
                    "response.output_item.done",
                    output_index=0,
                    item=self.message(text, "completed"),
                ),
                self.event(
                    "response.completed",
                    response=self.response(status="completed", text=text, usage=usage),
                ),
            ]
        )

    def failure(self, error: ProviderError) -> bytes:
        self.failed = True
        return self.event("error", code=error.code, message=error.message, param=None)

    def events(self, stream: MeteredStream) -> Iterator[bytes]:
        yield from self.opening()
        yield from chunk_events(stream, self.delta, self.closing, self.failure, done=None)
