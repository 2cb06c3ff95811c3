"""Bad input never produces a 500: every route, every method, a catalogue of malformed bodies.

The routes come from the URL resolver, so a route added later is covered without touching this
file. Requests go through the real middleware, authentication and parsers with a valid API key
(and once with a JWT), against the fake upstream, so a body that happens to be valid is answered
by a real provider call rather than a hanging connection.
"""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from billing.services import api_key_create
from tests.conftest import jwt_client

SKIPPED_PREFIXES = ("admin/", "static/")


def _routes(patterns=None, prefix: str = "") -> list[str]:
    """Every concrete path the URLconf serves, with `<int:pk>` filled by a placeholder."""
    routes = []
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if route.startswith(SKIPPED_PREFIXES):
            continue
        if isinstance(pattern, URLResolver):
            routes += _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            routes.append("/" + route.replace("<int:pk>", "{pk}"))
    return sorted(set(routes))


ROUTES = _routes()

# Each a (content type, raw body) pair a client can get wrong.
JSON_BODIES = [
    b"",
    b"{",
    b'{"messages": [}',
    b"null",
    b"[]",
    b'"a string"',
    b"42",
    b"1e999",
    b"NaN",
    b"\xff\xfe not utf-8",
    b'{"messages": null, "prompt": null, "input": null, "model": null}',
    b'{"messages": "hello", "prompt": [], "input": {}, "model": 7}',
    b'{"messages": [null, 1, "x", []]}',
    b'{"messages": [{"role": 7, "content": {"a": 1}}]}',
    b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": '
    b'{"url": "data:image/png;base64,!!!"}}]}]}',
    b'{"messages": [{"role": "wizard", "content": "hi"}], "model": "nowhere/none"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot", '
    b'"max_tokens": 1e400, "n": -1, "top_p": [], "stop": {}, "seed": "s", '
    b'"stream": "yes", "stream_options": 3, "response_format": "json"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999999999999999999999}',
    b'{"messages": [{"role": "user", "content": "\\u0000\\ud800"}], "user": "\\u0000"}',
    b'{"prompt": "\\u0000", "model": "\\ud800", "stream": null}',
    b'{"input": [{"role": "user", "content": 5}], "instructions": [], "max_output_tokens": 0}',
    b'{"username": "\\u0000", "password": null, "email": []}',
    b'{"username": ["alice"], "password": {"a": 1}}',
    b'{"refresh": 5}',
    b'{"refresh": "a.b.c"}',
    b'{"name": "\\u0000", "allowed_models": "gpt", "spend_cap": "lots", "expires_at": "never",'
    b' "rpm_limit": -5, "owner": 1, "is_staff": true}',
    b'{"name": ["x"], "allowed_models": [1, null], "spend_cap": 1e400}',
    b"[" * 5000 + b"]" * 5000,
]
FORM_BODIES = [
    ("application/x-www-form-urlencoded", b"messages=hello&prompt=%00&temperature=hot"),
    ("application/x-www-form-urlencoded", b"%zz=%zz&&=&image=1"),
    ("multipart/form-data", b"not really multipart"),
    ("multipart/form-data; boundary=xx", b"--xx\r\nContent-Disposition: form-data\r\n\r\nx"),
    (
        "multipart/form-data; boundary=xx",
        b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\nnot a png\r\n"
        b'--xx\r\nContent-Disposition: form-data; name="temperature"\r\n\r\nhot\r\n--xx--\r\n',
    ),
    ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(2000))),
    (
        "multipart/form-data; boundary=xx",
        b'--xx\r\nContent-Disposition: form-data; name="response_format"\r\n\r\n'
        + b"[" * 100_000
        + b'\r\n--xx\r\nContent-Disposition: form-data; name="max_tokens"\r\n\r\n1e999\r\n'
        b"--xx--\r\n",
    ),
    ("text/plain", b"hello"),
    ("application/xml", b"<messages/>"),
]
QUERIES = [
    "",
    "?provider=nowhere&prompt=%00&since=yesterday&until=2026-13-45&kind=bogus&page=-1",
    "?provider=&prompt=&date_from=%00&date_to=0&kind=&page=abc&page_size=1e9",
    "?prompt[]=a&prompt=b&provider=openai&provider=gemini",
    "?" + "&".join(f"q{i}=1" for i in range(2000)),
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _assert_answered(response, what: str) -> None:
    assert response.status_code < 500, f"{what} -> {response.status_code}: {response.content!r}"
    if response.status_code >= 400 and response["Content-Type"].startswith("application/json"):
        body = response.json()
        assert body, f"{what} -> an empty error body"


@pytest.fixture
def clients(alice, upstream_providers, settings):
    """Alice by API key and by JWT; the id of one of her keys; every provider on the fake, and
    an image model that takes images, so the image routes read their forms."""
    settings.IMAGE_MODEL = "openai/gpt-4o"
    upstream_providers.behave(text="fine")
    key_id = api_key_create(user=alice, name="spare")[0].pk
    by_key = APIClient()
    by_key.credentials(
        HTTP_X_API_KEY=api_key_create(user=alice, name="fuzz", scopes=["models", "manage"])[1]
    )
    return {"key": by_key, "jwt": jwt_client(alice)}, key_id


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES)
def test_no_malformed_request_gets_a_500(clients, route):
    by_client, key_id = clients
    path = route.format(pk=key_id)
    for who, client in by_client.items():
        for method in METHODS:
            for query in QUERIES:
                response = client.generic(method, path + query)
                _assert_answered(response, f"{who} {method} {path}{query}")
            for body in JSON_BODIES:
                response = client.generic(method, path, body, "application/json")
                _assert_answered(response, f"{who} {method} {path} {body[:80]!r}")
            for content_type, body in FORM_BODIES:
                response = client.generic(method, path, body, content_type)
                _assert_answered(response, f"{who} {method} {path} {content_type}")


def test_the_routes_under_test_include_every_api():
    """The resolver walk above really finds the routes, so the test cannot pass on none."""
    expected = {
        "/v1/chat/completions",
        "/v1/responses",
        "/api/signup/",
        "/api/keys/{pk}/",
        "/generate",
        "/image_model/chat/stream",
        "/api/v1/chat",
        "/health",
    }
    assert expected <= set(ROUTES)
