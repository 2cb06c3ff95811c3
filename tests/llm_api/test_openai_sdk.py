"""The official openai client, pointed at our /v1 on a live server, works unchanged."""

import openai
import pytest

from billing.services import api_key_create, credits_grant
from tests.llm_api.conftest import balance, usage_entries

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("upstream_providers"),
]


@pytest.fixture
def sdk(live_server, alice) -> openai.OpenAI:
    _, key = api_key_create(user=alice, name="sdk")
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)


def test_chat(sdk, fake_upstream):
    fake_upstream.behave(text="Paris.", prompt_tokens=9, completion_tokens=2)
    completion = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Capital of France?"}],
        temperature=0.1,
        seed=42,
    )
    assert completion.choices[0].message.content == "Paris."
    assert completion.usage.prompt_tokens == 9
    assert completion.usage.completion_tokens == 2
    assert fake_upstream.last.body["seed"] == 42


def test_chat_streaming_with_usage(sdk, fake_upstream, alice):
    fake_upstream.behave(chunks=["Once", " upon", " a time"], prompt_tokens=4, completion_tokens=3)
    stream = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Once upon a time"
    assert chunks[-1].usage.total_tokens == 7
    [entry] = usage_entries(alice)
    assert (entry.prompt_tokens, entry.completion_tokens) == (4, 3)


def test_models_list(sdk, fake_upstream):
    ids = {model.id for model in sdk.models.list()}
    assert {"openai/fake-model-a", "inhouse/fake-model-b", "ollama/fake-model-a"} <= ids


def test_responses_create(sdk, fake_upstream):
    fake_upstream.behave(text="Arrr, grey skies.")
    response = sdk.responses.create(
        model="openai/gpt-4o-mini",
        instructions="You are a pirate.",
        input="What is the weather like today?",
        max_output_tokens=60,
    )
    assert response.output_text == "Arrr, grey skies."
    assert response.usage.output_tokens == 7
    sent = fake_upstream.last.body
    assert sent["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert sent["max_tokens"] == 60


def test_responses_stream(sdk, fake_upstream):
    fake_upstream.behave(chunks=["Ahoy", "!"])
    events = list(sdk.responses.create(model="openai/gpt-4o-mini", input="Hi", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["Ahoy", "!"]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Ahoy!"


def test_embeddings_create(sdk, fake_upstream):
    fake_upstream.behave(embedding=[0.5, -1.0, 2.0])
    result = sdk.embeddings.create(model="openai/text-embedding-3-small", input=["a", "b"])
    assert [item.embedding for item in result.data] == [[0.5, -1.0, 2.0], [1.5, 0.0, 3.0]]
    assert fake_upstream.last.body["input"] == ["a", "b"]


def test_legacy_completions(sdk, fake_upstream):
    fake_upstream.behave(text="upon a time")
    completion = sdk.completions.create(model="openai/gpt-4o-mini", prompt="Once", max_tokens=5)
    assert completion.choices[0].text == "upon a time"


def test_402_surfaces_as_the_sdk_error_with_our_message(sdk, fake_upstream, alice):
    credits_grant(user=alice, amount=-balance(alice), note="spent")
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.status_code == 402
    assert caught.value.code == "insufficient_credits"
    assert "credits" in caught.value.message.lower()
    assert fake_upstream.requests == []


def test_a_bad_parameter_surfaces_as_bad_request(sdk, fake_upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "Hi"}],
            temperature=5,
        )
    assert caught.value.param == "temperature"


def test_a_wrong_key_surfaces_as_authentication_error(live_server, fake_upstream):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
