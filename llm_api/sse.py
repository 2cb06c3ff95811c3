"""Server-Sent Events: how a metered stream is written for each family of routes.

Each encoder is a plain (sync) generator of bytes, matching the WSGI server, so Django streams it
chunk by chunk instead of buffering it (see "the streaming trap" in DESIGN.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.http import StreamingHttpResponse

from llm_api.providers.base import ChatChunk, ProviderError, Usage
from llm_api.services import HEARTBEAT, MeteredStream, StreamEnd, StreamFailed

KEEP_ALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


def event(data: dict[str, Any], name: str | None = None) -> bytes:
    """Return one SSE event carrying `data` as compact JSON."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    prefix = f"event: {name}\n" if name else ""
    return f"{prefix}data: {payload}\n\n".encode()


class EventStream:
    """The body of an SSE response: its events, and a `close()` that ends what they depend on.

    The server closes a response's body when it is done, also when the client hung up, even
    before the first byte was asked for, when a generator's own `finally` would never run.
    So the metered stream's close (and, say, a concurrency slot's release) hang on this.
    """

    def __init__(self, events: Iterator[bytes], closers: Sequence[Callable[[], object]]) -> None:
        self.events = events
        self.closers = closers

    def __iter__(self) -> Iterator[bytes]:
        return self.events

    def close(self) -> None:
        try:
            close = getattr(self.events, "close", None)
            if close is not None:
                close()
        finally:
            for closer in self.closers:
                closer()


def sse_response(events: Iterator[bytes], *closers: Callable[[], object]) -> StreamingHttpResponse:
    """Return a streaming `text/event-stream` response; `closers` run when it is closed."""
    body = EventStream(events, closers)
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def usage_body(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.estimated:
        body["estimated"] = True
    return body


def error_body(error: ProviderError) -> dict[str, Any]:
    return {
        "error": {"message": error.message, "type": "api_error", "param": None, "code": error.code}
    }


def chunk_events(
    stream: MeteredStream,
    on_chunk: Callable[[ChatChunk], bytes | None],
    on_end: Callable[[Usage], bytes | None],
    on_error: Callable[[ProviderError], bytes] = lambda error: event(error_body(error)),
    done: bytes | None = DONE,
) -> Iterator[bytes]:
    """Drive a metered stream: heartbeats as SSE comments, then the route's own encoding."""
    for item in stream:
        if item is HEARTBEAT:
            yield KEEP_ALIVE
        elif isinstance(item, StreamFailed):
            yield on_error(item.error)
        elif isinstance(item, StreamEnd):
            last = on_end(item.usage)
            if last:
                yield last
        else:
            data = on_chunk(item)
            if data:
                yield data
    if done:
        yield done


class ChatChunkEncoder:
    """OpenAI's `chat.completion.chunk` events for /v1/chat/completions."""

    def __init__(
        self, *, completion_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        # Everything but the choice is the same in every chunk: encode it once.
        self.head = (
            f'data: {{"id":"{completion_id}","object":"chat.completion.chunk","created":{created},'
            f'"model":{json.dumps(model)},"system_fingerprint":null,"choices":'
        )
        self.include_usage = include_usage
        self.started: set[int] = set()

    def chunk(self, chunk: ChatChunk) -> bytes:
        delta: dict[str, Any] = {}
        if chunk.index not in self.started:
            self.started.add(chunk.index)
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
        return f"{self.head}[{json.dumps(choice, ensure_ascii=False)}]}}\n\n".encode()

    def end(self, usage: Usage) -> bytes | None:
        if not self.include_usage:
            return None
        return f'{self.head}[],"usage":{json.dumps(usage_body(usage))}}}\n\n'.encode()


class TextCompletionEncoder(ChatChunkEncoder):
    """OpenAI's legacy `text_completion` events for /v1/completions."""

    def __init__(
        self, *, completion_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        super().__init__(
            completion_id=completion_id, created=created, model=model, include_usage=include_usage
        )
        self.head = (
            f'data: {{"id":"{completion_id}","object":"text_completion","created":{created},'
            f'"model":{json.dumps(model)},"choices":'
        )

    def chunk(self, chunk: ChatChunk) -> bytes:
        choice = {
            "text": chunk.text,
            "index": chunk.index,
            "logprobs": None,
            "finish_reason": chunk.finish_reason,
        }
        return f"{self.head}[{json.dumps(choice, ensure_ascii=False)}]}}\n\n".encode()
