"""Seed 000 ("Python API LLM"): `POST /generate?prompt=…` with `x-api-key` → `{"response": …}`.

Its answer shape, `{"response": text}` (and `{"response": piece}` events), is seed 001's too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from llm_api.dialects.base import Dialect, Writer, reply_text
from llm_api.exceptions import InvalidParameter
from llm_api.pipeline import Call
from llm_api.providers.base import ChatChunk, ChatRequest, ChatResult, Message
from llm_api.schemas import ChatInput
from llm_api.streaming import event


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


class Reply(Dialect):
    """Seed 000 and seed 001: `{"response": text}`, and `{"response": piece}` events."""

    error_format = "detail"

    def answer(self, call: Call, result: ChatResult) -> dict[str, Any]:
        return {"response": reply_text(result)}

    def chunk(self, writer: Writer, chunk: ChatChunk) -> bytes | None:
        return event({"response": chunk.text}) if chunk.text else None


SEED000 = Reply()
