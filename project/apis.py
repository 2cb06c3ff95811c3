"""Routes that need no credentials: the welcome message, health and service information."""

import logging
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from llm_api.providers import providers

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


class HealthApi(PublicApi):
    """200 when the database and the cache answer; 503 naming the part that does not."""

    checks = {"database": _check_database, "cache": _check_cache}

    @extend_schema(
        responses={
            200: inline_serializer(
                "Health", {"status": serializers.CharField(), "checks": serializers.DictField()}
            ),
            503: None,
        }
    )
    def get(self, request: Request) -> Response:
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
            return Response(
                {"status": "unavailable", "failing": failing, "checks": results}, status=503
            )
        return Response({"status": "ok", "checks": results})


class InfoApi(PublicApi):
    """Version, the default model, and which providers are configured."""

    @extend_schema(responses=inline_serializer("Info", {"version": serializers.CharField()}))
    def get(self, request: Request) -> Response:
        return Response(
            {
                "name": "LLM Service API",
                "version": settings.VERSION,
                "default_provider": settings.DEFAULT_PROVIDER,
                "default_model": f"{settings.DEFAULT_PROVIDER}/{settings.DEFAULT_MODEL}",
                "providers": {
                    provider.name: {
                        "available": provider.available,
                        **({"missing": provider.missing_setting} if not provider.available else {}),
                    }
                    for provider in providers.all()
                },
                "docs": request.build_absolute_uri("/docs"),
            }
        )
