"""Timeouts per provider: connect, first byte, gap between chunks, total.

Each timeout is made to run out against the fake upstream (a real socket that is slow on
purpose), through the API: the status, the message (which timeout, its value, what sets it) and
the ledger (nothing charged before the first chunk, what was delivered after it).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from billing.models import CreditHold
from llm_api.checks import check_llm_timeouts
from llm_api.models import UsageRecord
from llm_api.providers import providers
from llm_api.providers.base import ChatRequest, Message, ProviderError
from llm_api.providers.timeouts import Timeouts
from tests.fake_upstream import unanswered_url
from tests.llm_api.conftest import balance, chat, sse_events, usage_entries

ROOT = Path(__file__).resolve().parents[2]
# The provider/model each backend is called as; openai goes through the wire client, ollama and
# gemini through their SDKs (httpx) and the watchdog.
MODELS = {"openai": "openai/gpt-4o-mini", "ollama": "ollama/llama-test", "gemini": "gemini/gem-1"}


@pytest.fixture
def timeouts(settings, fake_upstream):
    """Return a function that sets every provider's timeouts (OPTIONS), the rest generous."""

    def configure(**options):
        settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=5.0, **options)

    return configure


def error_of(response) -> dict:
    return response.json()["error"]


def stream_error(events: list) -> dict:
    assert events[-1] == "[DONE]"
    return events[-2]["error"]


def deltas(events: list) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict) and "choices" in event
        for choice in event["choices"]
    )


def assert_nothing_charged(user, before: int) -> None:
    assert balance(user) == before
    assert usage_entries(user) == []
    assert CreditHold.objects.get().status == "released"
    record = UsageRecord.objects.get()
    assert (record.status, record.error_code) == ("upstream_error", "upstream_timeout")


def assert_delivered_charged(user, delivered: int) -> None:
    [entry] = usage_entries(user)
    assert entry.estimated is True
    assert entry.completion_tokens == delivered  # one token a delta, as estimated
    record = UsageRecord.objects.get()
    assert (record.status, record.error_code) == ("upstream_error", "upstream_timeout")
    assert record.completion_tokens == delivered


# --- where the timeouts come from ----------------------------------------------------------


def test_a_provider_takes_the_settings_then_its_timeout_option_then_each_option(settings):
    settings.LLM_CONNECT_TIMEOUT, settings.LLM_FIRST_BYTE_TIMEOUT = 11.0, 301.0
    settings.LLM_GAP_TIMEOUT, settings.LLM_TOTAL_TIMEOUT = 121.0, 1801.0
    backend = "llm_api.providers.ollama.OllamaProvider"
    settings.LLM_PROVIDERS = {
        "plain": {"BACKEND": backend, "OPTIONS": {"host": "http://127.0.0.1:1"}},
        "legacy": {"BACKEND": backend, "OPTIONS": {"host": "http://x", "timeout": 30}},
        "tuned": {
            "BACKEND": backend,
            "OPTIONS": {"host": "http://x", "timeout": 30, "gap_timeout": 2, "total_timeout": 60},
        },
    }
    assert providers["plain"].timeouts == Timeouts(11.0, 301.0, 121.0, 1801.0)
    assert providers["legacy"].timeouts == Timeouts(30.0, 30.0, 30.0, 1801.0)
    assert providers["tuned"].timeouts == Timeouts(30.0, 30.0, 2.0, 60.0)


SETTINGS_PROBE = """
import json, django
django.setup()
from django.conf import settings
names = ["CONNECT", "FIRST_BYTE", "GAP", "TOTAL"]
print(json.dumps([getattr(settings, f"LLM_{name}_TIMEOUT") for name in names]))
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [10.0, 300.0, 120.0, 1800.0]),
        # LLM_TIMEOUT as it was: connect and every read, unless one of them is set itself.
        ({"LLM_TIMEOUT": "45"}, [45.0, 45.0, 45.0, 1800.0]),
        ({"LLM_TIMEOUT": "45", "LLM_GAP_TIMEOUT": "7"}, [45.0, 45.0, 7.0, 1800.0]),
        ({"LLM_FIRST_BYTE_TIMEOUT": "900", "LLM_TOTAL_TIMEOUT": "3600"}, [10, 900, 120, 3600]),
    ],
)
def test_the_settings_read_the_four_timeouts_and_the_old_one(env, expected, tmp_path):
    names = [f"LLM_{n}TIMEOUT" for n in ("", "CONNECT_", "FIRST_BYTE_", "GAP_", "TOTAL_")]
    clean = {key: value for key, value in os.environ.items() if key not in names}
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE],
        cwd=tmp_path,  # no .env here
        env={**clean, **env, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.parametrize("value", [0, -1, "30", True, float("nan"), float("inf")])
@pytest.mark.parametrize("option", ["connect_timeout", "first_byte_timeout", "timeout"])
def test_a_timeout_option_that_is_not_a_positive_number_fails_the_check(settings, option, value):
    settings.LLM_PROVIDERS = {
        "ollama": {
            "BACKEND": "llm_api.providers.ollama.OllamaProvider",
            "OPTIONS": {"host": "http://x", option: value},
        }
    }
    [error] = check_llm_timeouts()
    assert error.id == "llm_api.E010"
    assert error.msg == (
        f"LLM_PROVIDERS['ollama'] OPTIONS '{option}' must be a number of seconds above 0, "
        f"not {value!r}."
    )


@pytest.mark.parametrize("name", ["LLM_GAP_TIMEOUT", "LLM_TOTAL_TIMEOUT", "LLM_TIMEOUT"])
def test_a_timeout_setting_that_is_not_positive_fails_the_check(settings, name):
    setattr(settings, name, 0.0)
    [error] = check_llm_timeouts()
    assert error.id == "llm_api.E011"
    assert error.msg == f"{name} must be a number of seconds above 0, not 0.0."


def test_the_shipped_timeouts_and_good_options_pass_the_check(settings, fake_upstream):
    assert check_llm_timeouts() == []
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=5, gap_timeout=0.5)
    assert check_llm_timeouts() == []


# --- connect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_a_host_that_never_accepts_runs_out_the_connect_timeout(
    key_api, alice, settings, fake_upstream, provider
):
    entries = fake_upstream.llm_providers(timeout=5.0, connect_timeout=0.3)
    with unanswered_url() as url:
        entries["openai"]["OPTIONS"]["base_url"] = f"{url}/v1"
        entries["ollama"]["OPTIONS"]["host"] = url
        settings.LLM_PROVIDERS = entries
        before = balance(alice)
        response = chat(key_api, model=MODELS[provider])
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"
    assert error_of(response)["message"] == (
        f"The provider '{provider}' could not be connected to within 0.3 s (the connect "
        f"timeout: set LLM_CONNECT_TIMEOUT, or 'connect_timeout' in the OPTIONS of "
        f"LLM_PROVIDERS['{provider}'])."
    )
    assert_nothing_charged(alice, before)


# --- first byte ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "ollama", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_headers_later_than_the_first_byte_timeout_are_a_504_and_charge_nothing(
    key_api, alice, fake_upstream, timeouts, provider, stream
):
    timeouts(first_byte_timeout=0.3)
    fake_upstream.behave(delay=3)
    before = balance(alice)
    response = chat(key_api, model=MODELS[provider], stream=stream)
    assert response.status_code == 504
    error = error_of(response)
    assert error["code"] == "upstream_timeout"
    assert error["message"].startswith(
        f"The provider '{provider}' did not start its answer within 0.3 s (the first-byte "
        "timeout: set LLM_FIRST_BYTE_TIMEOUT, or 'first_byte_timeout' in the OPTIONS"
    )
    assert_nothing_charged(alice, before)


def test_a_stream_whose_first_event_comes_late_ends_with_a_first_byte_error_and_no_charge(
    key_api, alice, fake_upstream, timeouts
):
    """The headers come at once; the wire client waits for the first event itself."""
    timeouts(first_byte_timeout=0.3)
    fake_upstream.behave(chunks=["a", "b"], first_event_delay=3)
    before = balance(alice)
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    error = stream_error(events)
    assert error["code"] == "upstream_timeout"
    assert "did not start its answer within 0.3 s (the first-byte timeout" in error["message"]
    assert deltas(events) == ""
    assert_nothing_charged(alice, before)


@pytest.mark.parametrize("provider", ["openai", "ollama", "gemini"])
def test_a_first_byte_later_than_the_gap_but_within_its_own_timeout_is_fine(
    key_api, alice, fake_upstream, timeouts, provider
):
    """A local model thinking before its first token is not a stalled stream."""
    timeouts(first_byte_timeout=5, gap_timeout=0.2)
    fake_upstream.behave(chunks=["a", "b", "c"], delay=0.6, first_event_delay=0.6)
    events = sse_events(chat(key_api, model=MODELS[provider], stream=True))
    assert deltas(events) == "abc"
    assert all("error" not in event for event in events[:-1])
    assert UsageRecord.objects.get().status == "ok"


def test_a_first_byte_timeout_can_be_retried(fake_upstream, timeouts):
    timeouts(first_byte_timeout=0.3)
    fake_upstream.behave(delay=3)
    request = ChatRequest("gpt-4o-mini", [Message("user", "Hi")], max_tokens=5)
    with pytest.raises(ProviderError) as raised:
        providers["openai"].chat(request)
    assert (raised.value.status_code, raised.value.retryable) == (504, True)


# --- gap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "ollama", "gemini"])
def test_a_stream_that_stalls_after_its_first_chunks_ends_with_a_gap_error_and_charges_them(
    key_api, alice, fake_upstream, timeouts, token_prices, provider
):
    timeouts(gap_timeout=0.3)
    fake_upstream.behave(chunks=["a", "b", "c", "d"], stall_after=2, usage=False)
    response = chat(key_api, model=MODELS[provider], stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    assert deltas(events) == "ab"
    error = stream_error(events)
    assert error["code"] == "upstream_timeout"
    assert error["message"] == (
        f"The provider '{provider}' stopped sending in the middle of its answer for more than "
        f"0.3 s (the gap timeout: set LLM_GAP_TIMEOUT, or 'gap_timeout' in the OPTIONS of "
        f"LLM_PROVIDERS['{provider}'])."
    )
    assert_delivered_charged(alice, delivered=2)
    # The upstream connection was cut, so the upstream stops generating.
    assert fake_upstream.stream_closed_early.wait(5)


def test_the_gap_runs_out_between_heartbeats_too(key_api, alice, fake_upstream, timeouts, settings):
    """The stream speaks to its client while the upstream is silent, and still gives up."""
    settings.STREAM_HEARTBEAT_SECONDS = 0.1
    timeouts(gap_timeout=0.6)
    fake_upstream.behave(chunks=["a", "b", "c"], stall_after=1, usage=False)
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    raw = b"".join(response.streaming_content)
    assert raw.count(b": keep-alive\n\n") >= 2
    assert b'"code":"upstream_timeout"' in raw
    assert b"the gap timeout" in raw
    assert raw.endswith(b"data: [DONE]\n\n")
    assert_delivered_charged(alice, delivered=1)


@pytest.mark.parametrize("provider", ["openai", "ollama", "gemini"])
def test_chunks_that_keep_coming_within_the_gap_are_not_cut(
    key_api, fake_upstream, timeouts, provider
):
    timeouts(gap_timeout=0.5)
    fake_upstream.behave(chunks=["a", "b", "c", "d", "e", "f"], chunk_delay=0.15)
    events = sse_events(chat(key_api, model=MODELS[provider], stream=True))
    assert deltas(events) == "abcdef"
    assert UsageRecord.objects.get().status == "ok"


def test_a_gap_timeout_after_the_first_chunk_is_not_retryable(fake_upstream, timeouts):
    timeouts(gap_timeout=0.3)
    fake_upstream.behave(chunks=["a", "b"], stall_after=1)
    request = ChatRequest("gpt-4o-mini", [Message("user", "Hi")], max_tokens=5)
    with providers["openai"].chat_stream(request) as stream:
        chunks = iter(stream)
        assert next(chunks).text == "a"
        with pytest.raises(ProviderError) as raised:
            next(chunks)
    assert (raised.value.code, raised.value.retryable) == ("upstream_timeout", False)


# --- total -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "ollama", "gemini"])
def test_a_stream_longer_than_the_total_ends_with_a_total_error_and_charges_what_came(
    key_api, alice, fake_upstream, timeouts, token_prices, provider
):
    timeouts(total_timeout=1.0, gap_timeout=5)
    pieces = [f"w{n} " for n in range(20)]
    fake_upstream.behave(chunks=pieces, chunk_delay=0.2, usage=False)
    events = sse_events(chat(key_api, model=MODELS[provider], stream=True))
    error = stream_error(events)
    assert error["code"] == "upstream_timeout"
    assert error["message"] == (
        f"The provider '{provider}' did not finish its answer within 1 s (the total timeout: "
        f"set LLM_TOTAL_TIMEOUT, or 'total_timeout' in the OPTIONS of "
        f"LLM_PROVIDERS['{provider}'])."
    )
    delivered = deltas(events)
    assert 0 < len(delivered) < len("".join(pieces))
    assert_delivered_charged(alice, delivered=delivered.count(" "))


def test_a_whole_answer_longer_than_the_total_is_a_504(key_api, alice, fake_upstream, timeouts):
    timeouts(total_timeout=0.5, first_byte_timeout=5)
    fake_upstream.behave(delay=3)
    before = balance(alice)
    response = chat(key_api, model="openai/gpt-4o-mini")
    assert response.status_code == 504
    assert (
        "did not finish its answer within 0.5 s (the total timeout" in error_of(response)["message"]
    )
    assert_nothing_charged(alice, before)
