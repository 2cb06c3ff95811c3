"""Seed 004 ("Local Chat Completion API"): /v1/chat/completions with n, /v1/responses.

The seed ran without a key when none was configured; we always require one, so each command
here adds the seed's own `x-api-key` header.
"""

import pytest

pytestmark = pytest.mark.usefixtures("upstream_providers")

CAPITAL = {
    "model": "llama3.2",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
}


def test_the_chat_completions_example(key_api, fake_upstream, settings):
    fake_upstream.behave(text="The capital of France is Paris.")
    response = key_api.post("/v1/chat/completions", CAPITAL, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == f"{settings.DEFAULT_PROVIDER}/llama3.2"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == "The capital of France is Paris."
    assert fake_upstream.last.body["messages"] == CAPITAL["messages"]
    assert fake_upstream.last.body["model"] == "llama3.2"


@pytest.mark.parametrize("provider", ["inhouse", "ollama"])
def test_n_gives_that_many_choices_on_a_provider_without_native_n(
    key_api, fake_upstream, settings, provider
):
    settings.DEFAULT_PROVIDER = provider
    fake_upstream.behave(text="Paris.")
    response = key_api.post(
        "/v1/chat/completions", {**CAPITAL, "n": 2, "temperature": 0.9}, format="json"
    )
    assert response.status_code == 200, response.content
    choices = response.json()["choices"]
    assert [c["message"]["content"] for c in choices] == ["Paris.", "Paris."]
    assert len(fake_upstream.requests) == 2


def test_the_responses_example_with_instructions(key_api, fake_upstream, settings):
    fake_upstream.behave(text="Arrr, the skies be grey.")
    response = key_api.post(
        "/v1/responses",
        {
            "model": "llama3.2",
            "instructions": "You are a pirate. Always respond in pirate speak.",
            "input": "What is the weather like today?",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == f"{settings.DEFAULT_PROVIDER}/llama3.2"
    [message] = body["output"]
    assert message["role"] == "assistant"
    assert message["content"][0]["text"] == "Arrr, the skies be grey."
    assert fake_upstream.last.body["messages"] == [
        {"role": "system", "content": "You are a pirate. Always respond in pirate speak."},
        {"role": "user", "content": "What is the weather like today?"},
    ]


def test_the_authentication_example(key_api, fake_upstream):
    # curl … -H "x-api-key: your-secret-key" -d '{"input": "Hello"}' (key_api sends x-api-key)
    response = key_api.post("/v1/responses", {"input": "Hello"}, format="json")
    assert response.status_code == 200
    assert fake_upstream.last.body["messages"] == [{"role": "user", "content": "Hello"}]


def test_temperature_reaches_the_model(key_api, fake_upstream):
    response = key_api.post("/v1/responses", {"input": "Hi", "temperature": 0.2}, format="json")
    assert response.status_code == 200
    assert fake_upstream.last.body["temperature"] == 0.2


def test_without_a_key_we_answer_401_where_the_seed_could_run_open(api, db, fake_upstream):
    response = api.post("/v1/chat/completions", CAPITAL, format="json")
    assert response.status_code == 401
    assert fake_upstream.requests == []
