"""The Ollama provider, through the real `ollama` SDK (native API), against the fake upstream."""

import base64
import json
import threading

import pytest

from llm_api.providers import providers
from llm_api.providers.base import ChatRequest, ImagePart, Message, ProviderError, TextPart
from llm_api.providers.ollama import OllamaProvider
from tests.fake_upstream import closed_port_url

PNG = b"\x89PNG\r\n\x1a\n fake image bytes \x00\xff"


def chat_request(**fields) -> ChatRequest:
    defaults = {"model": "llama-test", "messages": [Message("user", "Say hello")], "max_tokens": 50}
    return ChatRequest(**{**defaults, **fields})


@pytest.fixture
def provider(upstream_providers) -> OllamaProvider:
    return providers["ollama"]


@pytest.fixture
def impatient(settings, fake_upstream) -> OllamaProvider:
    """The provider with a half-second timeout."""
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=0.5)
    return providers["ollama"]


def test_it_returns_the_text_usage_and_finish_reason(provider, fake_upstream):
    fake_upstream.behave(text="Hello there", prompt_tokens=12, completion_tokens=3)

    result = provider.chat(chat_request())

    assert result.model == "llama-test"
    assert [(c.index, c.text, c.finish_reason) for c in result.choices] == [
        (0, "Hello there", "stop")
    ]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (12, 3)


def test_it_sends_the_options_in_ollamas_words(provider, fake_upstream):
    provider.chat(
        chat_request(
            temperature=0.2,
            top_p=0.9,
            max_tokens=77,
            stop=["END"],
            seed=42,
            frequency_penalty=0.5,
            presence_penalty=-0.5,
        )
    )

    request = fake_upstream.last
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.body["model"] == "llama-test"
    assert request.body["stream"] is False
    assert request.body["options"] == {
        "temperature": 0.2,
        "top_p": 0.9,
        "num_predict": 77,
        "stop": ["END"],
        "seed": 42,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
    }
    assert "format" not in request.body


def test_it_asks_for_json_for_a_json_object_response_format(provider, fake_upstream):
    provider.chat(chat_request(response_format={"type": "json_object"}))

    assert fake_upstream.last.body["format"] == "json"


def test_it_sends_a_json_schema_as_the_format(provider, fake_upstream):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    provider.chat(chat_request(response_format=response_format))

    assert fake_upstream.last.body["format"] == schema


def test_it_sends_images_as_base64_beside_the_message_text(provider, fake_upstream):
    content = [TextPart("What is "), ImagePart(PNG, "image/png"), TextPart("this?")]
    messages = [Message("system", "Be brief."), Message("user", content)]
    provider.chat(chat_request(messages=messages))

    system, user = fake_upstream.last.body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == "What is this?"
    assert [base64.b64decode(image) for image in user["images"]] == [PNG]


def test_it_sends_tools_and_tool_messages_in_ollamas_shape(provider, fake_upstream):
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    messages = [
        Message("user", "Time?"),
        Message("assistant", "", tool_calls=[call]),
        Message("tool", "12:00", name="get_time", tool_call_id="c1"),
    ]
    provider.chat(chat_request(messages=messages, tools=tools))

    body = fake_upstream.last.body
    assert body["tools"][0]["function"]["name"] == "get_time"
    assistant, tool = body["messages"][1:]
    assert assistant["tool_calls"] == [{"function": {"name": "get_time", "arguments": {}}}]
    assert tool == {"role": "tool", "content": "12:00", "tool_name": "get_time"}


def test_it_returns_tool_calls_in_openais_shape(provider, fake_upstream):
    fake_upstream.behave(text="", tool_calls=[{"name": "f", "arguments": '{"x": 1}'}])

    choice = provider.chat(chat_request()).choices[0]

    assert choice.finish_reason == "tool_calls"
    (call,) = choice.tool_calls
    assert (call["type"], call["function"]["name"]) == ("function", "f")
    assert json.loads(call["function"]["arguments"]) == {"x": 1}


def test_it_reports_a_length_stop(provider, fake_upstream):
    fake_upstream.behave(finish_reason="length")

    assert provider.chat(chat_request()).choices[0].finish_reason == "length"


def test_it_streams_the_chunks_in_order_and_usage_on_the_final_message(provider, fake_upstream):
    fake_upstream.behave(chunks=["Hel", "lo", " there"], prompt_tokens=5, completion_tokens=3)

    with provider.chat_stream(chat_request()) as stream:
        chunks = list(stream)

    assert [chunk.text for chunk in chunks] == ["Hel", "lo", " there", ""]
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)
    assert fake_upstream.last.body["stream"] is True


def test_a_stream_without_usage_ends_without_usage(provider, fake_upstream):
    fake_upstream.behave(usage=False)

    with provider.chat_stream(chat_request()) as stream:
        chunks = list(stream)

    assert chunks[-1].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


def test_it_cannot_give_more_than_one_choice(provider):
    assert provider.capabilities.n is False


def test_it_lists_the_models(provider, fake_upstream):
    fake_upstream.behave(models=["llama3.2:latest", "qwen:7b"])

    assert provider.list_models() == ["llama3.2:latest", "qwen:7b"]
    assert (fake_upstream.last.method, fake_upstream.last.path) == ("GET", "/api/tags")


def test_it_embeds_each_input(provider, fake_upstream):
    fake_upstream.behave(embedding=[0.5, 1.5], prompt_tokens=4)

    result = provider.embed("embed-test", ["one", "two"])

    assert result.vectors == [[0.5, 1.5], [1.5, 2.5]]
    assert result.usage.prompt_tokens == 4
    assert fake_upstream.last.path == "/api/embed"
    assert fake_upstream.last.body["input"] == ["one", "two"]


def test_it_times_out_a_slow_upstream(impatient, fake_upstream):
    fake_upstream.behave(delay=1.5)

    with pytest.raises(ProviderError) as raised:
        impatient.chat(chat_request())

    assert (raised.value.status_code, raised.value.code) == (504, "upstream_timeout")


def test_it_times_out_a_slow_stream_before_its_first_chunk(impatient, fake_upstream):
    fake_upstream.behave(delay=1.5)

    with pytest.raises(ProviderError) as raised:
        impatient.chat_stream(chat_request())

    assert raised.value.status_code == 504


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


def test_it_maps_an_error_before_the_first_chunk_from_chat_stream(provider, fake_upstream):
    fake_upstream.behave(status=500)

    with pytest.raises(ProviderError) as raised:
        provider.chat_stream(chat_request())

    assert raised.value.status_code == 502


def test_it_passes_retry_after_from_a_429(provider, fake_upstream):
    fake_upstream.behave(status=429, retry_after="17")

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    assert raised.value.retry_after == "17"


def test_it_reports_a_model_that_is_not_pulled_as_not_found(provider, fake_upstream):
    fake_upstream.behave(model_not_found=True)

    with pytest.raises(ProviderError) as raised:
        provider.chat_stream(chat_request(model="nope:latest"))

    assert (raised.value.status_code, raised.value.code) == (404, "model_not_found")
    assert "nope:latest" in raised.value.message


def test_a_closed_port_is_unreachable(settings):
    settings.LLM_PROVIDERS = {
        "ollama": {
            "BACKEND": "llm_api.providers.ollama.OllamaProvider",
            "OPTIONS": {"host": closed_port_url(), "timeout": 2},
        }
    }
    provider = providers["ollama"]

    for call in (provider.chat, provider.chat_stream):
        with pytest.raises(ProviderError) as raised:
            call(chat_request())
        assert (raised.value.status_code, raised.value.code) == (502, "upstream_unreachable")


def test_a_stream_dropped_midway_raises_from_iteration_after_the_first_chunks(
    provider, fake_upstream
):
    fake_upstream.behave(chunks=["a", "b", "c", "d", "e"], drop_after=2)

    received = []
    with provider.chat_stream(chat_request()) as stream, pytest.raises(ProviderError) as raised:
        for chunk in stream:
            received.append(chunk.text)

    assert received == ["a", "b"]
    assert raised.value.status_code == 502


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


def test_it_is_available_when_a_host_is_set_reachable_or_not():
    assert OllamaProvider("ollama", {"host": closed_port_url()}, 5).available is True
    assert OllamaProvider("ollama", {"host": ""}, 5).missing_setting == "OLLAMA_HOST"
