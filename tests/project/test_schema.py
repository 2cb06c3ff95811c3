"""The OpenAPI schema at /api/schema/: valid for a strict validator, tagged by area, with
examples that match their own schemas."""

import pytest
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from project.schema import AREAS, EXAMPLES, SERVICE, TAGS, area_of

pytestmark = pytest.mark.django_db

AREA_NAMES = {tag["name"] for tag in TAGS}
STREAMING = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/api/chat/completions/",
    "/text_model/chat/stream",
    "/image_model/chat/stream",
    "/api/v1/generate",
    "/api/v1/chat",
    "/api/v1/completions",
]


@pytest.fixture
def schema(api) -> dict:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_the_schema_passes_openapi_spec_validator(schema):
    validate(schema)  # raises on the first error


def test_every_operation_is_tagged_with_its_one_area(schema):
    assert [tag["name"] for tag in schema["tags"]] == [tag["name"] for tag in TAGS]
    for path, method, operation in operations(schema):
        assert operation["tags"] == [area_of(path)], (method, path)
    used = {operation["tags"][0] for _, _, operation in operations(schema)}
    assert used == AREA_NAMES


@pytest.mark.parametrize(
    "path, area",
    [
        ("/v1/chat/completions", "OpenAI-compatible"),
        ("/v1/files/{file_id}/content", "OpenAI-compatible"),
        ("/v1/batches", "OpenAI-compatible"),
        ("/api/v1/generate", "Seed routes"),
        ("/generate", "Seed routes"),
        ("/api/chat/completions/", "Seed routes"),
        ("/api/keys/{id}/", "Keys and billing"),
        ("/api/usage/", "Keys and billing"),
        ("/api/token/refresh/", "Accounts"),
        ("/metrics", "Service"),
        ("/health", "Service"),
        ("/", "Service"),
    ],
)
def test_a_path_lands_in_its_area_even_a_route_added_later(path, area):
    assert area_of(path) == area
    assert {tag for _, tag in AREAS} | {SERVICE} == AREA_NAMES


def test_the_main_routes_have_request_and_answer_examples(schema):
    for method, path in EXAMPLES:
        operation = schema["paths"][path][method]
        request = operation["requestBody"]["content"]["application/json"]
        assert request["examples"], (method, path)
        answers = [
            content["examples"]
            for answer in operation["responses"].values()
            for content in answer.get("content", {}).values()
            if "examples" in content
        ]
        assert answers, (method, path)


def test_every_example_matches_its_own_schema(schema):
    checked = 0
    for path, method, operation in operations(schema):
        bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
        for body in bodies:
            for content in body.get("content", {}).values():
                for name, example in content.get("examples", {}).items():
                    # `#/components/…` references resolve against the root it is given.
                    root = {**content["schema"], "components": schema["components"]}
                    validator = OAS30Validator(root)
                    try:
                        validator.validate(example["value"])
                    except ValidationError as error:
                        pytest.fail(f"{method} {path} example {name!r}: {error.message}")
                    checked += 1
    assert checked >= 2 * len(EXAMPLES)


@pytest.mark.parametrize("path", STREAMING)
def test_a_streaming_route_documents_its_event_stream(schema, path):
    content = schema["paths"][path]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in content


def test_a_route_that_never_streams_documents_json_only(schema):
    for path in ["/v1/embeddings", "/v1/models", "/text_model/chat/completion", "/generate"]:
        method = "get" if path == "/v1/models" else "post"
        content = schema["paths"][path][method]["responses"]["200"]["content"]
        assert list(content) == ["application/json"], path


def test_the_signup_email_declares_no_default_that_is_not_an_email(schema):
    # An email or "" (allow_blank), and no default: "" is not an email.
    email = schema["components"]["schemas"]["SignupInputRequest"]["properties"]["email"]
    assert {"type": "string", "format": "email"} in email["oneOf"]
    assert "default" not in email


def test_redoc_links_no_font_and_keeps_images_on_the_gateway(api):
    html = api.get("/redoc").content.decode()
    assert "fonts.googleapis.com" not in html
    assert "fonts.gstatic.com" not in html
    assert "img-src 'self' data: blob:" in html


def test_swagger_ui_sends_the_schema_to_no_validator(api):
    html = api.get("/docs").content.decode()
    assert '"validatorUrl": null' in html


def test_the_sign_in_chain_is_linked_for_readers_and_the_fuzzer(schema):
    operation_ids = {operation["operationId"] for _, _, operation in operations(schema)}
    signup = schema["paths"]["/api/signup/"]["post"]["responses"]["201"]["links"]
    token = schema["paths"]["/api/token/"]["post"]["responses"]["200"]["links"]
    assert signup["SignIn"]["requestBody"]["username"] == "$request.body#/username"
    assert {token["Refresh"]["operationId"], token["SignOut"]["operationId"]} <= operation_ids
