"""OpenAPI schema details shared by every app."""

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AutoSchema(openapi.AutoSchema):
    """Name nested serializers after their view: `SignupApi.InputSerializer` → `SignupInput`.

    Views keep small nested Input/Output serializers (STYLE.md); without this every one of them
    would be the same `Input` component.
    """

    def _get_serializer_name(
        self, serializer: Any, direction: str, bypass_extensions: bool = False
    ) -> str:
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        cls = serializer if isinstance(serializer, type) else type(serializer)
        owner, _, _ = cls.__qualname__.rpartition(".")
        if owner and not name.startswith(owner):
            name = owner.split(".")[-1].removesuffix("Api") + name
        return name


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Declare API keys so Swagger UI's "Authorize" can send one (as X-API-Key)."""

    target_class = "billing.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "A key from POST /api/keys/; `Authorization: Bearer <key>` works too.",
        }
