"""Streams: an upstream stream metered as it is delivered, and its Server-Sent Events response.

Everything here is a plain (sync) iterator, matching the WSGI server, so Django streams it chunk
by chunk instead of buffering it (see "the streaming trap" in DESIGN.md).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from django.conf import settings
from django.http import StreamingHttpResponse

from llm_api.metering import (
    Meter,
    completion_tokens_estimate,
    prompt_tokens_estimate,
    usage_checked,
)
from llm_api.models import UsageRecord
from llm_api.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatStream,
    ProviderError,
    Usage,
    upstream_dropped,
)

KEEP_ALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
HEARTBEAT = object()


def event(data: dict[str, Any], name: str | None = None) -> bytes:
    """Return one SSE event carrying `data` as compact JSON."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    prefix = f"event: {name}\n" if name else ""
    return f"{prefix}data: {payload}\n\n".encode()


class StreamWriter(Protocol):
    """How a dialect writes one stream: the hooks return the bytes to send (or nothing)."""

    def start(self) -> bytes | None:
        """Return what goes before the first chunk."""

    def chunk(self, chunk: ChatChunk) -> bytes | None:
        """Return one chunk of text, tool calls or a finish reason."""

    def error(self, error: ProviderError) -> bytes:
        """Return an upstream failure after the first byte, as an event."""

    def end(self, usage: Usage, *, failed: bool) -> bytes | None:
        """Return what ends the stream, given the usage that was charged."""


class MeteredStream:
    """An open upstream stream written by a dialect, charging exactly what it delivered.

    Iterating it yields the response's bytes (plus keep-alive comments while the upstream is
    silent). However it ends, `close()` runs once: the upstream is closed and what was produced
    is charged; a client that hangs up, even before the first byte, is charged what it got.
    """

    def __init__(
        self, meter: Meter, request: ChatRequest, upstream: ChatStream, writer: StreamWriter
    ) -> None:
        self.meter = meter
        self.request = request
        self.upstream = upstream
        self.writer = writer
        self.reported: Usage | None = None
        self.text_length = 0
        self.deltas = 0
        self.error: ProviderError | None = None
        self.finish_seen = False  # every provider ends a whole answer with a finish reason

    def __iter__(self) -> Iterator[bytes]:
        try:
            opening = self.writer.start()
            if opening:
                yield opening
            for item in self._items():
                data = KEEP_ALIVE if item is HEARTBEAT else self._chunk(item)
                if data:
                    yield data
            usage = self._end(finished=True)
        finally:
            self.close()
        if self.error is not None:
            yield self.writer.error(self.error)
        closing = self.writer.end(usage, failed=self.error is not None)
        if closing:
            yield closing

    def close(self) -> None:
        """End the stream now: close the upstream and charge what was delivered, once."""
        if not self.meter.done:
            self._end(finished=False)

    def _chunk(self, chunk: ChatChunk) -> bytes | None:
        if chunk.usage is not None:
            self.reported = usage_checked(chunk.usage, self.meter.target.provider.name)
        if chunk.text:
            self.meter.first_token()
            self.text_length += len(chunk.text)
            self.deltas += 1
        if chunk.finish_reason:
            self.finish_seen = True
        if chunk.text or chunk.finish_reason or chunk.tool_calls:
            return self.writer.chunk(chunk)
        return None

    def _items(self) -> Iterator[Any]:
        heartbeat = settings.STREAM_HEARTBEAT_SECONDS
        source = iter(self.upstream)
        if heartbeat <= 0:
            items: Iterator[Any] = source
        elif self.upstream.ready(0) is None:
            items = pumped(source, heartbeat)
        else:
            items = waited(source, self.upstream, heartbeat)
        try:
            yield from items
        except ProviderError as error:
            self.error = error
            return
        if not self.finish_seen:
            # The body ended cleanly but before the answer did (no [DONE], no done: true):
            # a cut answer, not a complete one.
            self.error = upstream_dropped(self.meter.target.provider.name)

    def _end(self, *, finished: bool) -> Usage:
        self.upstream.close()
        if self.deltas == 0 and self.error is not None:
            self.meter.release(self.error)
            return Usage(0, 0)
        # A client that leaves before the first token still pays the prompt (estimated): the
        # upstream accepted the call and has read it.
        usage = self.reported if finished and self.reported else self._estimate()
        status = UsageRecord.Status.OK
        if self.error is not None:
            status = UsageRecord.Status.UPSTREAM_ERROR
        elif not finished:
            status = UsageRecord.Status.CLIENT_CLOSED
        self.meter.settle(usage, status=status, error=self.error.code if self.error else "")
        return usage

    def _estimate(self) -> Usage:
        return Usage(
            prompt_tokens_estimate(self.request),
            completion_tokens_estimate(self.text_length, self.deltas),
            estimated=True,
        )


def waited(source: Iterator[ChatChunk], upstream: ChatStream, heartbeat: float) -> Iterator[Any]:
    """Yield the source's items, and HEARTBEAT whenever it stays silent for `heartbeat` seconds,
    in this thread: the upstream says when its next chunk is ready (`ChatStream.ready`)."""
    while True:
        if not upstream.ready(heartbeat):
            yield HEARTBEAT
            continue
        try:
            item = next(source)
        except StopIteration:
            return
        yield item


def pumped(source: Iterator[ChatChunk], heartbeat: float) -> Iterator[Any]:
    """Yield the source's items, and HEARTBEAT whenever it stays silent for `heartbeat` seconds.

    A thread reads the upstream so this generator (the server's response iterator) can speak
    while the upstream is silent; that is also how a hung-up client is noticed during silence.
    """
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    end = object()

    def pump() -> None:
        try:
            for item in source:
                items.put(item)
        except BaseException as error:  # handed to the reader, raised there
            items.put(error)
        items.put(end)

    # If the reader stops early, its caller closes the upstream, which ends the pump's read.
    threading.Thread(target=pump, name="llm-stream-pump", daemon=True).start()
    while True:
        try:
            item = items.get(timeout=heartbeat)
        except queue.Empty:
            yield HEARTBEAT
            continue
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


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


def sse_response(
    events: Iterator[bytes], closers: Sequence[Callable[[], object]]
) -> StreamingHttpResponse:
    """Return a streaming `text/event-stream` response; `closers` run when it is closed."""
    response = StreamingHttpResponse(
        EventStream(events, closers), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
