"""OpenAI's Responses API (the basics): `input` and `instructions` in, a `response` object out.

`input` (a string or a list of messages) and `instructions` become chat messages; the answer is
a real `response` object, so `client.responses.create(...).output_text` works, and a stream is
the Responses API's typed events (`response.output_text.delta` … `response.completed`).
"""

from __future__ import annotations

from typing import Any

from llm_api import schemas
from llm_api.dialects.base import Dialect, Writer, reply_text
from llm_api.exceptions import InvalidParameter
from llm_api.pipeline import Call
from llm_api.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    ImagePart,
    Message,
    Part,
    ProviderError,
    TextPart,
    Usage,
)
from llm_api.schemas import ChatInput
from llm_api.streaming import event

FIELDS = {
    "model", "input", "instructions", "temperature", "top_p", "max_output_tokens", "stream",
    "user", "store", "metadata",
}  # fmt: skip
ROLES = {"user", "assistant", "system", "developer"}


# --- requests -----------------------------------------------------------------------------------


def input_part(part: Any, param: str) -> Part:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):  # any JSON value may come; a set lookup needs a hashable one
        kind = None
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
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("role"), str)
        or item["role"] not in ROLES
    ):
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
        **schemas.options(body, FIELDS, names={"max_output_tokens": "max_tokens"}),
    )
    stream = schemas.boolean(body, "stream")
    return ChatInput(model=schemas.model_name(body), request=request, stream=stream, extra=body)


# --- answers ------------------------------------------------------------------------------------


def message_item(call: Call, text: str, status: str) -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    )
    return {
        "id": call.public_id("msg", "_"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def response_object(
    call: Call, *, status: str, text: str = "", usage: Usage | None = None
) -> dict[str, Any]:
    request, extra = call.chat.request, call.chat.extra
    body: dict[str, Any] = {
        "id": call.public_id("resp", "_"),
        "object": "response",
        "created_at": call.created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": extra.get("instructions"),
        "max_output_tokens": extra.get("max_output_tokens"),
        "model": call.model,
        "output": [message_item(call, text, "completed")] if status == "completed" else [],
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


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


class Responses(Dialect):
    """The `response` object, and its typed stream events."""

    def answer(self, call: Call, result: ChatResult) -> dict[str, Any]:
        return response_object(
            call, status="completed", text=reply_text(result), usage=result.usage
        )

    def event(self, writer: Writer, kind: str, **data: Any) -> bytes:
        sequence = writer.state.get("sequence", 0)
        writer.state["sequence"] = sequence + 1
        return event({"type": kind, "sequence_number": sequence, **data}, kind)

    def start(self, writer: Writer) -> bytes | None:
        call = writer.call
        opening = response_object(call, status="in_progress")
        return b"".join(
            [
                self.event(writer, "response.created", response=opening),
                self.event(writer, "response.in_progress", response=opening),
                self.event(
                    writer,
                    "response.output_item.added",
                    output_index=0,
                    item=message_item(call, "", "in_progress"),
                ),
                self.event(
                    writer,
                    "response.content_part.added",
                    item_id=call.public_id("msg", "_"),
                    output_index=0,
                    content_index=0,
                    part=text_part(""),
                ),
            ]
        )

    def chunk(self, writer: Writer, chunk: ChatChunk) -> bytes | None:
        if not chunk.text:
            return None
        writer.state.setdefault("text", []).append(chunk.text)
        return self.event(
            writer,
            "response.output_text.delta",
            item_id=writer.call.public_id("msg", "_"),
            output_index=0,
            content_index=0,
            delta=chunk.text,
            logprobs=[],
        )

    def error(self, writer: Writer, error: ProviderError) -> bytes:
        return self.event(writer, "error", code=error.code, message=error.message, param=None)

    def end(self, writer: Writer, usage: Usage, *, failed: bool) -> bytes | None:
        call = writer.call
        if failed:
            failure = response_object(call, status="failed", usage=usage)
            return self.event(writer, "response.failed", response=failure)
        text = "".join(writer.state.get("text", []))
        where = {"item_id": call.public_id("msg", "_"), "output_index": 0, "content_index": 0}
        done = response_object(call, status="completed", text=text, usage=usage)
        return b"".join(
            [
                self.event(writer, "response.output_text.done", **where, text=text, logprobs=[]),
                self.event(writer, "response.content_part.done", **where, part=text_part(text)),
                self.event(
                    writer,
                    "response.output_item.done",
                    output_index=0,
                    item=message_item(call, text, "completed"),
                ),
                self.event(writer, "response.completed", response=done),
            ]
        )


RESPONSES = Responses()
