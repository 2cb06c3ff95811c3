"""OpenAI, or any OpenAI-compatible server.

The SDK builds the client and serves the model list and embeddings. Chat calls, the hot path,
go through `wire`, the gateway's own small HTTP/1.1 client, with keep-alive connections per
upstream: the SDK's per-call work (request options, transforms, idempotency keys, pydantic
models) measured about 2 ms a call against a 0.1 ms upstream, more than the rest of the
gateway's, and httpx's per-chunk layers and buffering cost a reader thread per stream (see
`wire`). Answers are read as raw JSON, never as SDK objects.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai

from llm_api.providers import wire
from llm_api.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    ChatStream,
    Choice,
    EmbeddingResult,
    GeneratorChatStream,
    ImagePart,
    Message,
    Provider,
    ProviderError,
    Usage,
    unreadable_answer,
    upstream_dropped,
    upstream_status_error,
    upstream_timeout,
    upstream_unreachable,
)
from llm_api.providers.timeouts import sdk_timeout

# Sampling options sent as they are when the request sets them.
PASSTHROUGH = (
    "temperature",
    "top_p",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "tools",
    "tool_choice",
    "user",
)


class OpenAIProvider(Provider):
    required_options = {"api_key": "OPENAI_API_KEY"}

    # --- the client ------------------------------------------------------------------------

    def _build_client(self) -> openai.OpenAI:
        # The model list and embeddings (through the SDK); chat calls apply all four in `wire`.
        timeout = self.timeouts.for_httpx(httpx2)
        http_client = openai.DefaultHttpx2Client(
            timeout=timeout,
            limits=httpx2.Limits(max_connections=2000, max_keepalive_connections=200),
        )
        client = openai.OpenAI(
            api_key=self.api_key(),
            base_url=self.options.get("base_url") or None,
            timeout=timeout,
            # The gateway decides whether a failure is worth another attempt.
            max_retries=0,
            http_client=http_client,
        )
        self._upstream = wire.Upstream(str(client.base_url), timeout=self.timeouts)
        self._headers = {
            "Authorization": f"Bearer {client.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        return client

    def _post(self, params: dict[str, Any]) -> wire.Response:
        """Post a chat call; an error status raises ProviderError (the SDK builds nothing)."""
        self.client  # noqa: B018 (built on first use, or ProviderError 503 if not configured)
        body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
        response = self._upstream.post("/chat/completions", body, self._headers)
        if response.status >= 400:
            raise self._answer_error(response.status, response.headers, response.read())
        return response

    def api_key(self) -> str:
        """Return the key the SDK sends as a bearer token."""
        return self.options["api_key"]

    # --- the hooks ---------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        with self._translated():
            return [model.id for model in self.client.models.list()]

    def chat(self, request: ChatRequest) -> ChatResult:
        with self._translated():
            data = json.loads(self._post(self.chat_params(request)).read())
            if not isinstance(data, dict):
                raise TypeError("the answer is not a JSON object")
        return self._result(data, request)

    def chat_stream(self, request: ChatRequest) -> ChatStream:
        params = {**self.chat_params(request), "stream": True}
        params["stream_options"] = {"include_usage": True}
        with self._translated():
            response = self._post(params)
        if "text/event-stream" not in response.headers.get("content-type", "event-stream"):
            response.close()  # a 200 that is no stream (an HTML page from a proxy, say)
            raise unreadable_answer(self.name)
        return WireChatStream(self._chunks(response), response)

    def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        if not self.capabilities.embeddings:
            return super().embed(model, inputs)
        with self._translated():
            raw = self.client.embeddings.with_raw_response.create(
                model=model, input=inputs, encoding_format="float"
            )
            data = json.loads(raw.http_response.content)
        rows = sorted(data.get("data") or [], key=lambda row: row.get("index", 0))
        usage = data.get("usage") or {}
        tokens = usage.get("prompt_tokens")
        return EmbeddingResult(
            model=data.get("model") or model,
            vectors=[row["embedding"] for row in rows],
            usage=Usage(tokens, 0) if tokens is not None else None,
        )

    # --- the request -------------------------------------------------------------------------

    def chat_params(self, request: ChatRequest) -> dict[str, Any]:
        """Return the keyword arguments of `chat.completions.create` for `request`."""
        params: dict[str, Any] = {
            "model": request.model,
            "messages": [self._message(message) for message in request.messages],
            "max_tokens": request.max_tokens,
        }
        for option in PASSTHROUGH:
            value = getattr(request, option)
            if value is not None:
                params[option] = value
        if request.n != 1:
            params["n"] = request.n
        if request.response_format:
            params["response_format"] = self.response_format(request.response_format)
        return params

    def response_format(self, response_format: dict[str, Any]) -> dict[str, Any]:
        """Return `response_format` as this server understands it (OpenAI: unchanged)."""
        return response_format

    def _message(self, message: Message) -> dict[str, Any]:
        wire: dict[str, Any] = {"role": message.role, "content": self._content(message)}
        if message.name:
            wire["name"] = message.name
        if message.tool_call_id:
            wire["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            wire["tool_calls"] = message.tool_calls
            wire["content"] = wire["content"] or None
        return wire

    def _content(self, message: Message) -> str | list[dict[str, Any]]:
        # Plain text stays a string: every OpenAI-compatible server understands that.
        if isinstance(message.content, str) or not message.images:
            return message.text
        return [
            _image_part(part)
            if isinstance(part, ImagePart)
            else {"type": "text", "text": part.text}
            for part in message.content
        ]

    # --- the answer --------------------------------------------------------------------------

    def _result(self, data: dict[str, Any], request: ChatRequest) -> ChatResult:
        choices = []
        for position, choice in enumerate(data.get("choices") or []):
            message = choice.get("message") or {}
            choices.append(
                Choice(
                    index=choice.get("index", position),
                    text=message.get("content") or "",
                    finish_reason=choice.get("finish_reason"),
                    tool_calls=message.get("tool_calls") or None,
                )
            )
        model = data.get("model") or request.model
        return ChatResult(model=model, choices=choices, usage=_usage(data.get("usage")))

    def _chunks(self, response: wire.Response) -> Iterator[ChatChunk]:
        try:
            with self._translated(streaming=True):
                # Read to the end of the body, past [DONE]: a fully read connection goes back
                # to the pool instead of being closed.
                for payload in response.events():
                    if payload != b"[DONE]":
                        yield from self._parse_event(json.loads(payload))
        finally:
            response.close()

    def _parse_event(self, event: dict[str, Any]) -> Iterator[ChatChunk]:
        if "error" in event:
            error = event["error"] if isinstance(event["error"], dict) else {}
            raise upstream_status_error(
                self.name, 500, error.get("message"), secrets=self._secrets()
            )
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            text, tools = delta.get("content"), delta.get("tool_calls")
            finish = choice.get("finish_reason")
            if text or finish or tools:
                yield ChatChunk(choice.get("index", 0), text or "", finish, tool_calls=tools)
        usage = _usage(event.get("usage"))
        if usage:
            yield ChatChunk(usage=usage)

    # --- failures ----------------------------------------------------------------------------

    @contextmanager
    def _translated(self, *, streaming: bool = False) -> Iterator[None]:
        """Turn every SDK or transport failure inside the block into one ProviderError."""
        try:
            yield
        except wire.WireTimeout as error:
            seconds = self.timeouts.seconds(error.which)
            raise upstream_timeout(
                self.name, error.which, seconds, answered=error.answered
            ) from error
        except wire.WireConnectError as error:
            raise upstream_unreachable(self.name) from error
        except wire.WireError as error:
            raise (upstream_dropped if streaming else upstream_unreachable)(self.name) from error
        except (openai.APITimeoutError, httpx2.TimeoutException) as error:
            which = sdk_timeout(error, self.timeouts)
            raise upstream_timeout(self.name, which, self.timeouts.seconds(which)) from error
        except openai.APIConnectionError as error:
            raise upstream_unreachable(self.name) from error
        except openai.APIStatusError as error:
            raise self._status_error(error) from error
        except (httpx2.TransportError, httpx2.StreamError) as error:
            raise (upstream_dropped if streaming else upstream_unreachable)(self.name) from error
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise unreadable_answer(self.name) from error
        except openai.OpenAIError as error:
            raise ProviderError(f"The provider '{self.name}' failed.") from error

    def _answer_error(self, status: int, headers: dict[str, str], body: bytes) -> ProviderError:
        """Return the ProviderError for an error answer, from OpenAI's `{"error": {...}}`."""
        try:
            body = json.loads(body)
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        message = error.get("message")
        code, param = error.get("code"), error.get("param")
        return upstream_status_error(
            self.name,
            status,
            message if isinstance(message, str) else None,
            upstream_code=code if isinstance(code, str) else None,
            param=param if isinstance(param, str) else None,
            retry_after=headers.get("retry-after"),
            secrets=self._secrets(),
        )

    def _status_error(self, error: openai.APIStatusError) -> ProviderError:
        body = error.body if isinstance(error.body, dict) else {}
        message = body.get("message") if isinstance(body.get("message"), str) else None
        return upstream_status_error(
            self.name,
            error.status_code,
            message,
            upstream_code=error.code,
            param=error.param,
            retry_after=error.response.headers.get("retry-after"),
            secrets=self._secrets(),
        )

    def _secrets(self) -> tuple[str | None, ...]:
        return (self.options.get("api_key"), self.options.get("base_url"))


def _image_part(part: ImagePart) -> dict[str, Any]:
    encoded = base64.b64encode(part.data).decode("ascii")
    image: dict[str, Any] = {"url": f"data:{part.mime_type};base64,{encoded}"}
    if part.detail:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _usage(usage: dict[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


class WireChatStream(GeneratorChatStream):
    """A stream read from a `wire.Response`: it can tell whether its next event is ready, and a
    `close()` from any thread cuts the connection at once (the reader then ends quietly)."""

    def __init__(self, chunks: Iterator[ChatChunk], response: wire.Response) -> None:
        super().__init__(chunks, on_close=response.close)
        self._response = response

    def ready(self, timeout: float) -> bool:
        return self._response.ready(timeout)
