"""Seed 001 ("LLM API"): a text model and an image model, each answered whole or as a stream.

`POST /text_model/chat/completion` and `/text_model/chat/stream` take JSON `messages` plus the
seed's parameter table; `POST /image_model/chat/completion` and `/image_model/chat/stream` take a
multipart form: an `image` file, a `prompt` and the same parameters as form fields. Answers are
`{"response": text}`; streams are SSE events `data: {"response": piece}` ending `data: [DONE]`.
The models are TEXT_MODEL and IMAGE_MODEL; each call holds one of its model's slots (the limit
step), at most <ROLE>_MAX_CONCURRENCY at once and one key at most MODEL_SLOT_SHARE of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from django.conf import settings
from rest_framework.request import Request

from llm_api import schemas
from llm_api.concurrency import slot_take
from llm_api.dialects.seed000 import Reply
from llm_api.exceptions import InvalidParameter, UnsupportedParameter
from llm_api.images import image_from_upload
from llm_api.limits import model_share_held
from llm_api.pipeline import Call
from llm_api.providers.base import ChatRequest, Message, TextPart
from llm_api.schemas import ChatInput
from llm_api.selectors import model_resolve
from project.parsers import json_loads

MISSING_KEY = "Missing API Key. Please provide X-API-Key header."
FLOATS = {"temperature", "top_p", "frequency_penalty", "presence_penalty"}
INTEGERS = {"max_tokens", "seed"}
PARAMETERS = {*FLOATS, *INTEGERS, "response_format"}


# --- requests -----------------------------------------------------------------------------------


def text_input(body: Any) -> ChatInput:
    """Validate a text route's JSON body into a chat call on TEXT_MODEL."""
    body = schemas.require_object(body)
    schemas.reject_unknown(body, {"messages", *PARAMETERS})
    request = ChatRequest(
        model="", messages=schemas.messages(body), **schemas.options(body, PARAMETERS)
    )
    return ChatInput(model=settings.TEXT_MODEL or None, request=request)


def form_value(name: str, value: str) -> Any:
    """Return a form field's text as the type its JSON twin has (a number, an object)."""
    try:
        if name in FLOATS:
            # "5" stays 5, so a refusal quotes the value as the JSON routes quote theirs.
            return int(value) if value.strip().lstrip("-").isdigit() else float(value)
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
    options = schemas.options(body, PARAMETERS)
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


class ModelSlotReply(Reply):
    """Seed 001: as Reply, and each call holds a slot of its model role (`text_model`,
    `image_model`) for the whole call or the whole stream: at most
    <ROLE>_MAX_CONCURRENCY at once, and one key at most its share of them
    (MODEL_SLOT_SHARE; over it, 429 at once, while other keys still find slots)."""

    def __init__(self, role: str) -> None:
        self.role = role

    @contextmanager
    def admit(self, call: Call) -> Iterator[None]:
        limit = getattr(settings, f"{self.role.upper()}_MAX_CONCURRENCY")
        with ExitStack() as held:
            if call.caller is not None:
                held.enter_context(model_share_held(call.caller, role=self.role, cap=limit))
            held.enter_context(slot_take(name=self.role, limit=limit))
            yield


TEXT_MODEL = ModelSlotReply("text_model")
IMAGE_MODEL = ModelSlotReply("image_model")
