"""Seed 000 ("Python API LLM"): POST /generate?prompt=… with x-api-key → {"response": …}."""

import pytest
from rest_framework.test import APIClient

from billing.models import CreditHold
from billing.money import MICRO
from billing.services import credits_grant
from llm_api.models import UsageRecord
from tests.llm_api.conftest import balance, usage_entries

pytestmark = pytest.mark.usefixtures("upstream_providers")


@pytest.fixture
def seed_client(alice_key) -> APIClient:
    """The seed's client: the key in a lower-case x-api-key header, JSON content type."""
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=alice_key)
    return api


def test_the_readme_request_answers_with_the_response(seed_client, alice, fake_upstream, settings):
    # POST /generate?prompt=Your+question+here, x-api-key, Content-Type: application/json
    fake_upstream.behave(text="Python is a language.")
    before = balance(alice)
    response = seed_client.post(
        "/generate?prompt=Your+question+here", content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"response": "Python is a language."}
    sent = fake_upstream.last.body
    assert sent["messages"] == [{"role": "user", "content": "Your question here"}]
    assert sent["model"] == settings.DEFAULT_MODEL
    [entry] = usage_entries(alice)
    assert balance(alice) == before - MICRO == before + entry.amount  # one credit, as the seed
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert record.route == "seed000.generate"


def test_the_python_example_with_a_space_in_the_prompt(seed_client, fake_upstream):
    # requests.post("http://127.0.0.1:8000/generate?prompt=Tell me about Python", headers=...)
    response = seed_client.post(
        "/generate?prompt=Tell%20me%20about%20Python", content_type="application/json"
    )
    assert response.status_code == 200
    assert fake_upstream.last.body["messages"][0]["content"] == "Tell me about Python"


def test_generate_model_picks_the_model(seed_client, fake_upstream, settings):
    settings.GENERATE_MODEL = "ollama/mistral"
    response = seed_client.post("/generate?prompt=Hi")
    assert response.status_code == 200
    assert fake_upstream.last.path == "/api/chat"
    assert fake_upstream.last.body["model"] == "mistral"


def test_a_missing_prompt_is_a_400_naming_it(seed_client, fake_upstream):
    response = seed_client.post("/generate")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_value"
    assert "prompt" in response.json()["detail"]
    assert fake_upstream.requests == []


def test_a_missing_key_is_a_401_in_the_seeds_detail_shape(api, db, fake_upstream):
    response = api.post("/generate?prompt=Hi")
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["detail"]
    assert fake_upstream.requests == []


def test_an_invalid_key_is_a_401(api, db, fake_upstream):
    api.credentials(HTTP_X_API_KEY="your-api-key")
    response = api.post("/generate?prompt=Hi")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid API key."


def test_no_credits_left_is_a_402_where_the_seed_said_401(seed_client, alice, fake_upstream):
    credits_grant(user=alice, amount=-balance(alice), note="spent")
    response = seed_client.post("/generate?prompt=Hi")
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_credits"
    assert fake_upstream.requests == []
    assert not CreditHold.objects.exists()


def test_an_upstream_failure_is_a_clear_status_never_a_500(seed_client, fake_upstream):
    fake_upstream.behave(status=503)
    response = seed_client.post("/generate?prompt=Hi")
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_error"
