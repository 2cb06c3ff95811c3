"""POST /v1/chat/completions through the Django test client, against the fake upstream."""

import io

import pytest

from billing.models import CreditHold
from billing.services import api_key_create, credits_grant
from llm_api.models import ModelAlias, UsageRecord
from project.parsers import JSONParser, RequestTooLarge
from tests.llm_api.conftest import balance, chat, cost_of, usage_entries

pytestmark = pytest.mark.usefixtures("upstream_providers")


def test_it_answers_in_openai_shape_and_charges_the_reported_usage(
    key_api, alice, fake_upstream, token_prices
):
    fake_upstream.behave(text="Hello from the fake", prompt_tokens=120, completion_tokens=45)
    before = balance(alice)
    response = chat(key_api, model="openai/gpt-4o-mini", temperature=0.2, max_tokens=50)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "openai/gpt-4o-mini"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from the fake",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165}
    sent = fake_upstream.last.body
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4o-mini", 0.2, 50)
    assert balance(alice) == before - cost_of(120, 45)
    [entry] = usage_entries(alice)
    assert (entry.prompt_tokens, entry.completion_tokens, entry.estimated) == (120, 45, False)
    assert entry.request_id == response["x-request-id"]
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.provider, record.model, record.status) == ("openai", "gpt-4o-mini", "ok")
    assert record.credits == cost_of(120, 45)
    assert CreditHold.objects.get(request_id=entry.request_id).status == "settled"


def test_a_bare_model_name_goes_to_the_default_provider(key_api, fake_upstream, settings):
    settings.DEFAULT_PROVIDER = "inhouse"
    response = chat(key_api, model="my-model")
    assert response.status_code == 200
    assert response.json()["model"] == "inhouse/my-model"
    assert fake_upstream.last.body["model"] == "my-model"


def test_an_omitted_model_is_the_default_model(key_api, fake_upstream, settings):
    response = chat(key_api)
    assert response.status_code == 200
    assert response.json()["model"] == f"{settings.DEFAULT_PROVIDER}/{settings.DEFAULT_MODEL}"
    assert fake_upstream.last.body["model"] == settings.DEFAULT_MODEL


def test_an_alias_resolves_to_its_target(key_api, fake_upstream):
    ModelAlias.objects.create(name="smart", target="openai/gpt-4o")
    response = chat(key_api, model="smart")
    assert response.status_code == 200
    assert response.json()["model"] == "openai/gpt-4o"
    assert fake_upstream.last.path == "/v1/chat/completions"
    assert fake_upstream.last.body["model"] == "gpt-4o"


def test_a_non_stream_call_without_usage_is_estimated_and_flagged(
    key_api, alice, fake_upstream, token_prices
):
    fake_upstream.behave(text="x" * 40, usage=False)
    response = chat(key_api, model="openai/gpt-4o-mini")
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["estimated"] is True
    assert usage["completion_tokens"] == 10
    [entry] = usage_entries(alice)
    assert entry.estimated is True
    assert entry.completion_tokens == 10


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"n": 1000}, "n"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"stop": [1, 2]}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages.0.content.0"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"model": 7}, "model"),
    ],
)
def test_invalid_input_is_a_400_naming_the_parameter_and_charges_nothing(
    key_api, alice, fake_upstream, body, param
):
    before = balance(alice)
    response = chat(key_api, **body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param.split(".")[0] in error["message"]
    assert fake_upstream.requests == []
    assert balance(alice) == before
    assert not CreditHold.objects.exists()


def test_malformed_json_is_a_400_in_openai_shape(key_api, fake_upstream):
    response = key_api.post("/v1/chat/completions", "{oops", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["error"]["message"]
    assert fake_upstream.requests == []


def test_a_body_that_is_not_an_object_is_a_400(key_api):
    response = key_api.post("/v1/chat/completions", [1, 2], format="json")
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]["message"]


def test_n_above_one_fans_out_on_a_provider_without_native_n(
    key_api, alice, fake_upstream, token_prices
):
    fake_upstream.behave(text="an answer", prompt_tokens=10, completion_tokens=4)
    response = chat(key_api, model="inhouse/tiny", n=3, temperature=0.9)
    assert response.status_code == 200, response.content
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == "an answer" for c in body["choices"])
    assert body["usage"] == {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    assert len(fake_upstream.requests) == 3
    assert all("n" not in r.body and r.body["temperature"] == 0.9 for r in fake_upstream.requests)
    [entry] = usage_entries(alice)
    assert -entry.amount == cost_of(30, 12)


def test_a_stream_with_n_above_one_on_a_provider_without_native_n_is_refused(
    key_api, fake_upstream
):
    response = chat(key_api, model="inhouse/tiny", n=2, stream=True)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"
    assert response.json()["error"]["code"] == "unsupported_parameter"
    assert fake_upstream.requests == []


def test_n_is_passed_to_a_provider_that_can(key_api, fake_upstream):
    response = chat(key_api, model="openai/gpt-4o-mini", n=3)
    assert response.status_code == 200
    assert fake_upstream.last.body["n"] == 3
    assert [c["index"] for c in response.json()["choices"]] == [0, 1, 2]


def test_it_answers_402_when_credits_run_out_without_calling_upstream(
    key_api, alice, fake_upstream
):
    credits_grant(user=alice, amount=-balance(alice), note="spent")
    response = chat(key_api, model="openai/gpt-4o-mini")
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ({"status": 429, "retry_after": "7"}, 429, "rate_limited"),
        ({"status": 500}, 502, "upstream_error"),
        ({"status": 503}, 502, "upstream_error"),
        ({"status": 400}, 400, "upstream_rejected"),
        ({"model_not_found": True}, 404, "model_not_found"),
    ],
)
def test_upstream_failures_map_to_clear_statuses_and_charge_nothing(
    key_api, alice, fake_upstream, behaviour, status, code
):
    fake_upstream.behave(**behaviour)
    before = balance(alice)
    response = chat(key_api, model="openai/gpt-4o-mini")
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    if status == 429:
        assert response["Retry-After"] == "7"
    assert "sk-fake-openai-key" not in response.content.decode()
    assert "127.0.0.1" not in response.content.decode()
    assert response["x-request-id"]
    assert balance(alice) == before
    assert usage_entries(alice) == []
    assert CreditHold.objects.get().status == "released"
    assert UsageRecord.objects.get().status == "upstream_error"


def test_an_upstream_timeout_is_a_504(key_api, fake_upstream, settings):
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=0.5)
    fake_upstream.behave(delay=2)
    response = chat(key_api, model="openai/gpt-4o-mini")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_an_unreachable_upstream_is_a_502(key_api, settings, fake_upstream):
    providers = fake_upstream.llm_providers()
    providers["openai"]["OPTIONS"]["base_url"] = "http://127.0.0.1:9/v1"
    settings.LLM_PROVIDERS = providers
    response = chat(key_api, model="openai/gpt-4o-mini")
    assert response.status_code == 502
    assert "127.0.0.1:9" not in response.content.decode()


def test_an_unconfigured_provider_is_a_503_naming_the_variable(key_api, settings, fake_upstream):
    providers = fake_upstream.llm_providers()
    providers["openai"]["OPTIONS"]["api_key"] = ""
    settings.LLM_PROVIDERS = providers
    response = chat(key_api, model="openai/gpt-4o-mini")
    assert response.status_code == 503
    assert "OPENAI_API_KEY" in response.json()["error"]["message"]


def test_a_key_allowlist_refuses_other_models(alice, fake_upstream):
    from rest_framework.test import APIClient

    _, key = api_key_create(user=alice, name="narrow", allowed_models=["openai/gpt-4o-mini"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert chat(api, model="openai/gpt-4o-mini").status_code == 200
    refused = chat(api, model="gemini/gemini-2.0-flash")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert len(fake_upstream.requests) == 1


def test_a_signed_in_user_can_call_with_a_jwt(alice_jwt, fake_upstream):
    response = chat(alice_jwt, model="openai/gpt-4o-mini")
    assert response.status_code == 200


def test_no_credentials_is_a_401_in_openai_shape(api, fake_upstream, db):
    response = chat(api)
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["error"]["message"]
    assert fake_upstream.requests == []


def test_an_oversized_body_is_a_413_before_it_is_read(key_api, fake_upstream, settings):
    settings.REQUEST_MAX_BYTES = 1000
    response = chat(key_api, messages=[{"role": "user", "content": "x" * 2000}])
    assert response.status_code == 413
    assert "1,000 bytes" in response.json()["error"]["message"]
    assert fake_upstream.requests == []


def test_the_parser_reads_no_further_than_one_byte_past_the_limit(settings):
    """A body with no Content-Length (a stream) is bounded by what the parser reads."""
    settings.REQUEST_MAX_BYTES = 1000
    stream = io.BytesIO(b'{"messages": "' + b"x" * 5000 + b'"}')
    with pytest.raises(RequestTooLarge, match="over 1,000 bytes"):
        JSONParser().parse(stream, "application/json", {})
    assert stream.tell() == 1001


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "without its pair"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "NaN"),
        (b'{"messages": [', "JSON parse error"),
    ],
)
def test_json_no_part_of_the_stack_could_handle_is_a_400_saying_why(
    key_api, fake_upstream, body, says
):
    response = key_api.generic("POST", "/v1/chat/completions", body, "application/json")
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]
    assert fake_upstream.requests == []


def test_an_escaped_surrogate_pair_is_text_and_reaches_the_upstream(key_api, fake_upstream):
    body = b'{"messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    response = key_api.generic("POST", "/v1/chat/completions", body, "application/json")
    assert response.status_code == 200, response.content
    assert fake_upstream.last.body["messages"][0]["content"] == "smile \U0001f600"


def test_a_parameter_the_provider_declares_unsupported_is_refused_not_dropped(
    key_api, fake_upstream
):
    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]
    response = chat(key_api, model="ollama/llama3", tools=tools, tool_choice="auto")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tool_choice"
    assert fake_upstream.requests == []
    assert chat(key_api, model="ollama/llama3", tools=tools).status_code == 200
