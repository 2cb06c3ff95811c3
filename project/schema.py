"""OpenAPI schema details shared by every app."""

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension

from llm_api.negotiation import GatewayContentNegotiation


class AutoSchema(openapi.AutoSchema):
    """Name nested serializers after their view: `SignupApi.InputSerializer` → `SignupInput`.

    Views keep small nested Input/Output serializers (STYLE.md); without this every one of them
    would be the same `Input` component.
    """

    def _get_format_parameters(self) -> list[dict[str, Any]]:
        # These views answer by the Accept header and the body, never by a `?format=`.
        if isinstance(self.view.get_content_negotiator(), GatewayContentNegotiation):
            return []
        return super()._get_format_parameters()

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


# --- Areas (tags) ------------------------------------------------------------------------------

ACCOUNTS = "Accounts"
KEYS_AND_BILLING = "Keys and billing"
OPENAI_COMPATIBLE = "OpenAI-compatible"
SEED_ROUTES = "Seed routes"
SERVICE = "Service"

# The tag of each area, by path prefix; the first match wins and a path none matches is a
# Service route. Tagged here, by path, rather than on each view, so that a new route lands in
# its area without anyone remembering to tag it.
AREAS = [
    ("/v1/", OPENAI_COMPATIBLE),
    ("/api/v1/", SEED_ROUTES),
    ("/api/chat/completions/", SEED_ROUTES),
    ("/api/supported-models/", SEED_ROUTES),
    ("/generate", SEED_ROUTES),
    ("/text_model/", SEED_ROUTES),
    ("/image_model/", SEED_ROUTES),
    ("/api/keys/", KEYS_AND_BILLING),
    ("/api/billing/", KEYS_AND_BILLING),
    ("/api/usage/", KEYS_AND_BILLING),
    ("/api/signup/", ACCOUNTS),
    ("/api/token/", ACCOUNTS),
    ("/api/logout/", ACCOUNTS),
    ("/api/me/", ACCOUNTS),
]

TAGS = [
    {
        "name": OPENAI_COMPATIBLE,
        "description": "OpenAI's API (`/v1`), for the OpenAI SDKs unchanged: chat completions, "
        'completions, embeddings, responses, models. Streamed with `"stream": true`.',
    },
    {
        "name": SEED_ROUTES,
        "description": "The routes of the systems this gateway replaces, in their own shapes and "
        "error shapes: seed 000 (`/generate`), 001 (`/text_model`, `/image_model`), 002 "
        "(`/api/chat/completions/?provider=`), 003 (`/api/v1/…`).",
    },
    {"name": ACCOUNTS, "description": "Sign up, sign in (JWT), the signed-in user."},
    {
        "name": KEYS_AND_BILLING,
        "description": "API keys (shown once), credits, the ledger and usage.",
    },
    {"name": SERVICE, "description": "Welcome, health and service information; no key needed."},
]


def area_of(path: str) -> str:
    """Return the tag of the area a path belongs to."""
    return next((tag for prefix, tag in AREAS if path.startswith(prefix)), SERVICE)


def tag_by_area(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """POSTPROCESSING_HOOKS: tag every operation with its area, and only with it."""
    result["tags"] = TAGS
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["tags"] = [area_of(path)]
    return result


# --- Examples ----------------------------------------------------------------------------------

HELLO = [{"role": "user", "content": "Say hello"}]
MODEL = "inhouse/smollm2-135m-instruct"
USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
# (method, path) → {"request": [(name, value)…], "response": (status, value)}
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/chat/completions"): {
        "request": [
            ("whole", {"model": MODEL, "messages": HELLO}),
            ("streamed", {"model": MODEL, "messages": HELLO, "stream": True}),
        ],
        "response": (
            "200",
            {
                "id": "chatcmpl-5f0c2a9e8d7b4c1a",
                "object": "chat.completion",
                "created": 1764190800,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": USAGE,
                "system_fingerprint": None,
            },
        ),
    },
    ("post", "/v1/completions"): {
        "request": [("prompt", {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 16})],
        "response": (
            "200",
            {
                "id": "cmpl-5f0c2a9e8d7b4c1a",
                "object": "text_completion",
                "created": 1764190800,
                "model": MODEL,
                "choices": [
                    {"text": ", a fox", "index": 0, "logprobs": None, "finish_reason": "length"}
                ],
                "usage": USAGE,
            },
        ),
    },
    ("post", "/v1/embeddings"): {
        "request": [("text", {"model": "openai/text-embedding-3-small", "input": "Hello"})],
        "response": (
            "200",
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0123, -0.0456]}],
                "model": "openai/text-embedding-3-small",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        ),
    },
    ("post", "/v1/responses"): {
        "request": [
            ("text", {"model": MODEL, "instructions": "Be brief.", "input": "Say hello"}),
        ],
        "response": (
            "200",
            {
                "id": "resp_5f0c2a9e8d7b4c1a",
                "object": "response",
                "created_at": 1764190800,
                "status": "completed",
                "model": MODEL,
                "output": [
                    {
                        "id": "msg_5f0c2a9e8d7b4c1a",
                        "type": "message",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
                    }
                ],
                "usage": {"input_tokens": 9, "output_tokens": 3, "total_tokens": 12},
            },
        ),
    },
    ("post", "/api/signup/"): {
        "request": [
            (
                "signup",
                {
                    "username": "alice",
                    "password": "correct-horse-battery-staple",
                    "email": "alice@example.com",
                },
            )
        ],
        "response": (
            "201",
            {
                "message": "User created successfully",
                "user": {
                    "id": 1,
                    "username": "alice",
                    "email": "alice@example.com",
                    "is_staff": False,
                    "date_joined": "2026-11-26T21:00:00Z",
                },
            },
        ),
    },
    ("post", "/api/token/"): {
        "request": [("sign in", {"username": "alice", "password": "correct-horse-battery-staple"})],
        "response": ("200", {"access": "eyJhbGciOiJIUzI1NiIs…", "refresh": "eyJhbGciOiJIUzI1…"}),
    },
    ("post", "/api/keys/"): {
        "request": [
            ("a key", {"name": "laptop"}),
            (
                "a narrow key",
                {
                    "name": "ci",
                    "allowed_models": ["openai/gpt-4o-mini"],
                    "spend_cap": "10.000000",
                    "rpm_limit": 60,
                    "expires_in_days": 30,
                },
            ),
        ],
        "response": (
            "201",
            {
                "key": "sk-llm-06ShCUwmGxObe2q99afUsUDY1e3vpsCQpLmoRmh",
                "id": 1,
                "name": "laptop",
                "prefix": "sk-llm-06Sh",
                "last4": "oRmh",
                "masked": "sk-llm-06Sh…oRmh",
                "status": "active",
                "created_at": "2026-11-26T21:00:00Z",
                "last_used_at": None,
                "expires_at": None,
                "revoked_at": None,
                "allowed_models": [],
                "spend_cap": None,
                "spent": "0.000000",
                "held": "0.000000",
                "rpm_limit": None,
                "tpm_limit": None,
                "concurrency_limit": None,
                "scopes": ["models"],
            },
        ),
    },
}


def add_examples(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """POSTPROCESSING_HOOKS: the request and answer examples of the main routes (EXAMPLES)."""
    for (method, path), examples in EXAMPLES.items():
        operation = result.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            body["examples"] = {name: {"value": value} for name, value in examples["request"]}
        status, value = examples["response"]
        answer = operation["responses"].get(status, {}).get("content", {}).get("application/json")
        if answer is not None:
            answer["examples"] = {"answer": {"value": value}}
    return result


# --- Links -------------------------------------------------------------------------------------

# What one answer lets a client do next, for readers and for schemathesis' stateful phase
# (tests/project/test_fuzz.py), which also infers the key links (POST /api/keys/ → /{id}/).
LINKS: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {
    ("post", "/api/signup/", "201"): {
        "SignIn": {
            "operationId": "api_token_create",
            "requestBody": {
                "username": "$request.body#/username",
                "password": "$request.body#/password",
            },
            "description": "Sign in as the user just created.",
        }
    },
    ("post", "/api/token/", "200"): {
        "Refresh": {
            "operationId": "api_token_refresh_create",
            "requestBody": {"refresh": "$response.body#/refresh"},
            "description": "A new access token from the refresh token.",
        },
        "SignOut": {
            "operationId": "api_logout_create",
            "requestBody": {"refresh": "$response.body#/refresh"},
            "description": "Revoke the refresh token.",
        },
    },
}


def add_links(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """POSTPROCESSING_HOOKS: the links of LINKS, where both ends are in the schema."""
    operation_ids = {
        operation.get("operationId")
        for operations in result.get("paths", {}).values()
        for operation in operations.values()
        if isinstance(operation, dict)
    }
    for (method, path, status), links in LINKS.items():
        answer = result.get("paths", {}).get(path, {}).get(method, {}).get("responses", {})
        present = {n: link for n, link in links.items() if link["operationId"] in operation_ids}
        if status in answer and present:
            answer[status]["links"] = present
    return result
