"""Seed 000 ("Python API LLM"): `POST /generate?prompt=…` with `x-api-key` → `{"response": …}`."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from llm_api.apis import caller_of
from llm_api.exceptions import InvalidParameter
from llm_api.providers.base import ChatRequest, Message
from llm_api.schemas import ChatInput
from llm_api.seeds.common import REPLY, SeedApi, reply_text
from llm_api.services import chat_create


def generate_input(prompt: str | None) -> ChatInput:
    """Return the chat call for a prompt given in the query string, on GENERATE_MODEL."""
    if prompt is None or not prompt.strip():
        raise InvalidParameter("Query parameter 'prompt' is required.", param="prompt")
    request = ChatRequest(
        model="",
        messages=[Message(role="user", content=prompt)],
        max_tokens=settings.MAX_TOKENS_DEFAULT,
    )
    return ChatInput(model=settings.GENERATE_MODEL or None, request=request)


class GenerateApi(SeedApi):
    """Seed 000: answer the `prompt` query parameter as `{"response": text}`."""

    @extend_schema(
        parameters=[OpenApiParameter("prompt", str, required=True)],
        request=None,
        responses={200: REPLY},
        tags=["Seed 000"],
    )
    def post(self, request: Request) -> Response:
        chat = generate_input(request.query_params.get("prompt"))
        _, result = chat_create(caller=caller_of(request), chat=chat, route="seed000.generate")
        return Response({"response": reply_text(result)})
