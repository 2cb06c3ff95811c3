"""Seed 001 ("LLM API"): /text_model/chat/… (JSON) and /image_model/chat/… (multipart)."""

import base64
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from billing.models import CreditHold
from llm_api.models import UsageRecord
from tests.llm_api.conftest import balance
from tests.llm_api.seed_support import (
    MISSING_KEY,
    image_bytes,
    noisy_png,
    sse_data,
)

pytestmark = pytest.mark.usefixtures("upstream_providers")

JPEG = image_bytes("JPEG")


@pytest.fixture(autouse=True)
def _models(settings):
    """The seed's two models: a text one and one that reads images."""
    settings.TEXT_MODEL = "openai/gpt-4o-mini"
    settings.IMAGE_MODEL = "openai/gpt-4o"


def photo(data: bytes = JPEG, name: str = "photo.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def post_json(client: APIClient, path: str, body: dict):
    return client.post(path, json.dumps(body), content_type="application/json")


def post_form(client: APIClient, path: str, **fields):
    fields.setdefault("prompt", "What objects are in this image?")
    return client.post(path, fields, format="multipart")


# --- the README's commands ----------------------------------------------------------------------


def test_the_text_completion_example(key_api, alice, fake_upstream):
    fake_upstream.behave(text="The capital of France is Paris.")
    response = post_json(
        key_api,
        "/text_model/chat/completion",
        {
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0.7,
            "max_tokens": 100,
        },
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"response": "The capital of France is Paris."}
    sent = fake_upstream.last.body
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4o-mini", 0.7, 100)
    assert sent["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.route, record.model) == ("seed001.text_model.completion", "gpt-4o-mini")


def test_the_text_stream_example(key_api, fake_upstream):
    fake_upstream.behave(chunks=["Once", " upon", " a time"])
    response = post_json(
        key_api,
        "/text_model/chat/stream",
        {"messages": [{"role": "user", "content": "Tell me a short story"}], "temperature": 0.8},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    events = sse_data(response)
    assert events == [
        {"response": "Once"},
        {"response": " upon"},
        {"response": " a time"},
        "[DONE]",
    ]
    assert fake_upstream.last.body["temperature"] == 0.8
    assert fake_upstream.last.body["stream"] is True
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.route, record.stream) == ("seed001.text_model.stream", True)


def test_the_image_example(key_api, fake_upstream):
    fake_upstream.behave(text="A laptop, a coffee mug and a notebook.")
    response = post_form(key_api, "/image_model/chat/completion", image=photo(), temperature="0.3")
    assert response.status_code == 200, response.content
    assert response.json() == {"response": "A laptop, a coffee mug and a notebook."}
    sent = fake_upstream.last.body
    assert (sent["model"], sent["temperature"]) == ("gpt-4o", 0.3)
    [message] = sent["messages"]
    text, image = message["content"]
    assert text == {"type": "text", "text": "What objects are in this image?"}
    prefix, encoded = image["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/jpeg;base64"
    assert base64.b64decode(encoded) == JPEG


def test_the_image_stream(key_api, fake_upstream):
    fake_upstream.behave(chunks=["A ", "cat"])
    response = post_form(key_api, "/image_model/chat/stream", image=photo())
    assert response.status_code == 200
    assert sse_data(response) == [{"response": "A "}, {"response": "cat"}, "[DONE]"]
    assert fake_upstream.last.body["stream"] is True


# --- the parameter table ------------------------------------------------------------------------

SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "product_review",
        "schema": {
            "type": "object",
            "properties": {"sentiment": {"type": "string"}},
            "required": ["sentiment"],
        },
    },
}


@pytest.mark.parametrize(
    "response_format", [{"type": "json_object"}, SCHEMA, {"type": "text"}], ids=lambda f: f["type"]
)
def test_every_parameter_of_the_table_reaches_the_model(key_api, fake_upstream, response_format):
    body = {
        "messages": [{"role": "user", "content": "Analyze this product review"}],
        "temperature": 1.5,
        "max_tokens": 2048,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.6,
        "seed": 42,
        "response_format": response_format,
    }
    response = post_json(key_api, "/text_model/chat/completion", body)
    assert response.status_code == 200, response.content
    sent = fake_upstream.last.body
    assert {name: sent[name] for name in body if name != "messages"} == {
        name: value for name, value in body.items() if name != "messages"
    }


def test_a_multi_turn_conversation_is_sent_whole(key_api, fake_upstream):
    messages = [
        {"role": "user", "content": "What is Python?"},
        {"role": "assistant", "content": "Python is a programming language..."},
        {"role": "user", "content": "What are its main features?"},
    ]
    response = post_json(key_api, "/text_model/chat/completion", {"messages": messages})
    assert response.status_code == 200
    assert fake_upstream.last.body["messages"] == messages


def test_form_fields_are_read_as_numbers_and_json(key_api, fake_upstream):
    response = post_form(
        key_api,
        "/image_model/chat/completion",
        image=photo(),
        max_tokens="64",
        top_p="0.5",
        seed="7",
        frequency_penalty="-1",
        presence_penalty="",
        response_format='{"type": "json_object"}',
    )
    assert response.status_code == 200, response.content
    sent = fake_upstream.last.body
    assert (sent["max_tokens"], sent["top_p"], sent["seed"]) == (64, 0.5, 7)
    assert sent["frequency_penalty"] == -1
    assert "presence_penalty" not in sent
    assert sent["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": "high"}, "top_p"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"seed": 1.5}, "seed"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"messages": []}, "messages"),
        ({"model": "openai/gpt-4o"}, "model"),
        ({"stream": True}, "stream"),
    ],
)
def test_bad_json_input_is_a_400_naming_the_field(key_api, alice, fake_upstream, body, param):
    body = {"messages": [{"role": "user", "content": "Hi"}], **body}
    response = post_json(key_api, "/text_model/chat/completion", body)
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"detail", "code"}
    assert param.split(".")[0] in response.json()["detail"]
    assert fake_upstream.requests == []
    assert not CreditHold.objects.exists()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": "3"}, "temperature"),
        ({"top_p": "1.5"}, "top_p"),
        ({"max_tokens": "2.5"}, "max_tokens"),
        ({"max_tokens": "0"}, "max_tokens"),
        ({"seed": "x"}, "seed"),
        ({"presence_penalty": "-2.5"}, "presence_penalty"),
        ({"response_format": "{bad"}, "response_format"),
        ({"response_format": '{"type": "yaml"}'}, "response_format"),
        ({"response_format": "[" * 100_000 + "]" * 100_000}, "response_format"),
        (
            {
                "response_format": '{"type": "json_schema", "json_schema": {"name": "x", '
                '"schema": {"description": "\\ud800"}}}'
            },
            "response_format",
        ),
        ({"colour": "red"}, "colour"),
        ({"prompt": ""}, "prompt"),
        ({"image": None}, "image"),
        ({"image": "photo.jpg"}, "image"),
    ],
)
def test_bad_form_input_is_a_400_naming_the_field(key_api, fake_upstream, fields, param):
    fields = {"image": photo(), **fields}
    if fields["image"] is None:
        del fields["image"]
    response = post_form(key_api, "/image_model/chat/completion", **fields)
    assert response.status_code == 400, response.content
    assert param in response.json()["detail"]
    assert fake_upstream.requests == []


# --- images: size and type ----------------------------------------------------------------------


def test_an_image_over_the_limit_is_a_413_saying_the_limit(key_api, fake_upstream, settings):
    settings.IMAGE_MAX_BYTES = 1000
    big = noisy_png((30, 30))
    assert len(big) > 1000
    response = post_form(key_api, "/image_model/chat/completion", image=photo(big, "big.png"))
    assert response.status_code == 413
    assert response.json()["code"] == "image_too_large"
    assert "1,000 bytes" in response.json()["detail"]
    assert fake_upstream.requests == []


def test_an_upload_far_over_the_limit_stops_while_it_streams_in(key_api, fake_upstream, settings):
    # Within REQUEST_MAX_BYTES but far past IMAGE_MAX_BYTES: the rest never reaches memory.
    settings.IMAGE_MAX_BYTES = 100_000
    huge = b"\xff\xd8\xff" + b"\0" * (3 * 2**20)
    response = post_form(key_api, "/image_model/chat/completion", image=photo(huge))
    assert response.status_code == 413
    assert "larger than the limit of 100,000 bytes" in response.json()["detail"]


def test_a_file_that_is_not_an_image_is_a_415(key_api, fake_upstream):
    text = SimpleUploadedFile("notes.txt", b"just some text", content_type="text/plain")
    response = post_form(key_api, "/image_model/chat/completion", image=text)
    assert response.status_code == 415
    assert "PNG, JPEG, GIF or WEBP" in response.json()["detail"]
    assert fake_upstream.requests == []


def test_an_image_in_an_unsupported_format_is_a_415_naming_it(key_api, fake_upstream):
    bmp = SimpleUploadedFile("photo.bmp", image_bytes("BMP"), content_type="image/bmp")
    response = post_form(key_api, "/image_model/chat/completion", image=bmp)
    assert response.status_code == 415
    assert "BMP" in response.json()["detail"]


def test_form_fields_over_the_upload_limit_are_a_413_not_a_500(key_api, fake_upstream, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post_form(key_api, "/image_model/chat/completion", image=photo(), prompt="x" * 5000)
    assert response.status_code == 413
    assert "1,000-byte limit" in response.json()["detail"]


def test_json_to_an_image_route_is_a_415(key_api, fake_upstream):
    response = post_json(key_api, "/image_model/chat/completion", {"prompt": "Hi"})
    assert response.status_code == 415


def test_an_image_model_that_cannot_take_images_is_a_400_naming_it(
    key_api, alice, fake_upstream, settings
):
    settings.IMAGE_MODEL = "inhouse/smollm2-135m-instruct"
    before = balance(alice)
    response = post_form(key_api, "/image_model/chat/completion", image=photo())
    assert response.status_code == 400
    assert "inhouse/smollm2-135m-instruct" in response.json()["detail"]
    assert response.json()["code"] == "unsupported_parameter"
    assert fake_upstream.requests == []
    assert balance(alice) == before


def test_an_image_in_the_text_routes_messages_reaches_a_model_that_reads_images(
    key_api, fake_upstream
):
    url = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    content = [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    response = post_json(
        key_api, "/text_model/chat/completion", {"messages": [{"role": "user", "content": content}]}
    )
    assert response.status_code == 200
    assert fake_upstream.last.body["messages"][0]["content"][1]["image_url"]["url"] == url


# --- auth and errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/text_model/chat/completion", "/image_model/chat/stream"])
def test_a_missing_key_is_a_401_with_the_seeds_words(api, db, fake_upstream, path):
    response = api.post(path, {}, format="json")
    assert response.status_code == 401
    assert response.json()["detail"] == MISSING_KEY
    assert fake_upstream.requests == []


def test_an_invalid_key_is_a_401_where_the_seed_said_403(api, db):
    api.credentials(HTTP_X_API_KEY="your-secret-api-key-here")
    response = post_json(api, "/text_model/chat/completion", {"messages": []})
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid API key."


def test_an_upstream_failure_midstream_is_an_error_event(key_api, fake_upstream):
    fake_upstream.behave(chunks=["a", "b", "c", "d"], drop_after=2)
    response = post_json(
        key_api, "/text_model/chat/stream", {"messages": [{"role": "user", "content": "Hi"}]}
    )
    events = sse_data(response)
    assert events[:2] == [{"response": "a"}, {"response": "b"}]
    assert events[2]["code"] == "upstream_error"
    assert "detail" in events[2]
    assert events[-1] == "[DONE]"


def test_an_upstream_failure_before_the_stream_is_a_plain_error(key_api, fake_upstream):
    fake_upstream.behave(status=429, retry_after="3")
    response = post_json(
        key_api, "/text_model/chat/stream", {"messages": [{"role": "user", "content": "Hi"}]}
    )
    assert response.status_code == 429
    assert response["Retry-After"] == "3"
    assert response.json()["code"] == "rate_limited"
