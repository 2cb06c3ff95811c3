"""Streams through the Django test client: the events, the [DONE], and exactly-once charges.

That streams really stream (arrive chunk by chunk) is proven against live servers in
tests/e2e/test_live_streaming.py; the test client cannot tell.
"""

import pytest

from billing.models import CreditHold
from llm_api.models import UsageRecord
from tests.llm_api.conftest import balance, chat, cost_of, sse_events, usage_entries

pytestmark = pytest.mark.usefixtures("upstream_providers")


def test_a_stream_forwards_every_chunk_then_usage_then_done(
    key_api, alice, fake_upstream, token_prices
):
    fake_upstream.behave(chunks=["Hel", "lo", " world"], prompt_tokens=30, completion_tokens=3)
    response = chat(
        key_api, model="openai/gpt-4o-mini", stream=True, stream_options={"include_usage": True}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello world"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 30, "completion_tokens": 3, "total_tokens": 33}
    assert fake_upstream.last.body["stream_options"] == {"include_usage": True}
    [entry] = usage_entries(alice)
    assert (entry.prompt_tokens, entry.completion_tokens, entry.estimated) == (30, 3, False)
    assert -entry.amount == cost_of(30, 3)


def test_usage_is_asked_of_upstream_even_when_the_client_does_not_want_it(
    key_api, alice, fake_upstream, token_prices
):
    fake_upstream.behave(chunks=["a", "b"], prompt_tokens=5, completion_tokens=2)
    events = sse_events(chat(key_api, model="openai/gpt-4o-mini", stream=True))
    assert all("usage" not in e for e in events[:-1])
    assert fake_upstream.last.body["stream_options"] == {"include_usage": True}
    [entry] = usage_entries(alice)
    assert (entry.prompt_tokens, entry.completion_tokens) == (5, 2)


def test_a_stream_without_upstream_usage_is_estimated_and_flagged(
    key_api, alice, fake_upstream, token_prices
):
    fake_upstream.behave(chunks=["a", "b", "c"], usage=False)
    events = sse_events(
        chat(key_api, model="inhouse/tiny", stream=True, stream_options={"include_usage": True})
    )
    usage = events[-2]["usage"]
    assert usage["estimated"] is True
    assert usage["completion_tokens"] == 3  # one token a delta
    [entry] = usage_entries(alice)
    assert entry.estimated is True
    assert (entry.prompt_tokens, entry.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert UsageRecord.objects.get().estimated is True


def test_an_upstream_drop_mid_stream_ends_with_an_error_event_and_charges_what_came(
    key_api, alice, fake_upstream, token_prices
):
    fake_upstream.behave(chunks=["a", "b", "c", "d", "e"], drop_after=2)
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert "error" in events[-2]
    assert events[-2]["error"]["code"] == "upstream_error"
    [entry] = usage_entries(alice)
    assert entry.estimated is True
    assert entry.completion_tokens == 2
    assert UsageRecord.objects.get().status == "upstream_error"


def test_an_error_before_the_stream_starts_is_an_http_error_and_charges_nothing(
    key_api, alice, fake_upstream
):
    fake_upstream.behave(status=429, retry_after="3")
    before = balance(alice)
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    assert response.status_code == 429
    assert response["Retry-After"] == "3"
    assert balance(alice) == before
    assert CreditHold.objects.get().status == "released"


def test_a_drop_before_any_output_charges_nothing(key_api, alice, fake_upstream):
    fake_upstream.behave(chunks=["a", "b"], drop_after=0)
    before = balance(alice)
    events = sse_events(chat(key_api, model="openai/gpt-4o-mini", stream=True))
    assert "error" in events[-2]
    assert balance(alice) == before
    assert usage_entries(alice) == []
    assert CreditHold.objects.get().status == "released"


@pytest.mark.django_db(transaction=True)  # closing a response closes the DB connection
def test_closing_a_stream_early_closes_upstream_and_charges_once(
    key_api, alice, fake_upstream, token_prices
):
    fake_upstream.behave(chunks=[f"w{n} " for n in range(50)], chunk_delay=0.02)
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    content = response.streaming_content
    next(content), next(content)
    response.close()  # what a WSGI server does when its client hangs up
    assert fake_upstream.stream_closed_early.wait(5)
    [entry] = usage_entries(alice)
    assert entry.estimated is True
    assert 0 < -entry.amount <= CreditHold.objects.get().amount
    assert UsageRecord.objects.get().status == "client_closed"


@pytest.mark.django_db(transaction=True)  # closing a response closes the DB connection
def test_a_stream_closed_before_its_first_byte_closes_the_upstream_and_pays_the_prompt(
    key_api, alice, fake_upstream
):
    fake_upstream.behave(chunks=[f"w{n} " for n in range(50)], chunk_delay=0.02)
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    response.close()  # the client hung up before the server asked for the first chunk
    assert fake_upstream.stream_closed_early.wait(5)
    assert CreditHold.objects.get().status == "settled"
    [entry] = usage_entries(alice)
    assert (entry.estimated, entry.completion_tokens) == (True, 0)
    assert entry.prompt_tokens > 0
    assert UsageRecord.objects.get().status == "client_closed"


def test_heartbeats_are_sent_while_the_upstream_is_silent(key_api, fake_upstream, settings):
    settings.STREAM_HEARTBEAT_SECONDS = 0.1
    fake_upstream.behave(chunks=["slow", " answer"], chunk_delay=0.35)
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    raw = b"".join(response.streaming_content)
    assert raw.count(b": keep-alive\n\n") >= 2
    assert raw.endswith(b"data: [DONE]\n\n")


def test_completions_and_responses_stream_too(key_api, fake_upstream):
    fake_upstream.behave(chunks=["a", "b"])
    legacy = sse_events(
        key_api.post("/v1/completions", {"prompt": "hi", "stream": True}, format="json")
    )
    assert "".join(e["choices"][0]["text"] for e in legacy[:-1]) == "ab"
    assert legacy[-2]["choices"][0]["finish_reason"] == "stop"
    assert legacy[0]["object"] == "text_completion"
    response = key_api.post("/v1/responses", {"input": "hi", "stream": True}, format="json")
    raw = b"".join(response.streaming_content).decode()
    kinds = [
        line.removeprefix("event: ") for line in raw.splitlines() if line.startswith("event: ")
    ]
    assert kinds[0] == "response.created"
    assert kinds.count("response.output_text.delta") == 2
    assert kinds[-1] == "response.completed"
