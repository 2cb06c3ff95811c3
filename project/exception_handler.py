"""One error shape for the whole API.

Every failure becomes `{"detail": message, "code": code}` (plus `"errors"` with each field's
messages when input was invalid), or, on views that set `error_format = "openai"`, OpenAI's
`{"error": {"message", "type", "param", "code"}}` so the OpenAI SDKs raise their own error classes,
or, with `error_format = "seed003"`, seed 003's `{"error": short type, "message": message}`.
"""

import logging
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError
from django.http import Http404, HttpRequest, JsonResponse
from redis.exceptions import RedisError
from rest_framework import exceptions, status
from rest_framework.response import Response

from project.exceptions import ServiceError

logger = logging.getLogger(__name__)

MISSING_CREDENTIALS = (
    "Missing credentials. Send your API key in the X-API-Key header or as "
    "Authorization: Bearer <key> (or a JWT access token as Authorization: Bearer <token>)."
)

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError:
    """The parts of one error answer, before they are shaped for a route family."""

    def __init__(
        self,
        status_code: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        errors: Any = None,
        headers: dict[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.errors = errors
        self.headers = headers or {}
        self.error_type = error_type or OPENAI_TYPES.get(status_code, "api_error")

    @property
    def short_type(self) -> str:
        """Return the status's reason phrase, e.g. "Bad Request"."""
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return "Error"

    def body(self, error_format: str) -> dict[str, Any]:
        """Return the JSON body in the route family's shape."""
        if error_format == "openai":
            return {
                "error": {
                    "message": self.message,
                    "type": self.error_type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        if error_format == "seed003":
            return {"error": self.short_type, "message": self.message, "code": self.code}
        body: dict[str, Any] = {"detail": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def first_error(detail: Any, path: str = "") -> tuple[str, str]:
    """Return (parameter path, message) of the first message in a DRF error structure."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = path if key == "non_field_errors" else f"{path}.{key}" if path else str(key)
            return first_error(value, name)
    if isinstance(detail, list) and detail:
        if all(isinstance(item, str) for item in detail):
            return path, str(detail[0])
        for index, item in enumerate(detail):
            if item:
                return first_error(item, f"{path}.{index}" if path else str(index))
    return path, str(detail)


def to_api_error(exc: Exception) -> ApiError | None:
    """Translate a known exception into an ApiError; None for anything unexpected."""
    if isinstance(exc, ServiceError):
        return ApiError(
            exc.status_code,
            exc.message,
            exc.code,
            param=exc.param,
            headers=exc.headers,
            error_type=exc.error_type,
        )
    if isinstance(exc, DatabaseError | RedisError):
        # The gateway's own database or shared cache failed (down, restarting, its pool busy
        # past its wait): nothing the client did, and worth trying again shortly.
        part = "database" if isinstance(exc, DatabaseError) else "cache"
        logger.warning("The %s is unavailable: %s", part, exc)
        return ApiError(
            503,
            f"The gateway's {part} is unavailable; try again shortly.",
            f"{part}_unavailable",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return ApiError(
            413,
            f"The request's form fields are larger than the {limit:,}-byte limit; send files "
            "as file uploads.",
            "request_too_large",
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return ApiError(400, "The request has too many form fields or files.", "too_many_fields")
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None
    headers = {}
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, exceptions.ValidationError):
        param, message = first_error(exc.detail)
        text = f"{param}: {message}" if param else message
        return ApiError(400, text, "invalid_value", param=param or None, errors=exc.detail)
    detail, codes = exc.detail, exc.get_codes()
    if isinstance(detail, dict):  # simplejwt: {"detail": ..., "code": ..., "messages": [...]}
        message = str(detail.get("detail", exc.default_detail))
        code = str(codes.get("code") or codes.get("detail") or exc.default_code)
    else:
        message, code = str(detail), codes if isinstance(codes, str) else exc.default_code
    return ApiError(exc.status_code, message, code, headers=headers)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: shape every known error; log and hide anything unexpected."""
    view = context.get("view")
    error_format = getattr(view, "error_format", "detail")
    error = to_api_error(exc)
    if error is None:
        logger.exception("Unhandled error in %s", type(view).__name__ if view else "a view")
        error = ApiError(500, "The server hit an unexpected error.", "server_error")
    if isinstance(exc, exceptions.NotAuthenticated):
        # A seed-compatible view may word it as the seed did.
        error.message = getattr(view, "missing_credentials_message", MISSING_CREDENTIALS)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        # Every route takes a key or a token, so a missing or bad credential is always a 401.
        error.status_code = status.HTTP_401_UNAUTHORIZED
        error.headers.setdefault("WWW-Authenticate", getattr(exc, "auth_header", None) or "Bearer")
    response = Response(error.body(error_format), status=error.status_code)
    for name, value in error.headers.items():
        response[name] = value
    return response


def json_error(request: HttpRequest, status_code: int, message: str, code: str) -> JsonResponse:
    """Return an error outside DRF (URL not found, crash) in the shape its path expects."""
    error = ApiError(status_code, message, code)
    error_format = "openai" if request.path.startswith("/v1/") else "detail"
    return JsonResponse(error.body(error_format), status=status_code)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404: a JSON 404 naming the path, never Django's HTML page."""
    return json_error(
        request, 404, f"No route matches {request.method} {request.path}.", "not_found"
    )


def server_error(request: HttpRequest) -> JsonResponse:
    """handler500: a JSON 500 with no traceback."""
    return json_error(request, 500, "The server hit an unexpected error.", "server_error")
