"""Request-wide plumbing that every route shares."""

import io
import uuid
from collections.abc import Callable
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from project.exception_handler import json_error
from project.parsers import request_too_large


class RequestIdMiddleware:
    """Give every request an id, exposed as `request.request_id` and the `x-request-id` header.

    The id is always generated here, never taken from the client: billing settles each request
    id exactly once, so a client-chosen id could collide with another request's.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = f"req_{uuid.uuid4().hex}"
        response = self.get_response(request)
        response["x-request-id"] = request.request_id
        return response


class RequestSizeLimitMiddleware:
    """Refuse a request body over REQUEST_MAX_BYTES (413) before anything reads it, whatever it
    holds: JSON, a form or a multipart upload (which would otherwise reach memory or a temporary
    file in full).

    A route may allow more: its view's `body_limit()` returns its own limit and the setting
    that sets it (a batch input file may be as large as BATCH_FILE_MAX_BYTES). The route is
    looked up only for a body over REQUEST_MAX_BYTES or of unknown length, never on the way of
    an ordinary request.

    Django reads a body only up to its Content-Length, so a declared length over the limit is
    refused here, unread. A body without one (`Transfer-Encoding: chunked`) is read here,
    counted, refused once it passes the limit, and otherwise handed on as a body of known
    length. That needs a server that decodes the chunks and ends the input there
    (`wsgi.input_terminated`: granian, gunicorn); from any other, Django reads such a body as
    empty, and it is left alone.
    """

    CHUNK = 64 * 1024

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = request.META.get("CONTENT_LENGTH")
        if length and length.isdigit() and int(length) > settings.REQUEST_MAX_BYTES:
            limit, setting = self.limit(request)
            if int(length) > limit:
                return self.too_large(request, f"{int(length):,} bytes", limit, setting)
        if not length and self.chunked(request):
            limit, setting = self.limit(request)
            body = self.read_counted(request.META["wsgi.input"], limit)
            if body is None:
                return self.too_large(request, f"over {limit:,} bytes", limit, setting)
            # The request's own stream, as Django's WSGIRequest builds it, now of known length.
            request._stream = LimitedStream(io.BytesIO(body), len(body))  # type: ignore[attr-defined]
            request.META["CONTENT_LENGTH"] = str(len(body))
        return self.get_response(request)

    @staticmethod
    def limit(request: HttpRequest) -> tuple[int, str]:
        """Return the most bytes this request's body may have, and the setting that says so:
        its route's own `body_limit()`, else REQUEST_MAX_BYTES."""
        try:
            view = resolve(request.path_info).func
        except Resolver404:
            view = None
        body_limit = getattr(getattr(view, "cls", view), "body_limit", None)
        if body_limit is None:
            return settings.REQUEST_MAX_BYTES, "REQUEST_MAX_BYTES"
        return body_limit()

    @staticmethod
    def chunked(request: HttpRequest) -> bool:
        encoding = request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        return "chunked" in encoding and bool(request.META.get("wsgi.input_terminated"))

    def read_counted(self, stream: BinaryIO, limit: int) -> bytes | None:
        """Return the whole body, or None as soon as it passes `limit` bytes."""
        pieces, size = [], 0
        while piece := stream.read(min(self.CHUNK, limit + 1 - size)):
            pieces.append(piece)
            size += len(piece)
            if size > limit:
                return None
        return b"".join(pieces)

    @staticmethod
    def too_large(request: HttpRequest, size: str, limit: int, setting: str) -> HttpResponse:
        error = request_too_large(size, limit, setting)
        return json_error(request, error.status_code, error.message, error.code)


# --- the admin's own ------------------------------------------------------------------------

# The admin is the only part of the site anyone signs in to with a session; every other route
# authenticates each request by its API key or token (DRF). So sessions, the signed-in user and
# messages run for the admin's pages only: on the API they cost a twentieth of the gateway's own
# time per request (a signed-cookie reader built for messages, a session object, a lazy user)
# and gave nothing. Subclasses, so Django's admin checks still find them in MIDDLEWARE.
ADMIN_PREFIX = "/admin/"


class AdminSessionMiddleware(SessionMiddleware):
    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(ADMIN_PREFIX):
            return super().__call__(request)
        return self.get_response(request)


class AdminAuthenticationMiddleware(AuthenticationMiddleware):
    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(ADMIN_PREFIX):
            return super().__call__(request)
        return self.get_response(request)


class AdminMessageMiddleware(MessageMiddleware):
    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(ADMIN_PREFIX):
            return super().__call__(request)
        return self.get_response(request)
