"""An Ollama server through the `ollama` SDK and its native API (/api/chat, /api/embed).

Ollama returns one answer per call (no `n`), takes sampling options in `options`, images as
base64 beside the message text, and reports token counts on the final message of a stream.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import ollama

from llm_api.providers.base import (
    Capabilities,
    ChatChunk,
    ChatRequest,
    ChatResult,
    ChatStream,
    Choice,
    EmbeddingResult,
    Message,
    Provider,
    ProviderError,
    ResponseChatStream,
    Usage,
    unreadable_answer,
    upstream_dropped,
    upstream_status_error,
    upstream_timeout,
    upstream_unreachable,
    watched,
)
from llm_api.providers.timeouts import Timeouts, Watch, sdk_timeout

# ChatRequest field -> Ollama option
OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "num_predict",
    "stop": "stop",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}


class OllamaProvider(Provider):
    capabilities = Capabilities(n=False, unsupported_params=frozenset({"tool_choice"}))
    required_options = {"host": "OLLAMA_HOST"}

    def __init__(self, name: str, options: dict[str, Any], timeout: float | Timeouts) -> None:
        super().__init__(name, options, timeout)
        # The HTTP response a thread's last request opened, so its stream can be closed.
        self._opened = threading.local()

    def _build_client(self) -> ollama.Client:
        return ollama.Client(
            host=self.options["host"],
            # Before a stream's first chunk; a Watch applies the gap and the total after it.
            timeout=self.timeouts.for_httpx(httpx),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            event_hooks={"response": [self._remember_response]},
        )

    def _remember_response(self, response: httpx.Response) -> None:
        self._opened.response = response

    # --- the hooks ---------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        with self._translated():
            return [model.model or "" for model in self.client.list().models]

    def chat(self, request: ChatRequest) -> ChatResult:
        with self._translated():
            response = self.client.chat(**self._params(request), stream=False)
        message, tools = response.message, _tool_calls(response.message.tool_calls)
        finish = "tool_calls" if tools else _finish(response.done_reason)
        choice = Choice(0, message.content or "", finish_reason=finish, tool_calls=tools)
        model = response.model or request.model
        return ChatResult(model=model, choices=[choice], usage=_usage(response))

    def chat_stream(self, request: ChatRequest) -> ChatStream:
        watch = Watch(self.timeouts)
        responses = self.client.chat(**self._params(request), stream=True)
        # The SDK sends the request on the first step: take it here, so errors raise from here.
        with self._translated():
            first = next(responses, None)
        if first is None:  # a 200 with no answer in it
            raise upstream_dropped(self.name)
        stream = ResponseChatStream(self._chunks(first, responses, watch), self._opened.response)
        watch.start(stream.cut)
        return stream

    def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        with self._translated():
            response = self.client.embed(model=model, input=list(inputs))
        tokens = response.prompt_eval_count
        return EmbeddingResult(
            model=response.model or model,
            vectors=[list(vector) for vector in response.embeddings],
            usage=Usage(tokens, 0) if tokens is not None else None,
        )

    # --- the request -------------------------------------------------------------------------

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        options = {
            option: getattr(request, field)
            for field, option in OPTIONS.items()
            if getattr(request, field) is not None
        }
        params: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(message) for message in request.messages],
            "options": options,
        }
        if request.tools:
            params["tools"] = request.tools
        kind = (request.response_format or {}).get("type")
        if kind == "json_object":
            params["format"] = "json"
        elif kind == "json_schema":
            params["format"] = (request.response_format or {})["json_schema"].get("schema") or {}
        return params

    # --- the answer --------------------------------------------------------------------------

    def _chunks(
        self, first: ollama.ChatResponse | None, rest: Iterator[Any], watch: Watch
    ) -> Iterator[ChatChunk]:
        try:
            with self._translated(streaming=True, watch=watch):
                response = first
                while response is not None:
                    chunk = _chunk(response)
                    if chunk is not None:
                        yield chunk
                    watch.waiting()
                    response = next(rest, None)
        finally:
            watch.stop()
            rest.close()  # type: ignore[attr-defined]

    # --- failures ----------------------------------------------------------------------------

    @contextmanager
    def _translated(self, *, streaming: bool = False, watch: Watch | None = None) -> Iterator[None]:
        """Turn every SDK or transport failure inside the block into one ProviderError (a
        stream the watch cut: the timeout that ran out, also when the SDK saw a clean end)."""
        if not streaming:
            self._opened.response = None
        try:
            with watched(self.name, watch):
                yield
        except ProviderError:
            raise
        except ollama.ResponseError as error:
            raise self._status_error(error) from error
        except httpx.TimeoutException as error:
            which = sdk_timeout(error, self.timeouts)
            raise upstream_timeout(self.name, which, self.timeouts.seconds(which)) from error
        except (httpx.ConnectError, ConnectionError) as error:
            # The SDK turns a refused connection into the builtin ConnectionError.
            raise upstream_unreachable(self.name) from error
        except (httpx.TransportError, httpx.StreamError) as error:
            raise (upstream_dropped if streaming else upstream_unreachable)(self.name) from error
        except ValueError as error:  # JSON or pydantic: an answer that is not Ollama's
            raise unreadable_answer(self.name) from error

    def _status_error(self, error: ollama.ResponseError) -> ProviderError:
        message = str(error.error)
        # A failure reported inside a stream has no HTTP status of its own.
        status = error.status_code if error.status_code > 0 else 500
        if "not found" in message and "model" in message:
            status = 404
        # The SDK keeps no headers: Retry-After comes from the response this thread opened.
        response = getattr(self._opened, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        return upstream_status_error(
            self.name,
            status,
            message,
            retry_after=retry_after,
            secrets=(self.options.get("host"),),
        )


def _message(message: Message) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.images:
        # Raw bytes: the SDK sends them base64-encoded, as Ollama expects.
        wire["images"] = [image.data for image in message.images]
    if message.role == "tool" and message.name:
        wire["tool_name"] = message.name
    if message.tool_calls:
        wire["tool_calls"] = [_ollama_tool_call(call) for call in message.tool_calls]
    return wire


def _ollama_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    return {"function": {"name": function.get("name", ""), "arguments": arguments}}


def _tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    """Return Ollama's tool calls in OpenAI's shape (arguments as a JSON string, with ids)."""
    if not calls:
        return None
    return [
        {
            "index": position,
            "id": f"call_{position}",
            "type": "function",
            "function": {
                "name": call.function.name,
                "arguments": json.dumps(dict(call.function.arguments or {})),
            },
        }
        for position, call in enumerate(calls)
    ]


def _chunk(response: ollama.ChatResponse) -> ChatChunk | None:
    message = response.message
    text = (message.content if message else None) or ""
    tools = _tool_calls(message.tool_calls if message else None)
    if not response.done:
        return ChatChunk(text=text, tool_calls=tools) if text or tools else None
    finish = "tool_calls" if tools else _finish(response.done_reason)
    return ChatChunk(text=text, finish_reason=finish, usage=_usage(response), tool_calls=tools)


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _usage(response: ollama.ChatResponse | ollama.EmbedResponse) -> Usage | None:
    if response.prompt_eval_count is None and response.eval_count is None:
        return None
    return Usage(response.prompt_eval_count or 0, response.eval_count or 0)
