"""The in-house provider (llama.cpp's OpenAI-compatible server) against the fake upstream.

The wire protocol is OpenAI's and is tested in test_provider_openai.py; these tests cover what
differs: configuration, what the server can honour, and how requests are adapted to it.
"""

import pytest

from llm_api.providers import providers
from llm_api.providers.base import ChatRequest, Message, ProviderError
from llm_api.providers.inhouse import InhouseProvider
from tests.fake_upstream import closed_port_url


def chat_request(**fields) -> ChatRequest:
    defaults = {"model": "smollm2-test", "messages": [Message("user", "Say hi")], "max_tokens": 50}
    return ChatRequest(**{**defaults, **fields})


@pytest.fixture
def provider(upstream_providers) -> InhouseProvider:
    return providers["inhouse"]


def inhouse(fake_upstream, **options) -> InhouseProvider:
    return InhouseProvider("inhouse", {"base_url": f"{fake_upstream.url}/v1", **options}, 5)


def test_it_needs_a_base_url_but_no_api_key():
    assert InhouseProvider("inhouse", {"base_url": "", "api_key": ""}, 5).missing_setting == (
        "INHOUSE_BASE_URL"
    )
    assert InhouseProvider("inhouse", {"base_url": "http://x/v1", "api_key": ""}, 5).available


def test_it_sends_a_placeholder_key_when_none_is_set(provider, fake_upstream):
    provider.chat(chat_request())

    assert fake_upstream.last.headers["authorization"] == "Bearer none"


def test_it_sends_the_configured_key(fake_upstream):
    inhouse(fake_upstream, api_key="in-house-secret").chat(chat_request())

    assert fake_upstream.last.headers["authorization"] == "Bearer in-house-secret"


def test_it_answers_through_the_openai_wire_protocol(provider, fake_upstream):
    fake_upstream.behave(text="Hi!", prompt_tokens=4, completion_tokens=2)

    result = provider.chat(chat_request(temperature=0.3))

    assert result.choices[0].text == "Hi!"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 2)
    assert fake_upstream.last.path == "/v1/chat/completions"
    assert fake_upstream.last.body["model"] == "smollm2-test"
    assert fake_upstream.last.body["temperature"] == 0.3


def test_it_declares_what_llama_cpp_cannot_do(provider):
    capabilities = provider.capabilities
    assert capabilities.n is False
    assert capabilities.stream_usage is False
    assert capabilities.images is False
    assert capabilities.embeddings is False


def test_options_turn_on_images_and_embeddings_for_a_model_that_has_them(fake_upstream):
    capabilities = inhouse(fake_upstream, images=True, embeddings=True).capabilities

    assert (capabilities.images, capabilities.embeddings) == (True, True)
    assert InhouseProvider.capabilities.images is False


def test_it_translates_a_json_schema_into_llama_cpps_schema_constrained_json_object(
    provider, fake_upstream
):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    provider.chat(chat_request(response_format=response_format))

    assert fake_upstream.last.body["response_format"] == {"type": "json_object", "schema": schema}


def test_it_sends_a_json_object_response_format_unchanged(provider, fake_upstream):
    provider.chat(chat_request(response_format={"type": "json_object"}))

    assert fake_upstream.last.body["response_format"] == {"type": "json_object"}


def test_a_stream_without_usage_ends_without_usage_as_llama_cpp_streams_do(provider, fake_upstream):
    fake_upstream.behave(chunks=["Hi", "!"], usage=False)

    with provider.chat_stream(chat_request()) as stream:
        chunks = list(stream)

    assert [chunk.text for chunk in chunks if chunk.text] == ["Hi", "!"]
    assert chunks[-1].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


def test_it_refuses_embeddings_unless_turned_on(provider, fake_upstream):
    with pytest.raises(ProviderError) as raised:
        provider.embed("smollm2-test", ["one"])

    assert (raised.value.status_code, raised.value.code) == (400, "unsupported_operation")
    assert fake_upstream.requests == []


def test_it_embeds_when_turned_on(fake_upstream):
    fake_upstream.behave(embedding=[1.0, 2.0])

    result = inhouse(fake_upstream, embeddings=True).embed("smollm2-test", ["one"])

    assert result.vectors == [[1.0, 2.0]]
    assert fake_upstream.last.path == "/v1/embeddings"


def test_it_lists_the_models(provider, fake_upstream):
    fake_upstream.behave(models=["smollm2-135m-instruct"])

    assert provider.list_models() == ["smollm2-135m-instruct"]


def test_it_maps_upstream_failures_like_openai(provider, fake_upstream):
    fake_upstream.behave(status=500)

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    assert (raised.value.status_code, raised.value.code, raised.value.retryable) == (
        502,
        "upstream_error",
        True,
    )
    assert "inhouse" in raised.value.message


def test_a_server_that_is_not_running_is_unreachable():
    provider = InhouseProvider("inhouse", {"base_url": closed_port_url() + "/v1"}, 2)

    with pytest.raises(ProviderError) as raised:
        provider.chat_stream(chat_request())

    assert (raised.value.status_code, raised.value.code) == (502, "upstream_unreachable")


def test_closing_a_stream_midway_closes_the_upstream_connection(provider, fake_upstream):
    fake_upstream.behave(chunks=[str(i) for i in range(50)], chunk_delay=0.02)

    stream = provider.chat_stream(chat_request())
    chunks = iter(stream)
    assert next(chunks).text == "0"
    stream.close()

    assert fake_upstream.stream_closed_early.wait(2)
