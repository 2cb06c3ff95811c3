"""The Gemini provider, through the real `google-genai` SDK, against the fake upstream."""

import base64
import threading

import pytest

from llm_api.providers import providers
from llm_api.providers.base import ChatRequest, ImagePart, Message, ProviderError, TextPart
from llm_api.providers.gemini import GeminiProvider
from tests.fake_upstream import closed_port_url

JPEG = b"\xff\xd8\xff\xe0 fake jpeg \x00\x01\xfe"


def chat_request(**fields) -> ChatRequest:
    defaults = {
        "model": "gemini-test",
        "messages": [Message("user", "Say hello")],
        "max_tokens": 50,
    }
    return ChatRequest(**{**defaults, **fields})


@pytest.fixture
def provider(upstream_providers) -> GeminiProvider:
    return providers["gemini"]


@pytest.fixture
def impatient(settings, fake_upstream) -> GeminiProvider:
    """The provider with a half-second timeout."""
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=0.5)
    return providers["gemini"]


def test_it_returns_the_text_usage_and_finish_reason(provider, fake_upstream):
    fake_upstream.behave(text="Hello there", prompt_tokens=12, completion_tokens=3)

    result = provider.chat(chat_request())

    assert [(c.index, c.text, c.finish_reason) for c in result.choices] == [
        (0, "Hello there", "stop")
    ]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (12, 3)
    assert result.usage.estimated is False


def test_it_calls_generate_content_for_the_model_with_the_key_in_a_header(provider, fake_upstream):
    provider.chat(chat_request())

    request = fake_upstream.last
    assert (request.method, request.path) == ("POST", "/v1beta/models/gemini-test:generateContent")
    assert request.headers["x-goog-api-key"] == "fake-gemini-key"
    assert "key" not in request.query


def test_it_translates_every_option_into_the_generation_config(provider, fake_upstream):
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
        )
    )

    assert fake_upstream.last.body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 77,
        "candidateCount": 2,
        "stopSequences": ["END"],
        "seed": 42,
        "frequencyPenalty": 0.5,
        "presencePenalty": -0.5,
    }


def test_it_asks_for_json_for_a_json_object_response_format(provider, fake_upstream):
    provider.chat(chat_request(response_format={"type": "json_object"}))

    config = fake_upstream.last.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert "responseJsonSchema" not in config


def test_it_sends_a_json_schema_as_the_response_json_schema(provider, fake_upstream):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    provider.chat(chat_request(response_format=response_format))

    config = fake_upstream.last.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == schema


def test_it_moves_system_messages_into_the_system_instruction(provider, fake_upstream):
    messages = [
        Message("system", "Be brief."),
        Message("user", "Hi"),
        Message("assistant", "Hello!"),
        Message("system", "Be kind."),
        Message("user", "How are you?"),
    ]
    provider.chat(chat_request(messages=messages))

    body = fake_upstream.last.body
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief.\n\nBe kind."}]
    assert [(c["role"], c["parts"]) for c in body["contents"]] == [
        ("user", [{"text": "Hi"}]),
        ("model", [{"text": "Hello!"}]),
        ("user", [{"text": "How are you?"}]),
    ]


def test_it_sends_images_as_inline_data_in_their_place_among_the_parts(provider, fake_upstream):
    content = [TextPart("What is this?"), ImagePart(JPEG, "image/jpeg")]
    provider.chat(chat_request(messages=[Message("user", content)]))

    text, image = fake_upstream.last.body["contents"][0]["parts"]
    assert text == {"text": "What is this?"}
    inline = image["inlineData"]
    assert (inline.get("mimeType") or inline.get("mime_type")) == "image/jpeg"
    # The SDK writes bytes in the URL-safe alphabet, unpadded; the API reads either alphabet.
    data = inline["data"]
    assert base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)) == JPEG


@pytest.mark.parametrize(
    ("finish", "expected"), [("length", "length"), ("content_filter", "content_filter")]
)
def test_it_maps_the_finish_reason(provider, fake_upstream, finish, expected):
    fake_upstream.behave(finish_reason=finish)

    assert provider.chat(chat_request()).choices[0].finish_reason == expected


def test_it_returns_every_candidate_when_n_is_more_than_one(provider, fake_upstream):
    result = provider.chat(chat_request(n=2))

    assert [choice.index for choice in result.choices] == [0, 1]


def test_it_streams_the_chunks_in_order_and_usage_last(provider, fake_upstream):
    fake_upstream.behave(chunks=["Hel", "lo", " there"], prompt_tokens=5, completion_tokens=3)

    with provider.chat_stream(chat_request()) as stream:
        chunks = list(stream)

    assert [chunk.text for chunk in chunks if chunk.text] == ["Hel", "lo", " there"]
    assert [chunk.finish_reason for chunk in chunks if chunk.finish_reason] == ["stop"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)
    request = fake_upstream.last
    assert request.path == "/v1beta/models/gemini-test:streamGenerateContent"
    assert request.query == {"alt": "sse"}


def test_a_stream_without_usage_ends_without_usage(provider, fake_upstream):
    fake_upstream.behave(usage=False)

    with provider.chat_stream(chat_request()) as stream:
        chunks = list(stream)

    assert chunks[-1].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


def test_it_lists_the_models_without_their_prefix(provider, fake_upstream):
    fake_upstream.behave(models=["gemini-a", "gemini-b"])

    assert provider.list_models() == ["gemini-a", "gemini-b"]
    assert (fake_upstream.last.method, fake_upstream.last.path) == ("GET", "/v1beta/models")


def test_it_embeds_each_input(provider, fake_upstream):
    fake_upstream.behave(embedding=[0.5, 1.5])

    result = provider.embed("embedding-test", ["one", "two"])

    assert result.vectors == [[0.5, 1.5], [1.5, 2.5]]
    assert result.usage is None
    request = fake_upstream.last
    assert request.path == "/v1beta/models/embedding-test:batchEmbedContents"
    texts = [r["content"]["parts"][0]["text"] for r in request.body["requests"]]
    assert texts == ["one", "two"]


def test_it_times_out_a_slow_upstream(impatient, fake_upstream):
    fake_upstream.behave(delay=1.5)

    with pytest.raises(ProviderError) as raised:
        impatient.chat(chat_request())

    assert (raised.value.status_code, raised.value.code) == (504, "upstream_timeout")


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
    assert len(fake_upstream.requests) == 1


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


def test_it_reports_a_missing_model_as_not_found(provider, fake_upstream):
    fake_upstream.behave(model_not_found=True)

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request(model="gemini-nope"))

    assert (raised.value.status_code, raised.value.code) == (404, "model_not_found")


def test_it_treats_an_invalid_api_key_as_rejected_credentials(provider, fake_upstream):
    body = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}
    fake_upstream.behave(status=400, error_body=body)

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    assert (raised.value.status_code, raised.value.code) == (502, "upstream_auth_failed")
    assert "fake-gemini-key" not in raised.value.message


def test_it_passes_a_rejection_on_without_keys_or_urls(provider, fake_upstream):
    message = "Bad request for key=fake-gemini-key see https://internal.example/x"
    body = {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    fake_upstream.behave(status=400, error_body=body)

    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())

    assert "Bad request" in raised.value.message
    assert "fake-gemini-key" not in raised.value.message
    assert "http" not in raised.value.message


def test_a_closed_port_is_unreachable(settings):
    settings.LLM_PROVIDERS = {
        "gemini": {
            "BACKEND": "llm_api.providers.gemini.GeminiProvider",
            "OPTIONS": {"api_key": "k", "base_url": closed_port_url(), "timeout": 2},
        }
    }

    with pytest.raises(ProviderError) as raised:
        providers["gemini"].chat(chat_request())

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


def test_it_is_unavailable_without_an_api_key():
    provider = GeminiProvider("gemini", {"api_key": "", "base_url": ""}, 5)

    assert provider.available is False
    assert provider.missing_setting == "GEMINI_API_KEY"
    with pytest.raises(ProviderError) as raised:
        provider.chat(chat_request())
    assert raised.value.status_code == 503
