"""Request parsing shared by every route."""

from typing import Any

from django.conf import settings
from rest_framework import parsers

from project.exceptions import ServiceError


class RequestTooLarge(ServiceError):
    status_code = 413
    code = "request_too_large"
    default_message = "The request body is too large."


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with a size limit.

    DRF reads JSON straight from the request stream, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE
    never applies to it; without this a client could make the server hold any amount in memory.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        limit = settings.REQUEST_MAX_BYTES
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if length and length.isdigit() and int(length) > limit:
            raise RequestTooLarge(
                f"The request body is {int(length):,} bytes; the limit is {limit:,} bytes "
                "(REQUEST_MAX_BYTES)."
            )
        return super().parse(stream, media_type, parser_context)
