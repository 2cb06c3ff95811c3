"""Request parsing shared by every route."""

import json
import re
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from project.exceptions import ServiceError


class RequestTooLarge(ServiceError):
    status_code = 413
    code = "request_too_large"
    default_message = "The request body is too large."


# A \uD800-\uDFFF escape: half of a surrogate pair, valid only with its other half.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON; send a number or null")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with a size limit, refusing what would break later.

    DRF reads JSON straight from the request stream, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE
    never applies to it; without the limit a client could make the server hold any amount in
    memory (the body is read at most one byte past the limit, so a chunked body is bounded too).
    Python's json module accepts two things no other part of the stack can handle: nesting deep
    enough to exhaust the recursion limit, and lone surrogate escapes (`"\\ud800"`), which no
    encoder can write to a database or an upstream. Both are 400s here.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parser_context = parser_context or {}
        request = parser_context.get("request")
        limit = settings.REQUEST_MAX_BYTES
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if length and length.isdigit() and int(length) > limit:
            raise self._too_large(f"{int(length):,} bytes")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise self._too_large(f"over {limit:,} bytes")
        try:
            data = json.loads(
                raw.decode(parser_context.get("encoding", settings.DEFAULT_CHARSET)),
                parse_constant=_reject_constant,
            )
            if SURROGATE_ESCAPE.search(raw):
                json.dumps(data, ensure_ascii=False).encode()
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        except UnicodeEncodeError:
            raise ParseError(
                "JSON parse error - a \\uD800-\\uDFFF escape without its pair is not text; "
                "send the character itself or its full surrogate pair."
            ) from None
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None
        return data

    @staticmethod
    def _too_large(size: str) -> RequestTooLarge:
        return RequestTooLarge(
            f"The request body is {size}; the limit is {settings.REQUEST_MAX_BYTES:,} bytes "
            "(REQUEST_MAX_BYTES)."
        )
