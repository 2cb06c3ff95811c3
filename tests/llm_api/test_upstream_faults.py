"""Every way an upstream can fail ends in its mapped answer and books that balance.

Each fault the fake upstream can produce (slow, a reset connection, broken Server-Sent Events, a
truncated stream, 5xx, 429, an answer that is not JSON, token counts that make no sense) is sent
through the real provider clients (the gateway's own wire client for OpenAI, the SDKs for Ollama
and Gemini), as a whole answer and as a stream. Each then must end in the answer the mapping in
`llm_api/providers/base.py` gives (never a 500, never a traceback in the log) and in a ledger
that balances: balance = the sum of the entries, nothing left held, no open hold, one usage
record with the right status; a call that failed before any output charged nothing, a stream
cut after some chunks charged (an estimate of) what was delivered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from billing.models import CreditHold, LedgerEntry
from llm_api import pending
from llm_api.models import UsageRecord
from tests.ledger import assert_invariants, assert_no_open_holds
from tests.llm_api.conftest import balance, chat, cost_of, sse_events

pytestmark = pytest.mark.usefixtures("upstream_providers", "token_prices", "own_pending_dir")

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "ollama": "ollama/llama3",
    "gemini": "gemini/gemini-2.0-flash",
}
CHUNKS = ["a", "b", "c", "d", "e"]  # one character a piece: a piece is a completion token
SLOW_TIMEOUT = 0.3  # the provider's `timeout` option in the slow cases
SLOW = 2.0  # how long the fake keeps the gateway waiting (it wakes when the test ends)
# An event each wire cannot parse, and a line that is no event at all.
BAD_JSON = {
    "openai": b"data: {not json\n\n",
    "gemini": b"data: {not json\n\n",
    "ollama": b"{not json\n",
}
NOT_AN_EVENT = {
    "openai": b"this is not an event\n\n",
    "gemini": b"this is not an event\n\n",
    "ollama": b"this is not an event\n",
}
HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Sign alice up in a millisecond instead of half a second (this file makes ~80 of her)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def own_pending_dir(settings, tmp_path):
    """Keep any journalled metering write in this test's folder (and out of data/)."""
    settings.PENDING_DIR = tmp_path / "pending"
    return settings.PENDING_DIR


@pytest.fixture
def tracebacks(caplog):
    """Return the log records that carry a traceback, or say a 500 happened."""
    caplog.set_level(logging.INFO)

    def found() -> list[str]:
        return [
            f"{record.name}: {record.getMessage()}"
            for record in caplog.records
            if record.exc_info or "Internal Server Error" in record.getMessage()
        ]

    return found


# --- what a fault must end in -------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """An HTTP error answer before any output: nothing charged, the hold released."""

    status: int
    code: str
    retry_after: str | None = None


@dataclass(frozen=True)
class Cut:
    """A stream that began, then ended in an error event after `delivered` pieces: those are
    charged (estimated), or nothing when none were delivered."""

    code: str
    delivered: int


@dataclass(frozen=True)
class Whole:
    """The whole answer arrived (what the fault disturbed did not matter)."""

    text: str = "".join(CHUNKS)


@dataclass(frozen=True)
class Fault:
    name: str
    knobs: dict[str, Any] = field(default_factory=dict)
    slow: bool = False  # with the provider's `timeout` option at SLOW_TIMEOUT


def case(provider: str, stream: bool, fault: Fault, outcome: Any, *marks: Any) -> Any:
    kind = "stream" if stream else "whole"
    return pytest.param(
        provider, stream, fault, outcome, id=f"{provider}-{kind}-{fault.name}", marks=marks
    )


# --- the faults ---------------------------------------------------------------------------------

SLOW_ANSWER = Fault("slow", {"delay": SLOW}, slow=True)
SLOW_FIRST_EVENT = Fault("slow-first-event", {"first_event_delay": SLOW}, slow=True)
SLOW_MID_STREAM = Fault("slow-mid-stream", {"stall_after": 2}, slow=True)
RESET_BEFORE_ANSWER = Fault("reset-before-answer", {"reset_before_answer": True})
RESET_MID_STREAM = Fault("reset-mid-stream", {"reset_after": 2})
DROP_MID_STREAM = Fault("drop-mid-stream", {"drop_after": 2})
ERROR_500 = Fault("500", {"status": 500})
ERROR_502_HTML = Fault("502-html", {"status": 502, "raw_body": HTML})
ERROR_503 = Fault("503-retry-after", {"status": 503, "retry_after": "7"})
ERROR_429 = Fault("429", {"status": 429, "retry_after": "3"})
NOT_JSON = Fault("200-not-json", {"raw_body": HTML})
TRUNCATED = Fault("truncated", {"end_after": 2})
EMPTY = Fault("empty-body", {"end_after": 0})


def bad_json(provider: str, at: int) -> Fault:
    return Fault(f"bad-json-at-{at}", {"garbage": BAD_JSON[provider], "garbage_at": at})


def not_an_event(provider: str) -> Fault:
    return Fault("not-an-event-line", {"garbage": NOT_AN_EVENT[provider], "garbage_at": 1})


UNAVAILABLE = Refused(502, "upstream_error")
TIMEOUT = Refused(504, "upstream_timeout")


def http_faults(provider: str, stream: bool) -> list[Any]:
    """The faults every provider meets the same way: an HTTP error before any output."""
    return [
        case(provider, stream, SLOW_ANSWER, TIMEOUT),
        case(provider, stream, RESET_BEFORE_ANSWER, Refused(502, "upstream_unreachable")),
        case(provider, stream, ERROR_500, UNAVAILABLE),
        case(provider, stream, ERROR_502_HTML, UNAVAILABLE),
        case(provider, stream, ERROR_503, Refused(502, "upstream_error", "7")),
        case(provider, stream, ERROR_429, Refused(429, "rate_limited", "3")),
    ]


CASES = [
    # --- OpenAI, through the gateway's own wire client ---
    *http_faults("openai", stream=False),
    case("openai", False, NOT_JSON, UNAVAILABLE),
    *http_faults("openai", stream=True),
    # The OpenAI stream starts with its headers: what fails after them is an error event.
    case("openai", True, SLOW_FIRST_EVENT, Cut("upstream_timeout", 0)),
    case("openai", True, SLOW_MID_STREAM, Cut("upstream_timeout", 2)),
    case("openai", True, RESET_MID_STREAM, Cut("upstream_error", 2)),
    case("openai", True, DROP_MID_STREAM, Cut("upstream_error", 2)),
    case("openai", True, bad_json("openai", 0), Cut("upstream_error", 0)),
    case("openai", True, bad_json("openai", 2), Cut("upstream_error", 2)),
    # SSE: a line that is no field of an event is ignored (WHATWG HTML, 9.2.6).
    case("openai", True, not_an_event("openai"), Whole()),
    case("openai", True, TRUNCATED, Cut("upstream_error", 2)),
    case("openai", True, NOT_JSON, UNAVAILABLE),
    case("openai", True, EMPTY, Cut("upstream_error", 0)),
    # --- Ollama, through its SDK (NDJSON streams) ---
    *http_faults("ollama", stream=False),
    case("ollama", False, NOT_JSON, UNAVAILABLE),
    *http_faults("ollama", stream=True),
    # Ollama and Gemini read the first chunk before answering: a fault there is an HTTP error.
    case("ollama", True, SLOW_FIRST_EVENT, TIMEOUT),
    case("ollama", True, SLOW_MID_STREAM, Cut("upstream_timeout", 2)),
    case("ollama", True, RESET_MID_STREAM, Cut("upstream_error", 2)),
    case("ollama", True, DROP_MID_STREAM, Cut("upstream_error", 2)),
    case("ollama", True, bad_json("ollama", 0), UNAVAILABLE),
    case("ollama", True, bad_json("ollama", 2), Cut("upstream_error", 2)),
    case("ollama", True, NOT_JSON, UNAVAILABLE),
    case("ollama", True, TRUNCATED, Cut("upstream_error", 2)),
    case("ollama", True, not_an_event("ollama"), Cut("upstream_error", 1)),
    case("ollama", True, EMPTY, UNAVAILABLE),
    # --- Gemini, through google-genai (SSE streams) ---
    *http_faults("gemini", stream=False),
    case("gemini", False, NOT_JSON, UNAVAILABLE),
    *http_faults("gemini", stream=True),
    case("gemini", True, SLOW_FIRST_EVENT, TIMEOUT),
    case("gemini", True, SLOW_MID_STREAM, Cut("upstream_timeout", 2)),
    case("gemini", True, RESET_MID_STREAM, Cut("upstream_error", 2)),
    case("gemini", True, DROP_MID_STREAM, Cut("upstream_error", 2)),
    case("gemini", True, bad_json("gemini", 0), UNAVAILABLE),
    case("gemini", True, bad_json("gemini", 2), Cut("upstream_error", 2)),
    case("gemini", True, NOT_JSON, UNAVAILABLE),
    case("gemini", True, TRUNCATED, Cut("upstream_error", 2)),
    # google-genai parses every line of the stream as JSON (no SSE field parsing).
    case("gemini", True, not_an_event("gemini"), Cut("upstream_error", 1)),
    case("gemini", True, EMPTY, UNAVAILABLE),
]


# --- the calls and the books ------------------------------------------------------------------


def call(client, provider: str, *, stream: bool) -> tuple[Any, list]:
    """Make one chat call; return the response and, for a stream, its events."""
    response = chat(client, model=MODELS[provider], max_tokens=50, stream=stream)
    if stream and response.status_code == 200:
        return response, sse_events(response)
    return response, []


def shown(response) -> Any:
    """Return what a failed assertion shows of a response: its body, or that it streams."""
    return "a stream" if response.streaming else response.content


def error_of(response) -> dict[str, Any]:
    """Return the `error` of an OpenAI-shaped error answer."""
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return response.json()["error"]


def usage_of(request_id: str) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(request_id=request_id, kind=LedgerEntry.Kind.USAGE))


def assert_books(user, request_id: str, status: str, error_code: str = "") -> UsageRecord:
    """Assert the ledger balances after one request and return its one usage record."""
    assert pending.waiting() == [], "a metering write was journalled instead of written"
    assert_invariants(user)
    assert_no_open_holds()
    assert CreditHold.objects.filter(request_id=request_id).count() == 1
    [record] = UsageRecord.objects.filter(request_id=request_id)
    assert (record.status, record.error_code) == (status, error_code)
    return record


def assert_charged_nothing(user, request_id: str, before: int) -> None:
    assert usage_of(request_id) == []
    assert balance(user) == before
    assert CreditHold.objects.get(request_id=request_id).status == "released"


def assert_charged_estimate(user, request_id: str, before: int, pieces: int) -> None:
    """Assert one usage entry charged an estimate of `pieces` one-token pieces."""
    [entry] = usage_of(request_id)
    assert entry.estimated is True
    assert entry.completion_tokens == pieces
    assert entry.prompt_tokens > 0
    assert -entry.amount == cost_of(entry.prompt_tokens, entry.completion_tokens)
    assert balance(user) == before + entry.amount
    record = UsageRecord.objects.get(request_id=request_id)
    assert (record.prompt_tokens, record.completion_tokens) == (
        entry.prompt_tokens,
        entry.completion_tokens,
    )
    assert record.credits == -entry.amount


def streamed_text(events: list) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "stream", "fault", "outcome"), CASES)
def test_a_fault_ends_in_its_mapped_answer_and_balanced_books(
    provider, stream, fault, outcome, key_api, alice, fake_upstream, settings, tracebacks
):
    if fault.slow:
        settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=SLOW_TIMEOUT)
    fake_upstream.behave(chunks=CHUNKS, **fault.knobs)
    before = balance(alice)

    response, events = call(key_api, provider, stream=stream)

    request_id = response["x-request-id"]
    assert response.status_code != 500
    if isinstance(outcome, Refused):
        assert response.status_code == outcome.status, shown(response)
        error = error_of(response)
        assert error["code"] == outcome.code, error
        assert error["message"]
        assert response.get("Retry-After") == outcome.retry_after
        assert_books(alice, request_id, "upstream_error", outcome.code)
        assert_charged_nothing(alice, request_id, before)
    elif isinstance(outcome, Cut):
        assert response.status_code == 200
        assert events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == outcome.code, events[-2]
        assert streamed_text(events) == "".join(CHUNKS[: outcome.delivered])
        assert_books(alice, request_id, "upstream_error", outcome.code)
        if outcome.delivered:
            assert_charged_estimate(alice, request_id, before, outcome.delivered)
        else:
            assert_charged_nothing(alice, request_id, before)
    else:
        assert response.status_code == 200, shown(response)
        assert events[-1] == "[DONE]"
        assert not any("error" in event for event in events if isinstance(event, dict))
        assert streamed_text(events) == outcome.text
        assert_books(alice, request_id, "ok")
        [entry] = usage_of(request_id)
        assert (entry.prompt_tokens, entry.completion_tokens, entry.estimated) == (11, 7, False)
        assert balance(alice) == before - cost_of(11, 7)
    assert tracebacks() == []


# --- token counts that make no sense --------------------------------------------------------------

# Each provider's own words for "prompt -5 / completion 7", "10**15 tokens", "'11' as text".
NONSENSE_USAGE = {
    "negative": {
        "openai": {"prompt_tokens": -5, "completion_tokens": 7, "total_tokens": 2},
        "gemini": {"promptTokenCount": -5, "candidatesTokenCount": 7, "totalTokenCount": 2},
        "ollama": {"prompt_eval_count": -5, "eval_count": 7},
    },
    "absurd": {
        "openai": {"prompt_tokens": 11, "completion_tokens": 10**15, "total_tokens": 10**15 + 11},
        "gemini": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 10**15,
            "totalTokenCount": 10**15 + 11,
        },
        "ollama": {"prompt_eval_count": 11, "eval_count": 10**15},
    },
    # Within the ledger's limits, beyond a 32-bit token count column (PostgreSQL's integer).
    "beyond-int32": {
        "openai": {"prompt_tokens": 11, "completion_tokens": 2**31, "total_tokens": 2**31 + 11},
        "gemini": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 2**31,
            "totalTokenCount": 2**31 + 11,
        },
        "ollama": {"prompt_eval_count": 11, "eval_count": 2**31},
    },
    "text": {
        "openai": {"prompt_tokens": "11", "completion_tokens": 7, "total_tokens": 18},
        "gemini": {"promptTokenCount": "11", "candidatesTokenCount": 7, "totalTokenCount": 18},
        "ollama": {"prompt_eval_count": "11", "eval_count": 7},
    },
}


def nonsense_cases() -> list[Any]:
    return [
        pytest.param(
            provider,
            stream,
            kind,
            id=f"{provider}-{'stream' if stream else 'whole'}-{kind}",
        )
        for kind in NONSENSE_USAGE
        for provider in MODELS
        for stream in (False, True)
    ]


@pytest.mark.parametrize(("provider", "stream", "kind"), nonsense_cases())
def test_token_counts_that_make_no_sense_never_charge_below_zero_or_past_the_hold_unnoted(
    provider, stream, kind, key_api, alice, fake_upstream, tracebacks
):
    fake_upstream.behave(
        text="".join(CHUNKS), chunks=CHUNKS, raw_usage=NONSENSE_USAGE[kind][provider]
    )
    before = balance(alice)

    response, events = call(key_api, provider, stream=stream)

    assert response.status_code == 200, shown(response)
    if stream:
        assert events[-1] == "[DONE]"
        assert streamed_text(events) == "".join(CHUNKS)
    else:
        assert response.json()["choices"][0]["message"]["content"] == "".join(CHUNKS)
    request_id = response["x-request-id"]
    record = assert_books(alice, request_id, "ok")
    [entry] = usage_of(request_id)
    held = CreditHold.objects.get(request_id=request_id).amount
    assert entry.amount <= 0  # never a negative charge
    assert -entry.amount <= held or entry.note, (entry.amount, held)
    assert entry.prompt_tokens >= 0 and entry.completion_tokens >= 0
    assert record.credits >= -entry.amount
    assert balance(alice) == before + entry.amount
    assert tracebacks() == []
