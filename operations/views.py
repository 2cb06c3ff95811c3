"""GET /metrics: every worker's metrics in Prometheus text format, for a scraper that knows
METRICS_TOKEN (and, when METRICS_ALLOWED_IPS is set, scrapes from one of those addresses)."""

from __future__ import annotations

import hmac
from functools import cache
from ipaddress import ip_network

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from operations.metrics import metrics_text
from project.clients import client_address, parse_address
from project.exception_handler import json_error


@cache
def allowed_networks(addresses: tuple[str, ...]) -> tuple:
    return tuple(ip_network(address.strip(), strict=False) for address in addresses if address)


def _allowed(request: HttpRequest) -> bool:
    networks = allowed_networks(tuple(settings.METRICS_ALLOWED_IPS))
    if not networks:
        return True
    address = parse_address(client_address(request))
    return address is not None and any(address in network for network in networks)


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
