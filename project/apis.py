"""Routes that need no credentials: the welcome message, health and service information."""

import logging
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from llm_api.providers.health import provider_health

logger = logging.getLogger(__name__)


class PublicApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]


class WelcomeApi(PublicApi):
    """The welcome message; if this does not answer, the server is not running."""

    @extend_schema(responses=inline_serializer("Welcome", {"message": serializers.CharField()}))
    def get(self, request: Request) -> Response:
        return Response(
            {
                "message": "Welcome to the LLM API!",
                "docs": request.build_absolute_uri("/docs"),
                "redoc": request.build_absolute_uri("/redoc"),
                "schema": request.build_absolute_uri("/api/schema/"),
                "openai_base_url": request.build_absolute_uri("/v1"),
            }
        )


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_cache() -> None:
    key = f"health:{uuid.uuid4().hex}"
    cache.set(key, "ok", 5)
    if cache.get(key) != "ok":
        raise RuntimeError("the cache did not return what was written")
    cache.delete(key)


class ProviderTimeoutsSerializer(serializers.Serializer):
    connect = serializers.FloatField()
    first_byte = serializers.FloatField()
    gap = serializers.FloatField()
    total = serializers.FloatField(allow_null=True, help_text="null: no limit")


class ProviderStatusSerializer(serializers.Serializer):
    configured = serializers.BooleanField(help_text="Whether it has the settings it needs.")
    reachable = serializers.BooleanField(
        allow_null=True, help_text="Whether it listed its models; null when not configured."
    )
    missing = serializers.CharField(required=False, help_text="The variable to set.")
    latency_ms = serializers.IntegerField(required=False)
    error = inline_serializer(
        "ProviderProbeError",
        {"code": serializers.CharField(), "message": serializers.CharField()},
        required=False,
    )
    timeouts = ProviderTimeoutsSerializer(help_text="Seconds the gateway waits on it.")


class HealthOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(["ok", "unavailable"])
    checks = serializers.DictField(child=serializers.CharField())
    failing = serializers.ListField(child=serializers.CharField(), required=False)
    providers = serializers.DictField(
        child=ProviderStatusSerializer(), required=False, help_text="With deep=1 only."
    )
    providers_down = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="With deep=1: the configured providers that did not answer their probe.",
    )
    checked_at = serializers.DateTimeField(
        required=False, help_text="With deep=1: when the providers were probed."
    )


class HealthApi(PublicApi):
    """200 when the database and the cache answer; 503 naming the part that does not. With
    deep=1 also each provider's configuration and reachability (cached a few seconds), which
    never changes the status: a load balancer must not drop the gateway for one provider."""

    checks = {"database": _check_database, "cache": _check_cache}

    class QuerySerializer(serializers.Serializer):
        deep = serializers.BooleanField(required=False, default=False)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "deep",
                bool,
                description="Also probe each configured provider (its model list, at most "
                "PROVIDER_HEALTH_TIMEOUT seconds each, cached PROVIDER_HEALTH_CACHE_SECONDS).",
            )
        ],
        responses={200: HealthOutputSerializer, 503: HealthOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        body, status = self._gateway_health()
        if query.validated_data["deep"]:
            body.update(provider_health.report())
        return Response(body, status=status)

    def _gateway_health(self) -> tuple[dict, int]:
        results = {}
        for name, check in self.checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as error:  # any failure of the part is the answer, never a 500
                logger.warning("Health check %s failed: %s", name, type(error).__name__)
                results[name] = f"unavailable ({type(error).__name__})"
        failing = [name for name, result in results.items() if result != "ok"]
        if failing:
            return {"status": "unavailable", "failing": failing, "checks": results}, 503
        return {"status": "ok", "checks": results}, 200


class InfoProviderSerializer(ProviderStatusSerializer):
    available = serializers.BooleanField(
        help_text="Configured and answering its probe: whether a call to it can succeed now."
    )


class InfoOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    default_provider = serializers.CharField()
    default_model = serializers.CharField()
    providers = serializers.DictField(child=InfoProviderSerializer())
    providers_down = serializers.ListField(child=serializers.CharField())
    checked_at = serializers.DateTimeField()
    docs = serializers.URLField()


class InfoApi(PublicApi):
    """Version, the default model, and each provider's configuration and reachability (the
    report of /health?deep=1, cached a few seconds)."""

    @extend_schema(responses=InfoOutputSerializer)
    def get(self, request: Request) -> Response:
        report = provider_health.report()
        return Response(
            {
                "name": "LLM Service API",
                "version": settings.VERSION,
                "default_provider": settings.DEFAULT_PROVIDER,
                "default_model": f"{settings.DEFAULT_PROVIDER}/{settings.DEFAULT_MODEL}",
                "providers": {
                    # Not `configured` alone: a configured Ollama that nothing answers for is
                    # not available, and clients (seed 003's) read this key.
                    name: {"available": status["reachable"] is True, **status}
                    for name, status in report["providers"].items()
                },
                "providers_down": report["providers_down"],
                "checked_at": report["checked_at"],
                "docs": request.build_absolute_uri("/docs"),
            }
        )
