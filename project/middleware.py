"""Request-wide plumbing that every route shares."""

import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


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
