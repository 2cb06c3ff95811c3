"""What every provider implements, and the internal request/result types they speak.

A provider maps one `ChatRequest` (messages with text and image parts plus sampling options) to
its SDK, returns one `ChatResult` with usage, streams `ChatChunk`s, and turns every SDK failure
into one `ProviderError` that carries an HTTP status and whether retrying could help.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from llm_api.providers.timeouts import Timeouts, Watch, describe
from project.exceptions import ServiceError

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a request: raw bytes, their MIME type and decoded size, checked by the gateway.

    An http(s) image URL is only recorded while the request is validated (`url` set, `data`
    empty: `pending`); `llm_api.images.images_fetch` fetches it once credits are held, so a
    provider only ever sees fetched, checked images.
    """

    data: bytes
    mime_type: str
    detail: str | None = None
    width: int | None = None
    height: int | None = None
    url: str | None = None
    # Where the client put the image ("messages.0.content.1.image_url.url"), for errors.
    param: str | None = None

    @property
    def pending(self) -> bool:
        """Return whether the image is a URL not fetched yet."""
        return self.url is not None and not self.data


Part = TextPart | ImagePart


@dataclass(slots=True)
class Message:
    role: Role
    content: str | list[Part]
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        """Return the message's text parts joined, images left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        if isinstance(self.content, str):
            return []
        return [part for part in self.content if isinstance(part, ImagePart)]


@dataclass(slots=True)
class ChatRequest:
    """One chat call as the provider sees it; `model` is the provider's own model name."""

    model: str
    messages: list[Message]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # {"type": "text"} | {"type": "json_object"} | {"type": "json_schema", "json_schema": {...}}
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    user: str | None = None

    @property
    def has_images(self) -> bool:
        return any(message.images for message in self.messages)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # True when the provider reported nothing and the gateway counted for itself.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Choice:
    index: int
    text: str
    finish_reason: str | None = "stop"
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class ChatResult:
    model: str
    choices: list[Choice]
    usage: Usage | None = None


@dataclass(slots=True)
class ChatChunk:
    """A piece of a stream: text for one choice, a finish reason, and/or the final usage."""

    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class EmbeddingResult:
    model: str
    vectors: list[list[float]]
    usage: Usage | None = None


class ChatStream:
    """An open upstream stream: iterate it for chunks, and always `close()` it.

    `close()` must release the upstream connection at once, even from a partly read stream;
    it is how a client that hangs up stops the upstream from generating.
    """

    def __iter__(self) -> Iterator[ChatChunk]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def ready(self, timeout: float) -> bool | None:
        """Return whether the next chunk can be read without waiting, after waiting up to
        `timeout` seconds for it; None when the stream cannot tell (the gateway then reads it
        from a helper thread, to keep speaking to the client while the upstream is silent)."""
        return None

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class GeneratorChatStream(ChatStream):
    """A ChatStream over a generator and a close callback (what most providers need).

    Once closed, the reading side ends quietly instead of reporting the cut connection as a
    provider failure.
    """

    def __init__(self, chunks: Iterator[ChatChunk], on_close: Any = None) -> None:
        self._chunks = chunks
        self._on_close = on_close
        self.closed = False

    def __iter__(self) -> Iterator[ChatChunk]:
        return self._read()

    def _read(self) -> Iterator[ChatChunk]:
        try:
            yield from self._chunks
        except Exception:
            if not self.closed:
                raise

    def close(self) -> None:
        self.closed = True
        # The connection first: that also ends a read blocked in another thread (the gateway
        # reads streams from a helper thread), whose generator cannot be closed while it runs.
        if self._on_close:
            self._on_close()
        close = getattr(self._chunks, "close", None)
        if close:
            # ValueError: "generator already executing" in the reading thread, which the
            # connection's close has already ended.
            with contextlib.suppress(ValueError):
                close()


class ProviderError(ServiceError):
    """Any failure talking to a provider, as one HTTP answer the gateway can give.

    `status_code`: 400 bad request the provider refused, 404 model not found, 429 rate limited,
    502 upstream unreachable or broken, 503 provider not configured, 504 timeout.
    `message` is safe to show a client: no keys, no internal URLs.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 502,
        code: str = "upstream_error",
        retryable: bool = False,
        retry_after: str | None = None,
        param: str | None = None,
    ) -> None:
        headers = {"Retry-After": retry_after} if retry_after else None
        super().__init__(message, param=param, headers=headers)
        self.status_code = status_code
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(slots=True)
class Capabilities:
    """What a provider can honour; the gateway answers 400 for anything outside it."""

    images: bool = True
    n: bool = True
    json_object: bool = True
    json_schema: bool = True
    embeddings: bool = True
    tools: bool = True
    # Whether the provider reports usage at the end of a stream.
    stream_usage: bool = True
    unsupported_params: frozenset[str] = field(default_factory=frozenset)


class Provider:
    """Base class of every provider module.

    Subclasses set `capabilities` and `required_options` (the options without which the
    provider is listed as unavailable, with the variable to set), and implement the hooks.
    """

    # A class default; a provider whose abilities depend on its OPTIONS sets its own in __init__.
    capabilities: Capabilities = Capabilities()
    # option name -> the environment variable a user sets for it
    required_options: ClassVar[dict[str, str]] = {}

    def __init__(self, name: str, options: dict[str, Any], timeout: float | Timeouts) -> None:
        """`timeout`: the defaults (from settings), or one number as LLM_TIMEOUT meant it;
        the provider's OPTIONS override either (see `Timeouts.with_options`)."""
        self.name = name
        self.options = options
        defaults = timeout if isinstance(timeout, Timeouts) else Timeouts.uniform(timeout)
        self.timeouts = defaults.with_options(options)
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """Return the SDK client, built on first use and shared by every thread (with its
        connection pool); a provider without its settings raises ProviderError 503."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    if self.missing_setting:
                        raise provider_not_configured(self.name, self.missing_setting)
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> Any:
        """Return a new SDK client for this provider's options and timeout."""
        raise NotImplementedError

    @property
    def missing_setting(self) -> str | None:
        """Return the variable to set when the provider lacks configuration, else None."""
        for option, variable in self.required_options.items():
            if not self.options.get(option):
                return variable
        return None

    @property
    def available(self) -> bool:
        return self.missing_setting is None

    def list_models(self) -> list[str]:
        """Return the provider's model names (without the provider prefix)."""
        raise NotImplementedError

    def chat(self, request: ChatRequest) -> ChatResult:
        """Return the whole completion, with the provider's usage when it reports one."""
        raise NotImplementedError

    def chat_stream(self, request: ChatRequest) -> ChatStream:
        """Open a stream and return it once the upstream has accepted the request.

        Errors before the first chunk raise ProviderError from here; errors later raise
        ProviderError from iteration. The last chunk carries usage when the provider gives it.
        """
        raise NotImplementedError

    def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        """Return one vector per input."""
        raise ProviderError(
            f"Provider '{self.name}' does not offer embeddings.",
            status_code=400,
            code="unsupported_operation",
        )


# --- The failures every provider shares, worded once -------------------------------------------

# Things an upstream may echo back that a client must never see: keys, tokens, URLs.
_SECRET_LIKE = re.compile(
    r"(?:sk-[\w-]{3,}|AIza[\w-]{10,}|Bearer\s+\S+|(?:api[_-]?)?key=[^&\s]+"
    r"|[a-z][\w+.-]*://\S+|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b)",
    re.IGNORECASE,
)


def sanitize_message(message: str, secrets: Iterable[str | None] = ()) -> str:
    """Return an upstream's message safe to show a client: no keys, no URLs, not too long."""
    for secret in secrets:
        if secret and len(secret) > 3:
            message = message.replace(secret, "[redacted]")
    message = _SECRET_LIKE.sub("[redacted]", message)
    return message if len(message) <= 500 else message[:497] + "..."


def upstream_status_error(
    provider: str,
    status: int,
    message: str | None = None,
    *,
    upstream_code: str | None = None,
    param: str | None = None,
    retry_after: str | None = None,
    secrets: Iterable[str | None] = (),
) -> ProviderError:
    """Return the ProviderError for an upstream's HTTP error answer (one mapping for all)."""
    said = sanitize_message(message or "", secrets).strip()
    if status == 429:
        text = f"The provider '{provider}' is rate limiting the gateway; try again later."
        return ProviderError(
            text, status_code=429, code="rate_limited", retryable=True, retry_after=retry_after
        )
    if status in (401, 403):
        text = f"The provider '{provider}' rejected the gateway's credentials."
        return ProviderError(text, status_code=502, code="upstream_auth_failed")
    if status == 404 or upstream_code == "model_not_found":
        text = said or f"The model was not found at provider '{provider}'."
        return ProviderError(text, status_code=404, code="model_not_found", param="model")
    if status == 408:
        return upstream_timeout(provider)
    if status >= 500:
        text = f"The provider '{provider}' failed (HTTP {status}); try again."
        return ProviderError(
            text, status_code=502, code="upstream_error", retryable=True, retry_after=retry_after
        )
    text = f"The provider '{provider}' rejected the request: {said or f'HTTP {status}'}"
    return ProviderError(text, status_code=400, code="upstream_rejected", param=param)


def upstream_unreachable(provider: str) -> ProviderError:
    """Return the error for an upstream that could not be connected to."""
    return ProviderError(
        f"The provider '{provider}' could not be reached.",
        status_code=502,
        code="upstream_unreachable",
        retryable=True,
    )


def upstream_timeout(
    provider: str, timeout: str = "", seconds: float = 0.0, *, answered: bool = False
) -> ProviderError:
    """Return the error for an upstream that did not answer in time: which `timeout` ran out
    after how many `seconds` (none: the upstream said so itself, HTTP 408). Retrying helps only
    a call that had not been `answered` yet (no first byte)."""
    message = f"The provider '{provider}' did not answer in time."
    if timeout:
        message = describe(provider, timeout, seconds)
    return ProviderError(message, status_code=504, code="upstream_timeout", retryable=not answered)


@contextmanager
def watched(provider: str, watch: Watch | None) -> Iterator[None]:
    """Report a stream that `watch` cut as the timeout that ran out, however its SDK saw the
    cut: as a broken connection, or as a clean end."""
    try:
        yield
    except Exception as error:
        if watch is not None and watch.fired:
            raise _watch_timeout(provider, watch) from error
        raise
    if watch is not None and watch.fired:
        raise _watch_timeout(provider, watch)


def _watch_timeout(provider: str, watch: Watch) -> ProviderError:
    which = watch.fired or "gap"
    return upstream_timeout(provider, which, watch.timeouts.seconds(which), answered=True)


def upstream_dropped(provider: str) -> ProviderError:
    """Return the error for an upstream that broke the connection in the middle of an answer."""
    return ProviderError(
        f"The provider '{provider}' closed the connection before the answer was complete.",
        status_code=502,
        code="upstream_error",
        retryable=True,
    )


def provider_not_configured(provider: str, variable: str) -> ProviderError:
    """Return the error for a call to a provider that lacks its configuration."""
    return ProviderError(
        f"The provider '{provider}' is not configured: set {variable}.",
        status_code=503,
        code="provider_unavailable",
    )


def unreadable_answer(provider: str) -> ProviderError:
    """Return the error for an upstream answer the gateway cannot make sense of."""
    return ProviderError(
        f"The provider '{provider}' sent an answer the gateway could not read.",
        status_code=502,
        code="upstream_error",
        retryable=True,
    )


class ResponseChatStream(GeneratorChatStream):
    """A ChatStream over one open HTTP response (httpx or httpx2) that `close()` cuts at once.

    Closing shuts the socket down before closing the response: that ends a read blocked in
    another thread at once (closing a socket alone does not wake it) and tells the upstream to
    stop.
    """

    def __init__(self, chunks: Iterator[ChatChunk], response: Any) -> None:
        super().__init__(chunks, on_close=self.cut)
        self._response = response

    def cut(self) -> None:
        """Cut the connection at once, from any thread (the reading side then fails)."""
        # A response read to its end is closed already, and its connection is back in the pool.
        if self._response is None or self._response.is_closed:
            return
        stream = self._response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        # HTTP/2 multiplexes other requests on the socket: there, closing the stream is enough.
        if sock is not None and self._response.http_version == "HTTP/1.1":
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):  # the reading thread may be closing it too
            self._response.close()
