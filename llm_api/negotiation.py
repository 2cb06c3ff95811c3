"""Content negotiation for the LLM routes: what a client's Accept header may ask of them.

A route offers the representations its renderers name: JSON always (whole answers and every
error), plus Server-Sent Events on the routes that can stream (`EventStreamRenderer`). Which of
the two a call gets is decided by its body (`"stream": true`), not by the Accept header, because
real clients send headers that do not match what they ask for in the body: the OpenAI SDKs send
`Accept: application/json` on streamed calls, and SSE libraries (httpx-sse, browser chat front
ends) send `Accept: text/event-stream` whatever the body says. So:

- a streamed call answers SSE when the Accept header admits text/event-stream or JSON (or is
  absent, or `*/*`);
- a whole answer is JSON, when the Accept header admits JSON;
- a call that accepts only text/event-stream but did not ask for a stream is refused with 406
  before anything is charged or sent upstream: its JSON answer would be paid for and then
  thrown away by the client's SSE parser (httpx-sse raises on a non-SSE content type), and the
  406 says how to ask for a stream;
- an Accept header that admits none of the route's representations (text/html, application/xml)
  is refused with 406 at once.

Errors are always JSON (in the route's own error shape, by the exception handler), whatever the
Accept header says, as OpenAI's API does: clients read an error's body by its status code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

from project.exceptions import ServiceError

EVENT_STREAM = "text/event-stream"
JSON = "application/json"
# Bounds on what is parsed of an Accept header (DRF's own): a longer one is refused, not parsed.
MAX_ACCEPT_LENGTH = 8192
MAX_ACCEPT_RANGES = 64


class NotAcceptable(ServiceError):
    status_code = 406
    code = "not_acceptable"
    error_type = "invalid_request_error"
    default_message = "The Accept header admits none of the media types this route answers in."


class EventStreamRenderer(BaseRenderer):
    """Marks a view that can stream: its streams are `StreamingHttpResponse`s of SSE events
    (llm_api.streaming), so this renderer only takes part in negotiation and in the schema."""

    media_type = EVENT_STREAM
    format = "event-stream"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        raise NotImplementedError("Streams are written by llm_api.streaming, not rendered.")


@dataclass(frozen=True)
class MediaRange:
    """One `type/subtype;q=…` of an Accept header."""

    type: str
    subtype: str
    quality: float

    @classmethod
    def parse(cls, text: str) -> MediaRange | None:
        """Return the range, or None for one that is not `type/subtype`."""
        name, *parameters = (part.strip() for part in text.split(";"))
        main, slash, sub = name.lower().partition("/")
        if not slash or not main or not sub:
            return None
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        return cls(main, sub, quality)

    def specificity(self, media_type: str) -> int:
        """Return how closely it names `media_type` (2 exactly, 1 `type/*`, 0 `*/*`), or -1."""
        main, _, sub = media_type.partition("/")
        if (self.type, self.subtype) == (main, sub):
            return 2
        if self.type == main and self.subtype == "*":
            return 1
        if self.type == "*" and self.subtype == "*":
            return 0
        return -1


def accept_header(request: Request) -> str:
    """Return the request's Accept header, `*/*` when it is absent or blank."""
    return request.META.get("HTTP_ACCEPT", "").strip() or "*/*"


def admits(accept: str, media_type: str) -> bool:
    """Return whether an Accept header admits `media_type`: its most specific range that names
    it has a quality above zero (RFC 9110 §12.5.1; `q=0` means "not this one")."""
    ranges = [MediaRange.parse(text) for text in accept.split(",")[:MAX_ACCEPT_RANGES]]
    matching = [(r.specificity(media_type), r.quality) for r in ranges if r is not None]
    matching = [match for match in matching if match[0] >= 0]
    return bool(matching) and max(matching)[1] > 0


class GatewayContentNegotiation(DefaultContentNegotiation):
    """Pick the first of the view's renderers whose media type the Accept header admits, as
    `request.accepted_media_type`; render every DRF Response (whole answers, errors) with the
    view's first renderer, JSON. No admitted media type: 406, in the view's error shape.

    Reusable by any view that answers in more than JSON (a stream, a file): list JSON first and
    the other representations after it, then read `request.accepted_media_type`. Parsers are
    chosen as DRF does (by Content-Type).
    """

    def select_renderer(
        self, request: Request, renderers: Sequence[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        accept = accept_header(request)
        if len(accept) > MAX_ACCEPT_LENGTH:
            raise NotAcceptable("The Accept header is too long.")
        for renderer in renderers:
            if admits(accept, renderer.media_type):
                return renderers[0], renderer.media_type
        offered = ", ".join(renderer.media_type for renderer in renderers)
        raise NotAcceptable(
            f"The Accept header ({accept[:200]}) admits none of the media types this route "
            f"answers in: {offered}."
        )


def answer_negotiated(request: Request, *, stream: bool) -> None:
    """Refuse (406) a call whose Accept header admits only a stream when it did not ask for one.

    A streamed call is answered as SSE whatever else its Accept header admits (see the module's
    docstring), so only a whole answer can be out of reach here.
    """
    if not stream and getattr(request, "accepted_media_type", JSON) == EVENT_STREAM:
        raise NotAcceptable(
            "This request is not streamed, so it is answered as application/json, which the "
            'Accept header excludes. Send "stream": true for Server-Sent Events, or accept '
            "application/json."
        )
