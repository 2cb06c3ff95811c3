"""Seed 001 ("LLM API"): a text model and an image model, each answered whole or as a stream.

`POST /text_model/chat/completion` and `/text_model/chat/stream` take JSON `messages` plus the
seed's parameter table; `POST /image_model/chat/completion` and `/image_model/chat/stream` take a
multipart form: an `image` file, a `prompt` and the same parameters as form fields. Answers are
`{"response": text}`; streams are SSE events `data: {"response": piece}` ending `data: [DONE]`.
The models are TEXT_MODEL and IMAGE_MODEL, each with its own limit on concurrent upstream calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from django.conf import settings
from django.http import HttpResponseBase
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from llm_api import schemas
from llm_api.apis import ANY_JSON, caller_of
from llm_api.concurrency import released_on_error, slot_take
from llm_api.exceptions import InvalidParameter, UnsupportedParameter
from llm_api.images import ImageUploadLimit, image_from_upload
from llm_api.providers.base import ChatChunk, ChatRequest, Message, TextPart
from llm_api.schemas import ChatInput
from llm_api.seeds.common import REPLY, SeedApi, detail_error_event, reply_text
from llm_api.selectors import model_resolve
from llm_api.services import MeteredStream, chat_create, chat_stream_open
from llm_api.sse import chunk_events, event, sse_response
from project.parsers import json_loads

MISSING_KEY = "Missing API Key. Please provide X-API-Key header."
FLOATS = {"temperature", "top_p", "frequency_penalty", "presence_penalty"}
INTEGERS = {"max_tokens", "seed"}
PARAMETERS = {*FLOATS, *INTEGERS, "response_format"}

IMAGE_FORM = inline_serializer(
    "Seed001ImageForm",
    {
        "image": serializers.ImageField(),
        "prompt": serializers.CharField(),
        "temperature": serializers.FloatField(required=False),
        "max_tokens": serializers.IntegerField(required=False),
        "top_p": serializers.FloatField(required=False),
        "frequency_penalty": serializers.FloatField(required=False),
        "presence_penalty": serializers.FloatField(required=False),
        "seed": serializers.IntegerField(required=False),
        "response_format": serializers.CharField(required=False, help_text="JSON"),
    },
)


# --- requests -----------------------------------------------------------------------------------


def parameters(body: dict[str, Any]) -> dict[str, Any]:
    """Return the seed's parameter table as ChatRequest fields, checked as /v1 checks them."""
    return {
        "max_tokens": schemas.max_tokens(body),
        "temperature": schemas.number(body, "temperature", 0, 2),
        "top_p": schemas.number(body, "top_p", 0, 1),
        "frequency_penalty": schemas.number(body, "frequency_penalty", -2, 2),
        "presence_penalty": schemas.number(body, "presence_penalty", -2, 2),
        "seed": schemas.integer(body, "seed"),
        "response_format": schemas.response_format(body),
    }


def text_input(body: Any) -> ChatInput:
    """Validate a text route's JSON body into a chat call on TEXT_MODEL."""
    body = schemas.require_object(body)
    schemas.reject_unknown(body, {"messages", *PARAMETERS})
    request = ChatRequest(model="", messages=schemas.messages(body), **parameters(body))
    return ChatInput(model=settings.TEXT_MODEL or None, request=request)


def form_value(name: str, value: str) -> Any:
    """Return a form field's text as the type its JSON twin has (a number, an object)."""
    try:
        if name in FLOATS:
            return float(value)
        if name in INTEGERS:
            return int(value)
    except ValueError:
        kind = "a number" if name in FLOATS else "an integer"
        raise InvalidParameter(f"'{name}' must be {kind}; got {value!r}.", param=name) from None
    if name == "response_format":
        try:
            return json_loads(value)
        except ValueError as error:
            raise InvalidParameter(
                f'\'response_format\' must be JSON, like {{"type": "json_object"}}: {error}.',
                param=name,
            ) from None
    return value


def form_body(request: Request) -> dict[str, Any]:
    """Return the multipart form's text fields, typed; an empty field counts as absent."""
    body = {}
    for name in request.data:
        if name in request.FILES:
            continue
        if name == "image":
            raise InvalidParameter(
                "'image' must be a file upload (curl: -F \"image=@photo.jpg\").", param="image"
            )
        value = request.data.get(name)
        if value != "":
            body[name] = form_value(name, value)
    return body


def image_input(request: Request) -> ChatInput:
    """Validate an image route's form into one user message: the prompt, then the image."""
    body = form_body(request)
    schemas.reject_unknown(body, {"prompt", *PARAMETERS})
    unknown_files = set(request.FILES) - {"image"}
    if unknown_files:
        name = sorted(unknown_files)[0]
        raise InvalidParameter(f"Unexpected file field '{name}'; send 'image'.", param=name)
    prompt = schemas.string(body, "prompt", required=True)
    options = parameters(body)
    upload = request.FILES.get("image")
    if upload is None:
        raise InvalidParameter(
            "'image' is required: upload the image as a file field named 'image'.", param="image"
        )
    image = image_from_upload(upload, param="image")
    message = Message(role="user", content=[TextPart(prompt or ""), image])
    chat_request = ChatRequest(model="", messages=[message], **options)
    return ChatInput(model=settings.IMAGE_MODEL or None, request=chat_request)


def image_model_check() -> None:
    """Refuse at once when IMAGE_MODEL names a model that cannot take images."""
    target = model_resolve(settings.IMAGE_MODEL or None)
    if not target.provider.capabilities.images:
        raise UnsupportedParameter(
            f"The image model '{target.name}' cannot take images; the server's IMAGE_MODEL "
            "setting must name a model that can.",
            param="image",
        )


# --- answers ------------------------------------------------------------------------------------


def chunk_event(chunk: ChatChunk) -> bytes | None:
    return event({"response": chunk.text}) if chunk.text else None


def stream_events(stream: MeteredStream) -> Iterator[bytes]:
    """Return the stream as seed 001's SSE: `{"response": piece}` events, then [DONE]."""
    return chunk_events(stream, chunk_event, lambda usage: None, detail_error_event)


class Seed001Api(SeedApi):
    """Base of seed 001's routes: one model role, whole answers or streams, a slot per call."""

    missing_credentials_message = MISSING_KEY
    role: ClassVar[str] = "text_model"  # the slot pool and the settings' prefix
    stream: ClassVar[bool] = False

    def answer(self, request: Request, chat: ChatInput) -> HttpResponseBase:
        """Call the model holding one of its slots, for the whole call or the whole stream."""
        chat.stream = self.stream
        limit = getattr(settings, f"{self.role.upper()}_MAX_CONCURRENCY")
        slot = slot_take(name=self.role, limit=limit)
        route = f"seed001.{self.role}.{'stream' if self.stream else 'completion'}"
        caller = caller_of(request)
        if not self.stream:
            with slot:
                _, result = chat_create(caller=caller, chat=chat, route=route)
            return Response({"response": reply_text(result)})
        with released_on_error(slot):
            stream = chat_stream_open(caller=caller, chat=chat, route=route)
        return sse_response(stream_events(stream), stream.close, slot.release)


class TextModelCompletionApi(Seed001Api):
    """Seed 001: a reply from TEXT_MODEL to JSON `messages`, as `{"response": text}`."""

    @extend_schema(request=ANY_JSON, responses={200: REPLY}, tags=["Seed 001"])
    def post(self, request: Request) -> HttpResponseBase:
        return self.answer(request, text_input(request.data))


class TextModelStreamApi(TextModelCompletionApi):
    """Seed 001: the reply from TEXT_MODEL as SSE `{"response": piece}` events."""

    stream = True


class ImageModelCompletionApi(Seed001Api):
    """Seed 001: a reply from IMAGE_MODEL to an uploaded `image` and a `prompt`."""

    role = "image_model"
    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": IMAGE_FORM}, responses={200: REPLY}, tags=["Seed 001"]
    )
    def post(self, request: Request) -> HttpResponseBase:
        image_model_check()
        # Before the body is read: an oversized image stops as it streams in.
        django_request = request._request
        django_request.upload_handlers = [
            ImageUploadLimit(django_request),
            *django_request.upload_handlers,
        ]
        return self.answer(request, image_input(request))


class ImageModelStreamApi(ImageModelCompletionApi):
    """Seed 001: the reply from IMAGE_MODEL as SSE `{"response": piece}` events."""

    stream = True
