"""The OpenAI provider, through the real `openai` SDK, against the fake upstream."""

import base64
import threading

import pytest

from llm_api.providers import providers
from llm_api.providers.base import (
    ChatRequest,
    ImagePart,
    Message,
    ProviderError,
    TextPart,
)
from llm_api.providers.openai import OpenAIProvider
from tests.fake_upstream import closed_port_url

PNG = b"\x89PNG\r\n\x1a\n fake image bytes \x00\xff"


def chat_request(**fields) -> ChatRequest:
    defaults = {"model": "gpt-test", "messages": [Message("user", "Say hello")], "max_tokens": 50}
    return ChatRequest(**{**defaults, **fields})


@pytest.fixture
def provider(upstream_providers) -> OpenAIProvider:
    return providers["openai"]


@pytest.fixture
def impatient(settings, fake_upstream) -> OpenAIProvider:
    """The provider with a half-second timeout."""
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=0.5)
    return providers["openai"]


def test_it_returns_the_text_usage_and_finish_reason(provider, fake_upstream):
    fake_upstream.behave(text="Hello there", prompt_tokens=12, completion_tokens=3)

    result = provider.chat(chat_request())

    assert result.model == "gpt-test"
    assert [(c.index, c.text, c.finish_reason) for c in result.choices] == [
        (0, "Hello there", "stop")
    ]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (12, 3)
    assert result.usage.estimated is False


def test_it_sends_the_model_and_every_option(provider, fake_upstream):
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]
    provider.chat(
        chat_request(
            temperature=0.2,
            top_p=0.9,
            max_tokens=77,
            n=2,
            stop=["END"],
            seed=42,
            frequency_penalty=0.5,
            presence_penalty=-0.5,
            response_format={"type": "json_object"},
            tools=tools,
            tool_choice="auto",
            user="alice",
        )
    )

    request = fake_upstream.last
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-fake-openai-key"
    body = request.body
    assert body["model"] == "gpt-test"
    assert body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["n"]) == (0.2, 0.9, 77, 2)
    assert (body["stop"], body["seed"]) == (["END"], 42)
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0.5, -0.5)
    assert body["response_format"] == {"type": "json_object"}
    assert (body["tools"], body["tool_choice"], body["user"]) == (tools, "auto", "alice")
    assert "stream" not in body


def test_it_leaves_out_the_options_a_request_does_not_set(provider, fake_upstream):
    provider.chat(chat_request())

    assert set(fake_upstream.last.body) == {"model", "messages", "max_tokens"}


def test_it_sends_a_json_schema_response_format_unchanged(provider, fake_upstream):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    provider.chat(chat_request(response_format=response_format))

    assert fake_upstream.last.body["response_format"] == response_format


def test_it_sends_images_as_data_urls_in_their_place_among_the_text(provider, fake_upstream):
    content = [TextPart("What is this?"), ImagePart(PNG, "image/png", detail="low"), TextPart("!")]
    provider.chat(chat_request(messages=[Message("user", content)]))

    text, image, bang = fake_upstream.last.body["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert bang == {"type": "text", "text": "!"}
    assert image["type"] == "image_url"
    assert image["image_url"]["detail"] == "low"
    prefix, encoded = image["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(encoded) == PNG


def test_it_passes_system_tool_and_tool_call_messages_through(provider, fake_upstream):
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        Message("system", "Be brief."),
        Message("user", "What time is it?"),
        Message("assistant", "", tool_calls=[call]),
        Message("tool", "12:00", tool_call_id="call_1"),
    ]
    provider.chat(chat_request(messages=messages))

    assert fake_upstream.last.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "12:00", "tool_call_id": "call_1"},
    ]


def test_it_returns_tool_calls(provider, fake_upstream):
    fake_upstream.behave(tool_calls=[{"id": "call_9", "name": "f", "arguments": '{"x": 1}'}])

    choice = provider.chat(chat_request()).choices[0]

    assert choice.finish_reason == "tool_calls"
    assert choice.tool_calls == [
        {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]


def test_it_returns_every_choice_when_n_is_more_than_one(provider, fake_upstream):
    result = provider.chat(chat_request(n=3))

    assert [choice.index for choice in result.choices] == [0, 1, 2]


def test_it_streams_the_chunks_in_order_and_usage_last(provider, fake_upstream):
    fake_upstream.behave(chunks=["Hel", "lo", " there"], prompt_tokens=5, completion_tokens=3)

    with provider.chat_stream(chat_request()) as stream:
        chunks = list(stream)

    assert "".join(chunk.text for chunk in chunks) == "Hello there"
    assert [chunk.text for chunk in chunks if chunk.text] == ["Hel", "lo", " there"]
    assert chunks[-2].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)
    body = fake_upstream.last.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_a_stream_without_usage_ends_without_usage(provider, fake_upstream):
    fake_upstream.behave(usage=False)

    with provider.chat_stream(chat_request()) as stream:
        chunks = list(stream)

    assert chunks[-1].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


def test_it_streams_tool_call_deltas(provider, fake_upstream):
    fake_upstream.behave(tool_calls=[{"id": "call_1", "name": "f", "arguments": "{}"}], text="")

    with provider.chat_stream(chat_request()) as stream:
        chunks = list(stream)

    assert chunks[0].tool_calls[0]["function"]["name"] == "f"
    assert chunks[0].tool_calls[0]["index"] == 0
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]


def test_it_lists_the_models(provider, fake_upstream):
    fake_upstream.behave(models=["gpt-a", "gpt-b"])

    assert provider.list_models() == ["gpt-a", "gpt-b"]
    assert (fake_upstream.last.method, fake_upstream.last.path) == ("GET", "/v1/models")


def test_it_embeds_each_input_as_floats(provider, fake_upstream):
    fake_upstream.behave(embedding=[0.5, 1.5], prompt_tokens=4)

    result = provider.embed("text-embedding-test", ["one", "two"])

    assert result.vectors == [[0.5, 1.5], [1.5, 2.5]]
    assert result.usage.prompt_tokens == 4
    body = fake_upstream.last.body
    assert body == {
        "model": "text-embedding-test",
        "input": ["one", "two"],
        "encoding_format": "float",
    }


def test_it_times_out_a_slow_upstream(impatient, fake_upstream):
    fake_upstream.behave(delay=1.5)

    with pytest.raises(ProviderError) as raised:
        impatient.chat(chat_request())

    assert (raised.value.status_code, raised.value.code) == (504, "upstream_timeout")
    assert raised.value.retryable is True


def test_it_times_out_a_stream_that_stalls_midway(impatient, fake_upstream):
    fake_upstream.behave(chunks=["a", "b", "c"], chunk_delay=1.5)

    with impatient.chat_stream(chat_request()) as stream:
        chunks = iter(stream)
        assert next(chunks).text == "a"
        with pytest.raises(ProviderError) as raised:
            next(chunks)

    assert raised.value.status_code == 504


@pytest.mark.parametrize(
    ("status", "expected_status", "expected_code", "retryable"),
    [
        (400, 400, "upstream_rejected", False),
        (401, 502, "upstream_auth_failed", False),
        (403, 502, "upstream_auth_failed", False),
        (404, 404, "model_not_found", False),
        (422, 400, "upstream_rejected", False),
        (429, 429, "rate_limited", True),
        (500, 502, "upstream_error", True),
        (503, 502, "upstream_error", True),
    ],
)
def test_it_maps_each_upstream_status(
    provider, fake_upstream, status, expected_status, expected_code, retryable
):
    fake_upstream.behave(status=status)

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    error = raised.value
    assert (error.status_code, error.code, error.retryable) == (
        expected_status,
        expected_code,
        retryable,
    )
    # The gateway decides about retrying: the SDK sent exactly one request.
    assert len(fake_upstream.requests) == 1


def test_a_closed_stream_yields_nothing_more(provider, fake_upstream):
    fake_upstream.behave(chunks=["a", "b"])
    stream = provider.chat_stream(chat_request())
    chunks = iter(stream)
    next(chunks)
    stream.close()

    assert list(chunks) == []


def test_it_maps_an_error_before_the_first_chunk_from_chat_stream(provider, fake_upstream):
    fake_upstream.behave(status=503)

    with pytest.raises(ProviderError) as raised:
        provider.chat_stream(chat_request())

    assert raised.value.status_code == 502


def test_it_passes_retry_after_from_a_429(provider, fake_upstream):
    fake_upstream.behave(status=429, retry_after="17")

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    assert raised.value.retry_after == "17"
    assert raised.value.headers == {"Retry-After": "17"}


def test_it_reports_a_missing_model_as_not_found(provider, fake_upstream):
    fake_upstream.behave(model_not_found=True)

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request(model="gpt-nope"))

    assert (raised.value.status_code, raised.value.code) == (404, "model_not_found")
    assert "gpt-nope" in raised.value.message


def test_it_treats_an_error_coded_model_not_found_as_not_found(provider, fake_upstream):
    body = {"error": {"message": "No such model", "type": "x", "code": "model_not_found"}}
    fake_upstream.behave(status=400, error_body=body)

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    assert raised.value.status_code == 404


def test_it_says_the_provider_rejected_its_credentials_without_echoing_the_key(
    provider, fake_upstream
):
    body = {"error": {"message": "Incorrect API key provided: sk-fake-openai-key.", "code": None}}
    fake_upstream.behave(status=401, error_body=body)

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    assert "rejected the gateway's credentials" in raised.value.message
    assert "sk-" not in raised.value.message


def test_it_passes_a_rejection_on_without_keys_or_urls(provider, fake_upstream):
    message = (
        "Invalid 'temperature' for key sk-live-abc123XYZ at https://internal.example/v1 "
        f"({fake_upstream.url}/v1)"
    )
    fake_upstream.behave(status=400, error_body={"error": {"message": message, "param": "t"}})

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    error = raised.value
    assert "Invalid 'temperature'" in error.message
    assert "sk-live" not in error.message
    assert "http" not in error.message
    assert "127.0.0.1" not in error.message
    assert error.param == "t"


def test_a_closed_port_is_unreachable(settings):
    settings.LLM_PROVIDERS = {
        "openai": {
            "BACKEND": "llm_api.providers.openai.OpenAIProvider",
            "OPTIONS": {"api_key": "sk-x", "base_url": closed_port_url() + "/v1", "timeout": 2},
        }
    }

    with pytest.raises(ProviderError) as raised:
        providers["openai"].chat(chat_request())

    assert (raised.value.status_code, raised.value.code) == (502, "upstream_unreachable")
    assert "127.0.0.1" not in raised.value.message


def test_a_stream_dropped_midway_raises_from_iteration_after_the_first_chunks(
    provider, fake_upstream
):
    fake_upstream.behave(chunks=["a", "b", "c", "d", "e"], drop_after=2)

    received = []
    with provider.chat_stream(chat_request()) as stream, pytest.raises(ProviderError) as raised:
        for chunk in stream:
            received.append(chunk.text)

    assert received == ["a", "b"]
    assert (raised.value.status_code, raised.value.code) == (502, "upstream_error")


def test_closing_a_stream_midway_closes_the_upstream_connection(provider, fake_upstream):
    fake_upstream.behave(chunks=[str(i) for i in range(50)], chunk_delay=0.02)

    stream = provider.chat_stream(chat_request())
    chunks = iter(stream)
    assert [next(chunks).text, next(chunks).text] == ["0", "1"]
    stream.close()

    assert fake_upstream.stream_closed_early.wait(2)


def test_closing_a_stream_from_another_thread_ends_the_reader_quietly(provider, fake_upstream):
    fake_upstream.behave(chunks=[str(i) for i in range(50)], chunk_delay=0.05)
    stream = provider.chat_stream(chat_request())
    received, errors = [], []

    def read() -> None:
        try:
            received.extend(chunk.text for chunk in stream)
        except Exception as error:  # pragma: no cover - the failure being tested for
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    fake_upstream.sleep(0.12)
    stream.close()
    reader.join(2)

    assert not reader.is_alive()
    assert errors == []
    assert 0 < len(received) < 50
    assert fake_upstream.stream_closed_early.wait(2)


def test_it_is_unavailable_without_an_api_key():
    provider = OpenAIProvider("openai", {"api_key": "", "base_url": ""}, 5)

    assert provider.available is False
    assert provider.missing_setting == "OPENAI_API_KEY"
    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())
    assert (raised.value.status_code, raised.value.code) == (503, "provider_unavailable")
