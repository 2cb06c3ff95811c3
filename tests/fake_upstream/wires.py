"""The three wire protocols the fake upstream speaks, and the behaviour knobs they obey.

Each wire turns a `Behaviour` and a request body into a reply: one JSON answer, or a stream of
already framed events (SSE for OpenAI and Gemini, NDJSON for Ollama) that says which events
carry the pieces of text (the steps of a lock-step stream, see `tests.fake_upstream.lockstep`).
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fake_upstream.lockstep import Gate


@dataclass
class Behaviour:
    """How the fake answers the next calls (every knob of `FakeUpstream.behave`)."""

    text: str = "Hello there"
    chunks: list[str] | None = None  # stream pieces; default: `text` cut into about 10
    chunk_delay: float = 0.0  # seconds between stream events
    # Lock-step streams: piece k + 1 is sent only after `gate.release()` was called k + 1
    # times, the end of the stream after one more; a wait longer than `lockstep_timeout`
    # seconds ends the stream mid-body (see tests/fake_upstream/lockstep.py).
    lockstep: bool = False
    lockstep_timeout: float = 30.0
    delay: float = 0.0  # seconds before the status line and headers
    first_event_delay: float = 0.0  # seconds after a stream's headers before its first event
    # Send this many events of a stream, then nothing more (the connection stays open) until the
    # client hangs up, which `stream_closed_early` then says.
    stall_after: int | None = None
    status: int = 200
    error_body: Any = None  # replaces the protocol's own error body when status != 200
    retry_after: str | None = None  # Retry-After header on error answers
    usage: bool = True  # False: no token counts anywhere (streamed or not)
    prompt_tokens: int = 11
    completion_tokens: int = 7
    drop_after: int | None = None  # close the connection mid-body after this many events
    model_not_found: bool = False  # answer 404 in the protocol's own words
    finish_reason: str = "stop"  # OpenAI's words; translated for Gemini and Ollama
    tool_calls: list[dict[str, Any]] | None = None  # [{"id", "name", "arguments": json str}]
    embedding: list[float] = field(default_factory=lambda: [0.25, -0.5, 1.0])
    models: list[str] = field(default_factory=lambda: ["fake-model-a", "fake-model-b"])
    # Broken upstreams (see tests/llm_api/test_upstream_faults.py):
    reset_before_answer: bool = False  # read the request, then reset the connection (TCP RST)
    reset_after: int | None = None  # reset the connection (TCP RST) after this many events
    # End a stream's body cleanly after this many events: no finish, no usage, no [DONE].
    end_after: int | None = None
    garbage: bytes | None = None  # sent as it is, as one more event, before event `garbage_at`
    garbage_at: int = 1
    raw_body: bytes | None = None  # the whole answer (with `status`) instead of the wire's own
    raw_content_type: str = "text/html; charset=utf-8"
    # Sent as the token counts verbatim: OpenAI's `usage`, Gemini's `usageMetadata`, merged
    # into Ollama's final message (`{"prompt_eval_count": -3}`); needs `usage`.
    raw_usage: Any = None
    gate: Gate = field(init=False, repr=False)  # the test's side of a lock-step stream

    def __post_init__(self) -> None:
        self.gate = Gate(self.lockstep_timeout)

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        size = max(1, math.ceil(len(self.text) / 10))
        return [self.text[i : i + size] for i in range(0, len(self.text), size)] or [""]

    def vector(self, index: int) -> list[float]:
        """Return the embedding of input `index`: the base vector shifted by its index."""
        return [value + index for value in self.embedding]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # when the answer was sent (or failed)


@dataclass
class JsonReply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamReply:
    events: list[bytes]
    content_type: str = "text/event-stream"
    # The index in `events` of the event carrying each piece of text, in order; default: one
    # piece per event.
    pieces_at: list[int] | None = None

    def steps(self) -> dict[int, int]:
        """Return the lock-step steps as {index of the event that starts it: step}: step k < n
        is piece k, step n what follows the last piece (at `len(events)`: the end of the body).
        """
        points = list(self.pieces_at if self.pieces_at is not None else range(len(self.events)))
        points.append(points[-1] + 1 if points else 0)
        return {point: step for step, point in enumerate(points)}


@dataclass
class RawReply:
    """A whole answer sent as it is (not JSON, or not the wire's shape)."""

    body: bytes
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Reply = JsonReply | StreamReply | RawReply


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class OpenAIWire:
    """POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models."""

    def chat(self, b: Behaviour, body: dict[str, Any]) -> Reply:
        n = body.get("n") or 1
        if body.get("stream"):
            events, pieces_at = self._chat_events(b, body, n)
            return StreamReply(events, pieces_at=pieces_at)
        message: dict[str, Any] = {"role": "assistant", "content": b.text}
        if b.tool_calls:
            message = {"role": "assistant", "content": None, "tool_calls": self._tools(b)}
        choices = [
            {"index": i, "message": message, "finish_reason": self._finish(b)} for i in range(n)
        ]
        return JsonReply(self._envelope(b, body, "chat.completion", choices, n))

    def completions(self, b: Behaviour, body: dict[str, Any]) -> Reply:
        if body.get("stream"):
            events = [
                _sse(self._envelope(b, body, "text_completion", [self._text(p, None)], None))
                for p in b.pieces()
            ]
            pieces_at = list(range(len(events)))
            last = self._text("", b.finish_reason)
            events.append(_sse(self._envelope(b, body, "text_completion", [last], None)))
            events = self._with_usage(b, body, events, "text_completion")
            return StreamReply(events, pieces_at=pieces_at)
        choices = [self._text(b.text, b.finish_reason)]
        return JsonReply(self._envelope(b, body, "text_completion", choices, 1))

    def embeddings(self, b: Behaviour, body: dict[str, Any]) -> Reply:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": self._vector(b, i, body)}
            for i in range(len(inputs))
        ]
        usage = {"prompt_tokens": b.prompt_tokens, "total_tokens": b.prompt_tokens}
        reply = {"object": "list", "data": data, "model": body["model"]}
        return JsonReply({**reply, "usage": usage} if b.usage else reply)

    def models(self, b: Behaviour, body: Any) -> Reply:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in b.models]
        return JsonReply({"object": "list", "data": data})

    def error(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def not_found(self, model: str) -> dict[str, Any]:
        return self.error(404, f"The model `{model}` does not exist.", "model_not_found")

    def _chat_events(
        self, b: Behaviour, body: dict[str, Any], n: int
    ) -> tuple[list[bytes], list[int]]:
        """Return the events and the indexes of those carrying the pieces of text."""

        def chunk(delta: dict[str, Any], index: int, finish: str | None) -> bytes:
            choice = {"index": index, "delta": delta, "finish_reason": finish}
            return _sse(self._envelope(b, body, "chat.completion.chunk", [choice], None))

        events, pieces_at = [], []
        for i in range(n):
            if b.tool_calls:
                tools = [{"index": k, **t} for k, t in enumerate(self._tools(b))]
                events.append(chunk({"role": "assistant", "tool_calls": tools}, i, None))
            for k, piece in enumerate(b.pieces()):
                pieces_at.append(len(events))
                events.append(
                    chunk(
                        {"role": "assistant", "content": piece} if k == 0 else {"content": piece},
                        i,
                        None,
                    )
                )
            events.append(chunk({}, i, self._finish(b)))
        events = self._with_usage(b, body, events, "chat.completion.chunk")
        return events, pieces_at

    def _with_usage(self, b: Behaviour, body: dict, events: list[bytes], obj: str) -> list[bytes]:
        if b.usage and (body.get("stream_options") or {}).get("include_usage"):
            events.append(_sse(self._envelope(b, body, obj, [], 1)))
        return [*events, b"data: [DONE]\n\n"]

    def _envelope(self, b: Behaviour, body: dict, obj: str, choices: list, n: int | None) -> dict:
        reply = {"id": "fake-1", "object": obj, "created": 0, "model": body.get("model")}
        reply["choices"] = choices
        if n is not None and b.usage:
            completion = b.completion_tokens * n
            reply["usage"] = {
                "prompt_tokens": b.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": b.prompt_tokens + completion,
            }
            if b.raw_usage is not None:
                reply["usage"] = b.raw_usage
        return reply

    def _finish(self, b: Behaviour) -> str:
        return "tool_calls" if b.tool_calls else b.finish_reason

    def _tools(self, b: Behaviour) -> list[dict[str, Any]]:
        return [
            {"id": t.get("id", f"call_{k}"), "type": "function",
             "function": {"name": t["name"], "arguments": t.get("arguments", "{}")}}
            for k, t in enumerate(b.tool_calls or [])
        ]  # fmt: skip

    def _text(self, text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

    def _vector(self, b: Behaviour, index: int, body: dict[str, Any]) -> Any:
        vector = b.vector(index)
        if body.get("encoding_format") == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector


GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}


class GeminiWire:
    """POST /{version}/models/{model}:generateContent, :streamGenerateContent, :embedContent,
    :batchEmbedContents; GET /{version}/models."""

    def generateContent(self, b: Behaviour, body: dict, model: str) -> Reply:
        return JsonReply(self._response(b, body, model, b.text, b.finish_reason, b.usage))

    def streamGenerateContent(self, b: Behaviour, body: dict, model: str) -> Reply:
        pieces = b.pieces()
        events = [_sse(self._response(b, body, model, piece, None, False)) for piece in pieces[:-1]]
        events.append(_sse(self._response(b, body, model, pieces[-1], b.finish_reason, b.usage)))
        return StreamReply(events)

    def embedContent(self, b: Behaviour, body: dict, model: str) -> Reply:
        return JsonReply({"embedding": {"values": b.vector(0)}})

    def batchEmbedContents(self, b: Behaviour, body: dict, model: str) -> Reply:
        count = len(body.get("requests", []))
        return JsonReply({"embeddings": [{"values": b.vector(i)} for i in range(count)]})

    def models(self, b: Behaviour, body: Any) -> Reply:
        models = [
            {
                "name": f"models/{m}",
                "displayName": m,
                "supportedGenerationMethods": ["generateContent"],
            }
            for m in b.models
        ]
        return JsonReply({"models": models})

    def error(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": GEMINI_STATUS.get(status)}}

    def not_found(self, model: str) -> dict[str, Any]:
        return self.error(404, f"models/{model} is not found.", None)

    def _response(self, b: Behaviour, body: dict, model: str, text: str, finish, usage) -> dict:
        count = (body.get("generationConfig") or {}).get("candidateCount") or 1
        candidate = {"content": {"parts": [{"text": text}], "role": "model"}}
        if finish:
            candidate["finishReason"] = GEMINI_FINISH.get(finish, "OTHER")
        reply: dict[str, Any] = {
            "candidates": [{**candidate, "index": i} for i in range(count)],
            "modelVersion": model,
        }
        if usage:
            completion = b.completion_tokens * count
            reply["usageMetadata"] = {
                "promptTokenCount": b.prompt_tokens,
                "candidatesTokenCount": completion,
                "totalTokenCount": b.prompt_tokens + completion,
            }
            if b.raw_usage is not None:
                reply["usageMetadata"] = b.raw_usage
        return reply


class OllamaWire:
    """POST /api/chat (NDJSON stream or one JSON), /api/embed; GET /api/tags."""

    def chat(self, b: Behaviour, body: dict[str, Any]) -> Reply:
        if body.get("stream", True):
            events = [self._line(self._message(b, body, p, done=False)) for p in b.pieces()]
            pieces_at = list(range(len(events)))
            events.append(self._line(self._message(b, body, "", done=True)))
            return StreamReply(events, "application/x-ndjson", pieces_at)
        return JsonReply(self._message(b, body, b.text, done=True))

    def embed(self, b: Behaviour, body: dict[str, Any]) -> Reply:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        reply = {"model": body["model"], "embeddings": [b.vector(i) for i in range(len(inputs))]}
        return JsonReply({**reply, "prompt_eval_count": b.prompt_tokens} if b.usage else reply)

    def tags(self, b: Behaviour, body: Any) -> Reply:
        models = [
            {"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 1, "digest": "0"}
            for m in b.models
        ]
        return JsonReply({"models": models})

    def error(self, status: int, message: str, code: str | None) -> dict[str, Any]:
        return {"error": message}

    def not_found(self, model: str) -> dict[str, Any]:
        return {"error": f"model '{model}' not found"}

    def _message(self, b: Behaviour, body: dict, text: str, *, done: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if done and b.tool_calls:
            message["tool_calls"] = [
                {"function": {"name": t["name"], "arguments": json.loads(t.get("arguments", "{}"))}}
                for t in b.tool_calls
            ]
        reply = {"model": body["model"], "created_at": "2025-01-01T00:00:00Z", "message": message}
        reply["done"] = done
        if done:
            reply["done_reason"] = b.finish_reason
            if b.usage:
                reply.update(prompt_eval_count=b.prompt_tokens, eval_count=b.completion_tokens)
                reply.update(b.raw_usage or {})
        return reply

    def _line(self, payload: dict[str, Any]) -> bytes:
        return json.dumps(payload).encode() + b"\n"
