"""GET /metrics: every worker's metrics in Prometheus text format, for a scraper that knows
METRICS_TOKEN (and, when METRICS_ALLOWED_IPS is set, scrapes from one of those addresses)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from operations.metrics import metrics_text
from project.clients import address_in, client_address, networks
from project.exception_handler import json_error


def _allowed(request: HttpRequest) -> bool:
    allowed = networks(tuple(settings.METRICS_ALLOWED_IPS))
    return not allowed or address_in(client_address(request), allowed)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404  # no token configured: there is no /metrics to find
    if not _allowed(request):
        return json_error(request, 403, "Metrics are not served to this address.", "forbidden")
    sent = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(sent.encode(), token.encode()):
        response = json_error(
            request, 401, "Send the metrics token as a Bearer token.", "unauthorized"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
