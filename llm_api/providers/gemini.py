"""Google Gemini through the `google-genai` SDK (the Gemini API, with an API key).

System messages become the system instruction, the assistant is the "model" role, images travel
as inline data. The SDK is given its own HTTP client so that the provider fixes the connection
pool and can close a stream's response at once when the client hangs up.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx2
from google import genai
from google.genai import errors, types

from llm_api.providers.base import (
    Capabilities,
    ChatChunk,
    ChatRequest,
    ChatResult,
    ChatStream,
    Choice,
    EmbeddingResult,
    ImagePart,
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

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# The SDK talks through httpx2 here, but either library may surface, depending on its backend.
TIMEOUTS = (httpx2.TimeoutException, httpx.TimeoutException)
CONNECT_ERRORS = (httpx2.ConnectError, httpx.ConnectError)
TRANSPORT_ERRORS = (httpx2.TransportError, httpx.TransportError, httpx2.StreamError)


class GeminiProvider(Provider):
    # OpenAI-style tool calls are not translated to Gemini function declarations (yet).
    capabilities = Capabilities(tools=False)
    required_options = {"api_key": "GEMINI_API_KEY"}

    def __init__(self, name: str, options: dict[str, Any], timeout: float | Timeouts) -> None:
        super().__init__(name, options, timeout)
        # The HTTP response a thread's last request opened, so its stream can be closed.
        self._opened = threading.local()

    def _build_client(self) -> genai.Client:
        http_client = httpx2.Client(
            timeout=self.timeouts.for_httpx(httpx2),
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
            follow_redirects=True,
            event_hooks={"request": [self._set_timeouts], "response": [self._remember_response]},
        )
        total = self.timeouts.total
        http_options = types.HttpOptions(
            base_url=self.options.get("base_url") or None,
            # v1beta carries every generation option we map (system instruction, JSON schema).
            api_version=self.options.get("api_version") or "v1beta",
            # Sent as X-Server-Timeout; the SDK also makes it each request's one timeout, which
            # `_set_timeouts` replaces with the four.
            timeout=None if math.isinf(total) else math.ceil(total * 1000),
            httpx_client=http_client,
        )
        return genai.Client(api_key=self.options["api_key"], http_options=http_options)

    def _set_timeouts(self, request: httpx2.Request) -> None:
        # Before a stream's first chunk; a Watch applies the gap and the total after it.
        request.extensions["timeout"] = self.timeouts.for_httpx(httpx2).as_dict()

    def _remember_response(self, response: httpx2.Response) -> None:
        self._opened.response = response

    # --- the hooks ---------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        with self._translated():
            return [
                (model.name or "").removeprefix("models/") for model in self.client.models.list()
            ]

    def chat(self, request: ChatRequest) -> ChatResult:
        with self._translated():
            response = self.client.models.generate_content(**self._params(request))
        choices = [
            Choice(
                index=candidate.index or position,
                text=_text(candidate),
                finish_reason=_finish(candidate.finish_reason) or "stop",
            )
            for position, candidate in enumerate(response.candidates or [])
        ]
        model = response.model_version or request.model
        return ChatResult(model=model, choices=choices, usage=_usage(response.usage_metadata))

    def chat_stream(self, request: ChatRequest) -> ChatStream:
        watch = Watch(self.timeouts)
        responses = self.client.models.generate_content_stream(**self._params(request))
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
            response = self.client.models.embed_content(model=model, contents=list(inputs))
        vectors = [list(embedding.values or []) for embedding in response.embeddings or []]
        # The Gemini API reports no token counts for embeddings: the gateway estimates.
        return EmbeddingResult(model=model, vectors=vectors)

    # --- the request -------------------------------------------------------------------------

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        system = "\n\n".join(m.text for m in request.messages if m.role == "system")
        contents = [_content(m) for m in request.messages if m.role != "system"]
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=request.temperature,
            top_p=request.top_p,
            max_output_tokens=request.max_tokens,
            candidate_count=request.n if request.n != 1 else None,
            stop_sequences=request.stop or None,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            **_response_format(request.response_format),
        )
        return {"model": request.model, "contents": contents, "config": config}

    # --- the answer --------------------------------------------------------------------------

    def _chunks(
        self, first: types.GenerateContentResponse | None, rest: Iterator[Any], watch: Watch
    ) -> Iterator[ChatChunk]:
        usage = None
        try:
            with self._translated(streaming=True, watch=watch):
                response = first
                while response is not None:
                    yield from _stream_chunks(response)
                    usage = _usage(response.usage_metadata) or usage
                    watch.waiting()
                    response = next(rest, None)
            if usage:
                yield ChatChunk(usage=usage)
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
        except errors.APIError as error:
            raise self._status_error(error) from error
        except TIMEOUTS as error:
            which = sdk_timeout(error, self.timeouts)
            raise upstream_timeout(self.name, which, self.timeouts.seconds(which)) from error
        except CONNECT_ERRORS as error:
            raise upstream_unreachable(self.name) from error
        except TRANSPORT_ERRORS as error:
            raise (upstream_dropped if streaming else upstream_unreachable)(self.name) from error
        except ValueError as error:  # JSON or pydantic: an answer that is not Gemini's
            raise unreadable_answer(self.name) from error

    def _status_error(self, error: errors.APIError) -> ProviderError:
        message = error.message if isinstance(error.message, str) else None
        status = error.code or 502
        # Gemini answers a bad key with 400 INVALID_ARGUMENT "API key not valid".
        if status == 400 and "api key" in (message or "").lower():
            status = 401
        headers = getattr(error.response, "headers", None) or {}
        return upstream_status_error(
            self.name,
            status,
            message,
            retry_after=headers.get("retry-after"),
            secrets=(self.options.get("api_key"), self.options.get("base_url")),
        )


def _content(message: Message) -> types.Content:
    role = "model" if message.role == "assistant" else "user"
    if isinstance(message.content, str):
        return types.Content(role=role, parts=[types.Part.from_text(text=message.content)])
    parts = [
        types.Part.from_bytes(data=part.data, mime_type=part.mime_type)
        if isinstance(part, ImagePart)
        else types.Part.from_text(text=part.text)
        for part in message.content
    ]
    return types.Content(role=role, parts=parts)


def _response_format(response_format: dict[str, Any] | None) -> dict[str, Any]:
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return {"response_mime_type": "application/json"}
    if kind == "json_schema":
        schema = (response_format or {}).get("json_schema", {}).get("schema") or {}
        return {"response_mime_type": "application/json", "response_json_schema": schema}
    return {}


def _text(candidate: types.Candidate) -> str:
    parts = candidate.content.parts if candidate.content else None
    return "".join(part.text for part in parts or [] if part.text and not part.thought)


def _finish(reason: Any) -> str | None:
    if not reason:
        return None
    return FINISH_REASONS.get(getattr(reason, "value", str(reason)), "stop")


def _stream_chunks(response: types.GenerateContentResponse) -> Iterator[ChatChunk]:
    for position, candidate in enumerate(response.candidates or []):
        text, finish = _text(candidate), _finish(candidate.finish_reason)
        if text or finish:
            yield ChatChunk(index=candidate.index or position, text=text, finish_reason=finish)


def _usage(metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage | None:
    if metadata is None or metadata.prompt_token_count is None:
        return None
    # Thinking tokens are output the provider bills for, like the visible ones.
    completion = (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
    return Usage(metadata.prompt_token_count, completion)
