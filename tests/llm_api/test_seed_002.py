"""Seed 002 ("LLM Service API"): the README's welcome, supported-models and chat commands.

Its signup, token and refresh commands are tested in tests/accounts.
"""

import json

import pytest

from llm_api.models import UsageRecord

pytestmark = pytest.mark.usefixtures("upstream_providers")

VENUS = {
    "model": "gpt-3.5-turbo",
    "messages": [{"role": "user", "content": "How is the weather on Venus?"}],
    "stream": False,
}


def test_the_welcome_message(api, db):
    # curl http://127.0.0.1:8000/
    response = api.get("/")
    assert response.status_code == 200
    assert response.json()["message"] == "Welcome to the LLM API!"


def test_supported_models_of_gemini_with_an_access_token(alice_jwt, fake_upstream):
    # curl "http://localhost:8000/api/supported-models/?provider=gemini" \
    #   -H "Authorization: Bearer $ACCESS_TOKEN"
    fake_upstream.behave(models=["gemini-pro", "gemini-pro-vision"])
    response = alice_jwt.get("/api/supported-models/?provider=gemini")
    assert response.status_code == 200, response.content
    assert response.json() == {"models": ["gemini-pro", "gemini-pro-vision"]}
    assert fake_upstream.last.path.endswith("/models")
    assert fake_upstream.last.headers["x-goog-api-key"] == "fake-gemini-key"


@pytest.mark.parametrize("provider", ["openai", "inhouse"])
def test_supported_models_of_the_other_providers(alice_jwt, fake_upstream, provider):
    response = alice_jwt.get(f"/api/supported-models/?provider={provider}")
    assert response.status_code == 200
    assert response.json() == {"models": ["fake-model-a", "fake-model-b"]}


def test_chat_completion_from_openai_with_an_access_token(alice_jwt, fake_upstream):
    # curl -X POST "http://localhost:8000/api/chat/completions/?provider=openai" \
    #   -H "Content-Type: application/json" -H "Authorization: Bearer $ACCESS_TOKEN" -d '{...}'
    fake_upstream.behave(text="The weather on Venus is extremely inhospitable.")
    response = alice_jwt.post(
        "/api/chat/completions/?provider=openai",
        json.dumps(VENUS),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == (
        "The weather on Venus is extremely inhospitable."
    )
    assert set(body["usage"]) >= {"completion_tokens", "prompt_tokens", "total_tokens"}
    sent = fake_upstream.last
    assert (sent.path, sent.body["model"]) == ("/v1/chat/completions", "gpt-3.5-turbo")
    assert sent.body["messages"] == VENUS["messages"]
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.provider, record.model) == ("openai", "gpt-3.5-turbo")


@pytest.mark.parametrize(
    ("provider", "path"),
    [("gemini", "/v1beta/models/gemini-pro:generateContent"), ("inhouse", "/v1/chat/completions")],
)
def test_chat_completion_from_the_other_providers(alice_jwt, fake_upstream, provider, path):
    body = {**VENUS, "model": "gemini-pro" if provider == "gemini" else "smollm2"}
    response = alice_jwt.post(f"/api/chat/completions/?provider={provider}", body, format="json")
    assert response.status_code == 200, response.content
    assert fake_upstream.last.path == path


def test_an_unknown_provider_is_a_400_naming_the_choices(alice_jwt, fake_upstream):
    response = alice_jwt.get("/api/supported-models/?provider=acme")
    assert response.status_code == 400
    assert "openai" in response.json()["detail"]
    assert fake_upstream.requests == []


def test_without_a_token_the_seed_routes_are_a_401(api, db, fake_upstream):
    response = api.post("/api/chat/completions/?provider=openai", VENUS, format="json")
    assert response.status_code == 401
    assert fake_upstream.requests == []
