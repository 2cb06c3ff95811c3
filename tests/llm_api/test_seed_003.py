"""Seed 003 ("Ollama REST API"): /api/v1/generate, /api/v1/chat, /api/v1/completions, SSE."""

import base64

import pytest

from billing.models import CreditHold
from llm_api.models import UsageRecord
from tests.llm_api.conftest import usage_entries
from tests.llm_api.seed_support import image_bytes, sse_data

pytestmark = pytest.mark.usefixtures("upstream_providers")

PNG = image_bytes("PNG")


def test_generate_answers_model_response_done(key_api, fake_upstream, settings):
    fake_upstream.behave(text="Quantum computing is...", prompt_tokens=9, completion_tokens=5)
    response = key_api.post(
        "/api/v1/generate",
        {"prompt": "Explain quantum computing", "model": "mistral", "stream": False},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json() == {
        "model": "mistral",
        "response": "Quantum computing is...",
        "done": True,
        "prompt_eval_count": 9,
        "eval_count": 5,
    }
    sent = fake_upstream.last.body
    assert sent["model"] == "mistral"
    assert sent["messages"] == [{"role": "user", "content": "Explain quantum computing"}]
    assert UsageRecord.objects.get().route == "seed003.generate"


def test_the_authentication_example_uses_the_default_model(key_api, fake_upstream, settings):
    # curl -H "X-API-Key: …" -H "Content-Type: application/json" -d '{"prompt": "Hello world"}'
    response = key_api.post("/api/v1/generate", {"prompt": "Hello world"}, format="json")
    assert response.status_code == 200
    assert response.json()["model"] == f"{settings.DEFAULT_PROVIDER}/{settings.DEFAULT_MODEL}"
    assert response.json()["done"] is True


def test_the_streaming_example_sends_sse_ending_with_done(key_api, alice, fake_upstream):
    # curl -H "X-API-Key: …" -d '{"prompt": "Tell me a story", "stream": true}' …/api/v1/generate
    fake_upstream.behave(chunks=["Once", " upon"], prompt_tokens=4, completion_tokens=2)
    response = key_api.post(
        "/api/v1/generate", {"prompt": "Tell me a story", "stream": True}, format="json"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    events = sse_data(response)
    model = events[0]["model"]
    assert events[:2] == [
        {"model": model, "response": "Once", "done": False},
        {"model": model, "response": " upon", "done": False},
    ]
    assert events[2] == {
        "model": model,
        "response": "",
        "done": True,
        "prompt_eval_count": 4,
        "eval_count": 2,
    }
    assert len(events) == 3
    [entry] = usage_entries(alice)
    assert (entry.prompt_tokens, entry.completion_tokens) == (4, 2)


def test_generate_takes_a_system_prompt_and_ollama_images(key_api, fake_upstream, settings):
    settings.DEFAULT_PROVIDER = "ollama"
    encoded = base64.b64encode(PNG).decode()
    response = key_api.post(
        "/api/v1/generate",
        {"prompt": "What is this?", "system": "Be brief.", "images": [encoded], "model": "llava"},
        format="json",
    )
    assert response.status_code == 200, response.content
    system, user = fake_upstream.last.body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == "What is this?"
    assert [base64.b64decode(image) for image in user["images"]] == [PNG]


def test_chat_answers_with_the_reply(key_api, fake_upstream):
    messages = [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there!"},
        {"role": "user", "content": "How are you?"},
    ]
    fake_upstream.behave(text="Fine, thanks.")
    response = key_api.post(
        "/api/v1/chat", {"messages": messages, "model": "mistral", "stream": False}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["model"], body["response"], body["done"]) == ("mistral", "Fine, thanks.", True)
    assert body["message"] == {"role": "assistant", "content": "Fine, thanks."}
    assert fake_upstream.last.body["messages"] == messages


def test_chat_streams_the_same_shape(key_api, fake_upstream):
    fake_upstream.behave(chunks=["Fi", "ne"])
    response = key_api.post(
        "/api/v1/chat",
        {"messages": [{"role": "user", "content": "Hi"}], "model": "mistral", "stream": True},
        format="json",
    )
    events = sse_data(response)
    pieces = [(e["response"], e["done"]) for e in events]
    assert pieces == [("Fi", False), ("ne", False), ("", True)]
    assert events[0]["message"] == {"role": "assistant", "content": "Fi"}
    assert all(e["model"] == "mistral" for e in events)


def test_chat_takes_ollama_images_beside_a_message(key_api, fake_upstream):
    encoded = base64.b64encode(PNG).decode()
    messages = [{"role": "user", "content": "What is this?", "images": [encoded]}]
    response = key_api.post(
        "/api/v1/chat", {"messages": messages, "model": "openai/gpt-4o"}, format="json"
    )
    assert response.status_code == 200, response.content
    text, image = fake_upstream.last.body["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image["image_url"]["url"] == f"data:image/png;base64,{encoded}"


def test_completions_answer_in_openais_shape(key_api, fake_upstream):
    fake_upstream.behave(text=" there was a dragon.")
    response = key_api.post(
        "/api/v1/completions",
        {
            "prompt": "Once upon a time",
            "model": "mistral",
            "stream": False,
            "max_tokens": 100,
            "temperature": 0.7,
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == " there was a dragon."
    sent = fake_upstream.last.body
    assert (sent["max_tokens"], sent["temperature"]) == (100, 0.7)


def test_completions_stream_openai_chunks(key_api, fake_upstream):
    fake_upstream.behave(chunks=["a", "b"])
    response = key_api.post(
        "/api/v1/completions", {"prompt": "Once", "stream": True}, format="json"
    )
    events = sse_data(response)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "ab"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/api/v1/generate", {}, "prompt"),
        ("/api/v1/generate", {"prompt": "Hi", "stream": "yes"}, "stream"),
        ("/api/v1/generate", {"prompt": "Hi", "options": {}}, "options"),
        ("/api/v1/generate", {"prompt": "Hi", "images": "abc"}, "images"),
        ("/api/v1/generate", {"prompt": "Hi", "images": ["not base64!"]}, "images.0"),
        ("/api/v1/chat", {"messages": []}, "messages"),
        ("/api/v1/chat", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ("/api/v1/completions", {"prompt": ""}, "prompt"),
        ("/api/v1/completions", {"prompt": "Hi", "temperature": 9}, "temperature"),
    ],
)
def test_bad_input_is_a_400_in_the_seeds_error_shape(key_api, fake_upstream, path, body, param):
    response = key_api.post(path, body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["error"] == "Bad Request"
    assert param in error["message"]
    assert fake_upstream.requests == []
    assert not CreditHold.objects.exists()


@pytest.mark.parametrize("path", ["/api/v1/generate", "/api/v1/chat", "/api/v1/completions"])
def test_a_missing_key_is_a_401_in_the_seeds_error_shape(api, db, path):
    response = api.post(path, {"prompt": "Hi"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"
    assert "X-API-Key" in response.json()["message"]


def test_an_upstream_failure_midstream_is_an_error_event_then_done(key_api, fake_upstream):
    fake_upstream.behave(chunks=["a", "b", "c", "d"], drop_after=2)
    response = key_api.post("/api/v1/generate", {"prompt": "Hi", "stream": True}, format="json")
    events = sse_data(response)
    assert [e["response"] for e in events[:2]] == ["a", "b"]
    assert events[2]["error"] == "Bad Gateway"
    assert events[2]["code"] == "upstream_error"
    assert events[-1]["done"] is True


@pytest.mark.parametrize("path", ["/health", "/api/info"])
def test_health_and_info_need_no_key(api, db, path):
    assert api.get(path).status_code == 200


def test_the_docs_need_no_key(api, db):
    assert api.get("/docs").status_code == 200
    assert api.get("/api/docs").status_code == 200
