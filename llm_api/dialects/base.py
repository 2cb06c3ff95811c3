"""What every dialect provides: its answer, its stream writer, its error shape, its admission."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from llm_api.pipeline import Call
from llm_api.providers.base import ChatChunk, ChatResult, ProviderError, Usage
from llm_api.streaming import DONE, StreamWriter, event
from project.exception_handler import ApiError


def reply_text(result: ChatResult) -> str:
    """Return the text of the first choice (the seeds ask for one)."""
    return result.choices[0].text if result.choices else ""


class Dialect:
    """A wire shape. Subclasses implement `answer` and `chunk`; the rest has defaults."""

    # The shape of error answers and error events: "openai", "seed003" or "detail".
    error_format: ClassVar[str] = "openai"

    def answer(self, call: Call, result: ChatResult) -> dict[str, Any]:
        """Return the whole answer's JSON body."""
        raise NotImplementedError

    def writer(self, call: Call) -> StreamWriter:
        """Return the writer of one stream's events."""
        return Writer(self, call)

    def chunk(self, writer: Writer, chunk: ChatChunk) -> bytes | None:
        """Return one stream chunk as an event, or None to send nothing for it."""
        raise NotImplementedError

    def start(self, writer: Writer) -> bytes | None:
        return None

    def end(self, writer: Writer, usage: Usage, *, failed: bool) -> bytes | None:
        """Return what closes the stream (by default OpenAI's `[DONE]`)."""
        return DONE

    def error(self, writer: Writer, error: ProviderError) -> bytes:
        """Return an upstream failure after the first byte, in the route's error shape."""
        body = ApiError(error.status_code, error.message, error.code).body(self.error_format)
        return event(body)

    @contextmanager
    def admit(self, call: Call) -> Iterator[None]:
        """Admit the call (the limit step), and release its admission when the block ends."""
        yield


class Writer:
    """One stream's state, written by its dialect's hooks."""

    def __init__(self, dialect: Dialect, call: Call) -> None:
        self.dialect = dialect
        self.call = call
        self.state: dict[str, Any] = {}

    def start(self) -> bytes | None:
        return self.dialect.start(self)

    def chunk(self, chunk: ChatChunk) -> bytes | None:
        return self.dialect.chunk(self, chunk)

    def error(self, error: ProviderError) -> bytes:
        return self.dialect.error(self, error)

    def end(self, usage: Usage, *, failed: bool) -> bytes | None:
        return self.dialect.end(self, usage, failed=failed)
