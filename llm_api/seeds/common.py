"""What the seed adapters share: a JSON APIView base and reading the reply of a result."""

from __future__ import annotations

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from llm_api.providers.base import ChatResult, ProviderError
from llm_api.sse import event
from project.parsers import JSONParser

REPLY = inline_serializer("SeedReply", {"response": serializers.CharField()})


class SeedApi(APIView):
    """Base of the seed routes: JSON in and out, the default `{"detail", "code"}` errors."""

    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]


def reply_text(result: ChatResult) -> str:
    """Return the text of the first choice (the seeds ask for one)."""
    return result.choices[0].text if result.choices else ""


def detail_error_event(error: ProviderError) -> bytes:
    """Return an upstream failure after the first byte as an SSE event in the default shape."""
    return event({"detail": error.message, "code": error.code})
