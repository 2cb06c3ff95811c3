"""What a client's Accept header gets from the LLM routes (llm_api/negotiation.py).

A streamed call answers Server-Sent Events to `text/event-stream`, `*/*`, `application/json` or
no Accept; a whole answer is JSON to `application/json`, `*/*` or none; an Accept a route cannot
satisfy is a 406 in the route's own error shape, before anything is charged or sent upstream.
"""

import pytest
from rest_framework.test import APIClient

from billing.models import CreditAccount, CreditHold
from billing.services import api_key_create
from llm_api.negotiation import admits
from tests.llm_api.seed_support import sse_data

pytestmark = pytest.mark.usefixtures("upstream_providers")

HI = [{"role": "user", "content": "Hi"}]
# (path, body) of every route that can stream, with "stream": true.
STREAMED = {
    "/v1/chat/completions": {"model": "openai/gpt-4o-mini", "messages": HI, "stream": True},
    "/v1/completions": {"model": "openai/gpt-4o-mini", "prompt": "Hi", "stream": True},
    "/v1/responses": {"model": "openai/gpt-4o-mini", "input": "Hi", "stream": True},
    "/api/chat/completions/?provider=openai": {
        "model": "gpt-4o-mini",
        "messages": HI,
        "stream": True,
    },
    "/text_model/chat/stream": {"messages": HI},
    "/api/v1/generate": {"model": "openai/gpt-4o-mini", "prompt": "Hi", "stream": True},
    "/api/v1/chat": {"model": "openai/gpt-4o-mini", "messages": HI, "stream": True},
    "/api/v1/completions": {"model": "openai/gpt-4o-mini", "prompt": "Hi", "stream": True},
}


@pytest.fixture
def key_api(alice) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=api_key_create(user=alice, name="negotiation")[1])
    return api


@pytest.fixture(autouse=True)
def _seed_models(settings):
    settings.TEXT_MODEL = "openai/gpt-4o-mini"


def post(client: APIClient, path: str, body: dict, accept: str | None):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    return client.post(path, body, format="json", **headers)


@pytest.mark.parametrize("path", STREAMED)
def test_every_streaming_route_answers_an_sse_client(key_api, fake_upstream, path):
    fake_upstream.behave(chunks=["Hel", "lo"])
    response = post(key_api, path, STREAMED[path], "text/event-stream")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/event-stream")
    assert sse_data(response), "no event came"


@pytest.mark.parametrize(
    "accept", ["*/*", "application/json", None, "text/*", "application/json, text/plain, */*"]
)
def test_a_streamed_call_answers_server_sent_events_to_the_sdks_accept_too(
    key_api, fake_upstream, accept
):
    fake_upstream.behave(chunks=["Hel", "lo"])
    response = post(key_api, "/v1/chat/completions", STREAMED["/v1/chat/completions"], accept)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/event-stream")
    assert sse_data(response)[-1] == "[DONE]"


@pytest.mark.parametrize("accept", ["application/json", "*/*", None, "application/*"])
def test_a_whole_answer_is_json(key_api, fake_upstream, accept):
    fake_upstream.behave(text="Hello")
    body = {"model": "openai/gpt-4o-mini", "messages": HI}
    response = post(key_api, "/v1/chat/completions", body, accept)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["choices"][0]["message"]["content"] == "Hello"


def test_a_whole_answer_to_a_stream_only_client_is_406_before_anything_is_charged(
    key_api, alice, fake_upstream
):
    before = CreditAccount.objects.get(user=alice).balance
    body = {"model": "openai/gpt-4o-mini", "messages": HI, "stream": False}
    response = post(key_api, "/v1/chat/completions", body, "text/event-stream")
    assert response.status_code == 406
    error = response.json()["error"]
    assert error["code"] == "not_acceptable"
    assert error["type"] == "invalid_request_error"
    assert '"stream": true' in error["message"]
    assert fake_upstream.requests == []
    assert not CreditHold.objects.exists()
    assert CreditAccount.objects.get(user=alice).balance == before


@pytest.mark.parametrize(
    "path, body, shape",
    [
        ("/v1/chat/completions", STREAMED["/v1/chat/completions"], "openai"),
        ("/v1/embeddings", {"model": "openai/text-embedding-3-small", "input": "Hi"}, "openai"),
        ("/api/v1/generate", STREAMED["/api/v1/generate"], "seed003"),
        ("/text_model/chat/stream", STREAMED["/text_model/chat/stream"], "detail"),
    ],
)
def test_an_accept_no_route_can_satisfy_is_406_in_the_route_error_shape(
    key_api, fake_upstream, path, body, shape
):
    response = post(key_api, path, body, "text/html, application/xml;q=0.9")
    assert response.status_code == 406
    assert response["Content-Type"] == "application/json"
    data = response.json()
    if shape == "openai":
        assert data["error"]["code"] == "not_acceptable"
        assert "text/html" in data["error"]["message"]
    elif shape == "seed003":
        assert data["error"] == "Not Acceptable"
        assert data["code"] == "not_acceptable"
    else:
        assert data["code"] == "not_acceptable"
        assert "text/html" in data["detail"]
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/embeddings", {"model": "openai/text-embedding-3-small", "input": "Hi"}),
        ("/text_model/chat/completion", {"messages": HI}),
        ("/generate?prompt=Hi", {}),
    ],
)
def test_a_route_that_never_streams_refuses_a_stream_only_client(
    key_api, fake_upstream, path, body
):
    response = post(key_api, path, body, "text/event-stream")
    assert response.status_code == 406, response.content
    assert fake_upstream.requests == []


def test_an_error_on_a_streamed_call_is_json_whatever_the_accept():
    # OpenAI's API does the same: a client reads an error by its status code, then its body.
    body = STREAMED["/v1/chat/completions"]
    response = post(APIClient(), "/v1/chat/completions", body, "text/event-stream")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["type"] == "authentication_error"


def test_the_models_list_takes_the_openai_sdk_accept(key_api):
    response = key_api.get("/v1/models", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response.json()["object"] == "list"


@pytest.mark.parametrize(
    "accept, media_type, admitted",
    [
        ("text/event-stream", "text/event-stream", True),
        ("text/*", "text/event-stream", True),
        ("*/*;q=0.1", "application/json", True),
        ("application/json;q=0", "application/json", False),
        ("*/*, application/json;q=0", "application/json", False),
        ("application/json;q=0, */*", "text/event-stream", True),
        ("text/html, application/xml", "application/json", False),
        ("garbage, , ;;", "application/json", False),
        ("application/json;q=nonsense", "application/json", False),
    ],
)
def test_an_accept_header_admits_by_its_most_specific_range(accept, media_type, admitted):
    assert admits(accept, media_type) is admitted
