"""Request parsing shared by every route."""

import json
import re
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils.json import strict_constant

from project.exceptions import ServiceError


class RequestTooLarge(ServiceError):
    status_code = 413
    code = "request_too_large"
    default_message = "The request body is too large."


def request_too_large(
    size: str, limit: int | None = None, setting: str = "REQUEST_MAX_BYTES"
) -> RequestTooLarge:
    """Return the 413 for a body of `size` ("41,943,040 bytes") over `limit` (by default
    REQUEST_MAX_BYTES), naming the `setting` that sets it."""
    limit = settings.REQUEST_MAX_BYTES if limit is None else limit
    return RequestTooLarge(f"The request body is {size}; the limit is {limit:,} bytes ({setting}).")


# A \uD800-\uDFFF escape: half of a surrogate pair, valid only with its other half.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_loads(text: str) -> Any:
    """Parse JSON a client sent, refusing with a ValueError that says why what Python's json
    module accepts but no other part of the stack can handle: NaN and Infinity, nesting deep
    enough to exhaust the recursion limit, and lone surrogate escapes (`"\\ud800"`), which no
    encoder can write to a database or an upstream. Every JSON a client sends goes through here:
    request bodies and JSON inside form fields alike."""
    try:
        data = json.loads(text, parse_constant=strict_constant)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    if SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(data, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ValueError(
                "a \\uD800-\\uDFFF escape without its pair is not text; send the character "
                "itself or its full surrogate pair"
            ) from None
    return data


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with a size limit, parsing through `json_loads`.

    DRF reads JSON straight from the request stream, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE
    never applies to it. RequestSizeLimitMiddleware refuses every oversized body first; this
    check stays for a stream that reached the parser some other way (the body is read at most
    one byte past the limit).
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parser_context = parser_context or {}
        request = parser_context.get("request")
        limit = settings.REQUEST_MAX_BYTES
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if length and length.isdigit() and int(length) > limit:
            raise request_too_large(f"{int(length):,} bytes")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise request_too_large(f"over {limit:,} bytes")
        try:
            return json_loads(raw.decode(parser_context.get("encoding", settings.DEFAULT_CHARSET)))
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None
