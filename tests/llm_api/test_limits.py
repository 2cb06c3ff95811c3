"""Per-key and per-user limits: requests per minute, tokens per minute, requests in flight, the
`x-ratelimit-*` headers, and seed 001's fair model slots, under real threads.

The limits count in Redis when REDIS_URL is set and in this process otherwise; the suite runs
both ways. Tests parametrized with "local" also force the in-process store (the local-memory
cache) on a Redis run. Two live gateway processes sharing Redis: tests/e2e/test_limits_shared.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.test import APIClient

from billing.models import ApiKey, CreditHold
from billing.services import api_key_create, api_key_update, credits_grant
from llm_api.limits import store as limit_store
from llm_api.limits.rules import duration
from llm_api.limits.store import Counter, Kind, LocalStore
from llm_api.models import UsageRecord
from tests.llm_api.conftest import balance
from tests.llm_api.test_one_pipeline import DETAIL, OPENAI, ROUTES, Route, params
from tests.threads import in_threads

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("upstream_providers"),
]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "openai/gpt-4o"
HI = [{"role": "user", "content": "Hi"}]
CHAT = "/v1/chat/completions"
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# "Hi" bounds its prompt at 2 tokens (a token per byte) plus 4 of framing; with max_tokens 40
# a call counts 46 tokens at admission. The fake upstream reports 11 + 7 = 18 really used.
ESTIMATE, USED = 46, 18


@pytest.fixture(autouse=True)
def _fresh_counts(settings):
    """Seed routes on the test model; no counts left from an earlier test in this process, and
    no stream left open by a failed one."""
    settings.GENERATE_MODEL = settings.TEXT_MODEL = settings.IMAGE_MODEL = MODEL
    limit_store.local_store.clear()
    yield
    while OPEN:
        OPEN.pop().response.close()
    limit_store.local_store.clear()


# --- helpers -------------------------------------------------------------------------------------

OPEN: list[Opened] = []  # closed at the end of each test, whatever happened


def client(key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=key)
    return api


def chat(key: str, **body: Any):
    return client(key).post(CHAT, {"model": MODEL, "messages": HI, **body}, format="json")


def limit_key(user, **limits: int | None) -> ApiKey:
    key = ApiKey.objects.filter(user=user).first()
    return api_key_update(api_key=key, data=limits)


class Opened:
    """A streamed answer whose first piece has arrived; the rest is read later."""

    def __init__(self, response: Any) -> None:
        self.response = response
        OPEN.append(self)
        self.chunks: Iterator[bytes] | None = None
        self.first = b""
        if response.status_code == 200:
            self.chunks = iter(response.streaming_content)
            self.first = next(self.chunks)

    def finish(self) -> bytes:
        body = self.first + b"".join(self.chunks or [])
        self.response.close()
        return body


def open_streams(count: int, post: Callable[[], Any]) -> tuple[list[Opened], list[Any]]:
    """Open `count` streams at once; return (admitted ones, at their first piece; refusals)."""
    results = in_threads(count, lambda _: Opened(post()))
    errors = [result for result in results if not isinstance(result, Opened)]
    assert not errors, errors
    admitted = [opened for opened in results if opened.response.status_code == 200]
    refused = [opened.response for opened in results if opened.response.status_code != 200]
    return admitted, refused


def retry_after(response) -> int:
    return int(response["Retry-After"])


# --- requests in flight --------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["configured", "local"])
def test_a_key_allowed_ten_in_flight_gets_exactly_ten_upstream_at_once(
    cache, alice, alice_key, fake_upstream, settings
):
    if cache == "local":
        settings.CACHES = LOCMEM
    key = limit_key(alice, concurrency_limit=10, rpm_limit=1000, tpm_limit=1_000_000)
    # Every stream sends its first piece, then waits for the gate: all admitted ones stay open.
    gate = fake_upstream.behave(chunks=["one", "two"], lockstep=True).gate

    admitted, refused = open_streams(
        50, lambda: client(alice_key).post(CHAT, {"model": MODEL, "messages": HI, "stream": True})
    )

    assert (len(admitted), len(refused)) == (10, 40)
    assert len(fake_upstream.requests) == 10
    for response in refused:
        assert response.status_code == 429
        assert response.json() == {
            "error": {
                "message": "Too many requests at once: this API key's limit of 10 requests in "
                "flight at once (its concurrency_limit; the key's owner can change it with "
                f"PATCH /api/keys/{key.pk}/). Retry when one of them has ended.",
                "type": "rate_limit_error",
                "param": None,
                "code": "concurrency_limit_exceeded",
            }
        }
        assert response["Retry-After"] == "1"
        assert response["x-ratelimit-limit-concurrency"] == "10"
        assert response["x-ratelimit-remaining-concurrency"] == "0"
        assert response["x-ratelimit-limit-requests"] == "1000"
        assert 990 <= int(response["x-ratelimit-remaining-requests"]) <= 1000
        assert response["x-ratelimit-limit-tokens"] == "1000000"
    # The refused calls held no credits and left no usage record.
    assert CreditHold.objects.count() == 10
    gate.open()
    for opened in admitted:
        assert opened.finish().endswith(b"data: [DONE]\n\n")
    assert UsageRecord.objects.count() == 10
    # Every place came back: the next call is the only one in flight.
    again = chat(alice_key)
    assert again.status_code == 200
    assert again["x-ratelimit-remaining-concurrency"] == "9"


def test_a_place_in_flight_comes_back_when_the_call_fails(alice, alice_key, fake_upstream):
    limit_key(alice, concurrency_limit=1)
    fake_upstream.behave(status=500)
    assert chat(alice_key).status_code == 502
    assert chat(alice_key, stream=True).status_code == 502
    credits_grant(user=alice, amount=-balance(alice), note="spent")
    assert chat(alice_key).status_code == 402
    credits_grant(user=alice, amount=10**9, note="back")
    fake_upstream.behave(text="ok")
    assert chat(alice_key).status_code == 200


def test_a_place_in_flight_comes_back_when_the_client_hangs_up(alice, alice_key, fake_upstream):
    limit_key(alice, concurrency_limit=1)
    gate = fake_upstream.behave(chunks=["one", "two"], lockstep=True).gate
    opened = Opened(chat(alice_key, stream=True))
    assert chat(alice_key).status_code == 429
    opened.response.close()  # hung up after the first piece
    gate.open()
    fake_upstream.behave(text="free again")
    assert chat(alice_key).status_code == 200


# --- requests per minute --------------------------------------------------------------------------


def test_requests_per_minute_admit_exactly_the_limit_of_concurrent_calls(
    alice, alice_key, fake_upstream
):
    key = limit_key(alice, rpm_limit=7)

    responses = in_threads(20, lambda _: chat(alice_key))

    ok = [response for response in responses if response.status_code == 200]
    refused = [response for response in responses if response.status_code == 429]
    assert (len(ok), len(refused)) == (7, 13)
    assert len(fake_upstream.requests) == 7
    # Each admitted call saw the count with itself in it: 6 left, 5 left, … 0 left.
    assert sorted(int(r["x-ratelimit-remaining-requests"]) for r in ok) == list(range(7))
    for response in refused:
        wait = retry_after(response)
        assert 1 <= wait <= 60
        assert response["x-ratelimit-limit-requests"] == "7"
        assert response["x-ratelimit-remaining-requests"] == "0"
        assert response.json()["error"] == {
            "message": "Rate limit reached: this API key's limit of 7 requests per minute (its "
            "rpm_limit; the key's owner can change it with PATCH "
            f"/api/keys/{key.pk}/); 7 counted in the last minute. Retry in {wait} s.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }


def test_the_user_default_counts_every_key_of_the_user_together(
    alice, alice_jwt, bob, settings, fake_upstream
):
    settings.DEFAULT_RPM_LIMIT = 3
    keys = [api_key_create(user=alice, name=f"key {n}")[1] for n in range(2)]
    bob_key = api_key_create(user=bob, name="bob's")[1]

    assert [chat(keys[n % 2]).status_code for n in range(3)] == [200, 200, 200]
    refused = chat(keys[1])
    signed_in = alice_jwt.post(CHAT, {"model": MODEL, "messages": HI}, format="json")

    assert refused.status_code == signed_in.status_code == 429
    message = refused.json()["error"]["message"]
    assert message.startswith(
        "Rate limit reached: your account's limit of 3 requests per minute over all its keys "
        "together (the gateway's DEFAULT_RPM_LIMIT, set by its operator); 3 counted"
    )
    assert chat(bob_key).status_code == 200  # bob counts on his own


def test_a_keys_own_limit_narrows_that_key_alone(alice, settings, fake_upstream):
    settings.DEFAULT_RPM_LIMIT = 100
    narrow = api_key_create(user=alice, name="narrow", rpm_limit=1)[1]
    free = api_key_create(user=alice, name="free")[1]

    first, second = chat(narrow), chat(narrow)
    assert (first.status_code, second.status_code) == (200, 429)
    # The headers name the limit nearest to running out: the key's own.
    assert first["x-ratelimit-limit-requests"] == "1"
    assert first["x-ratelimit-remaining-requests"] == "0"
    assert "this API key's limit of 1 requests per minute" in second.json()["error"]["message"]
    other = chat(free)
    assert other.status_code == 200
    # The user's default counts both keys' calls; the refused one was counted nowhere.
    assert other["x-ratelimit-limit-requests"] == "100"
    assert other["x-ratelimit-remaining-requests"] == "98"


def test_a_limit_set_through_the_api_applies_at_once(alice, alice_jwt, alice_key, fake_upstream):
    unlimited = chat(alice_key)
    assert unlimited.status_code == 200
    assert "x-ratelimit-limit-requests" not in unlimited  # no limit, no headers

    key = ApiKey.objects.get(user=alice)
    changed = alice_jwt.patch(f"/api/keys/{key.pk}/", {"rpm_limit": 1}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["rpm_limit"] == 1

    assert chat(alice_key).status_code == 200
    assert chat(alice_key).status_code == 429


# --- tokens per minute ----------------------------------------------------------------------------


def test_tokens_per_minute_count_the_estimate_then_the_real_usage(alice, alice_key, fake_upstream):
    key = limit_key(alice, tpm_limit=70)

    first = chat(alice_key, max_tokens=40)  # 46 at admission, 18 once settled
    second = chat(alice_key, max_tokens=40)  # 18 + 46 = 64: fits only because of the correction
    third = chat(alice_key, max_tokens=40)  # 18 + 18 + 46 = 82: over

    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert first["x-ratelimit-limit-tokens"] == "70"
    assert first["x-ratelimit-remaining-tokens"] == str(70 - ESTIMATE)
    assert second["x-ratelimit-remaining-tokens"] == str(70 - USED - ESTIMATE)
    wait = retry_after(third)
    assert 55 <= wait <= 60  # the first call's 18 tokens must leave the window
    assert third["x-ratelimit-remaining-tokens"] == str(70 - 2 * USED)
    assert third.json()["error"]["message"] == (
        "Rate limit reached: this API key's limit of 70 tokens per minute (its tpm_limit; the "
        f"key's owner can change it with PATCH /api/keys/{key.pk}/); 36 counted in the last "
        f"minute, and this request counts {ESTIMATE} (its prompt plus max_tokens). Retry in "
        f"{wait} s."
    )
    assert len(fake_upstream.requests) == 2


def test_concurrent_first_calls_cannot_both_pass_a_token_budget(alice, alice_key, fake_upstream):
    limit_key(alice, tpm_limit=70)  # room for one estimate of 46, not two
    gate = fake_upstream.behave(chunks=["one", "two"], lockstep=True).gate

    admitted, refused = open_streams(2, lambda: chat(alice_key, stream=True, max_tokens=40))

    assert (len(admitted), len(refused)) == (1, 1)
    assert refused[0].status_code == 429
    assert refused[0]["x-ratelimit-remaining-tokens"] == str(70 - ESTIMATE)
    gate.open()
    assert admitted[0].finish().endswith(b"data: [DONE]\n\n")
    # Settled at 18 tokens: a call of 46 fits again.
    assert chat(alice_key, max_tokens=40).status_code == 200


def test_a_call_that_fails_before_its_answer_counts_no_tokens(alice, alice_key, fake_upstream):
    limit_key(alice, tpm_limit=50)  # one estimate of 46 at a time
    fake_upstream.behave(status=500)
    failed = chat(alice_key, max_tokens=40)
    assert failed.status_code == 502
    # The error carries the headers of its admission.
    assert failed["x-ratelimit-remaining-tokens"] == str(50 - ESTIMATE)
    credits_grant(user=alice, amount=-balance(alice), note="spent")
    assert chat(alice_key, max_tokens=40).status_code == 402  # refused before the upstream
    credits_grant(user=alice, amount=10**9, note="back")
    fake_upstream.behave(text="ok")
    assert chat(alice_key, max_tokens=40).status_code == 200


def test_a_call_larger_than_the_token_limit_is_refused_with_what_to_change(
    alice, alice_key, fake_upstream
):
    key = limit_key(alice, tpm_limit=20)
    refused = chat(alice_key, max_tokens=40)
    assert refused.status_code == 429
    assert "Retry-After" not in refused  # no wait lets it in
    assert refused.json()["error"] == {
        "message": f"This request counts {ESTIMATE} tokens (its prompt, at most one token per "
        "byte, plus max_tokens), more than this API key's limit of 20 tokens per minute (its "
        f"tpm_limit; the key's owner can change it with PATCH /api/keys/{key.pk}/): lower "
        "max_tokens or shorten the prompt.",
        "type": "rate_limit_error",
        "param": None,
        "code": "request_too_large",
    }
    assert fake_upstream.requests == []
    assert chat(alice_key, max_tokens=10).status_code == 200  # 6 + 10 fits


# --- every route: the headers on success, the 429 in the route's own shape ----------------------


def error_body(route: Route, message: str, code: str) -> dict[str, Any]:
    if route.errors == OPENAI:
        return {
            "error": {"message": message, "type": "rate_limit_error", "param": None, "code": code}
        }
    if route.errors == DETAIL:
        return {"detail": message, "code": code}
    return {"error": HTTPStatus(429).phrase, "message": message, "code": code}


@pytest.mark.parametrize("route", params(ROUTES))
def test_every_route_sends_the_headers_and_refuses_in_its_own_shape(
    route, alice, key_api, fake_upstream
):
    key = limit_key(alice, rpm_limit=1, tpm_limit=100_000)

    answered = route.post(key_api)
    assert answered.status_code == 200, answered.content
    if route.stream:
        b"".join(answered.streaming_content)
        answered.close()
    refused = route.post(key_api)

    assert answered["x-ratelimit-limit-requests"] == "1"
    assert answered["x-ratelimit-remaining-requests"] == "0"
    # Counted just now: its entry leaves the window in a minute.
    assert answered["x-ratelimit-reset-requests"] == answered["x-ratelimit-reset-tokens"] == "1m0s"
    assert answered["x-ratelimit-limit-tokens"] == "100000"
    assert 0 < 100_000 - int(answered["x-ratelimit-remaining-tokens"]) < 100_000
    assert refused.status_code == 429, refused.content
    wait = retry_after(refused)
    message = (
        "Rate limit reached: this API key's limit of 1 requests per minute (its rpm_limit; "
        f"the key's owner can change it with PATCH /api/keys/{key.pk}/); 1 counted in the last "
        f"minute. Retry in {wait} s."
    )
    assert refused.json() == error_body(route, message, "rate_limit_exceeded")
    assert refused["x-ratelimit-limit-requests"] == "1"
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert len(fake_upstream.requests) == 1
    assert UsageRecord.objects.count() == 1


# --- seed 001: a model's slots shared fairly ------------------------------------------------------


def test_one_keys_ten_streams_leave_slots_to_another_key(
    alice, alice_key, bob, fake_upstream, settings
):
    settings.TEXT_MODEL_MAX_CONCURRENCY = 10
    settings.MODEL_SLOT_SHARE = 0.5
    settings.CONCURRENCY_WAIT_SECONDS = 0.5
    bob_key = api_key_create(user=bob, name="bob's")[1]
    gate = fake_upstream.behave(chunks=["one", "two"], lockstep=True).gate
    path, body = "/text_model/chat/stream", {"messages": HI}

    admitted, refused = open_streams(10, lambda: client(alice_key).post(path, body, format="json"))

    assert (len(admitted), len(refused)) == (5, 5)
    for response in refused:
        assert response.status_code == 429
        assert response["Retry-After"] == "1"
        assert response.json() == {
            "detail": "Too many requests at once: this API key's share of the model "
            "'text_model': 5 of its 10 concurrent calls (MODEL_SLOT_SHARE=0.5 of "
            "TEXT_MODEL_MAX_CONCURRENCY), so that other callers still get slots. Retry when one "
            "of them has ended.",
            "code": "model_share_exceeded",
        }
    bobs = Opened(client(bob_key).post(path, body, format="json"))
    assert bobs.response.status_code == 200, bobs.response.content
    assert len(fake_upstream.requests) == 6
    gate.open()
    for opened in [*admitted, bobs]:
        assert opened.finish().endswith(b"data: [DONE]\n\n")
    assert client(alice_key).post(path, body, format="json").status_code == 200


# --- the counters themselves -------------------------------------------------------------------


def test_a_window_is_exact_over_any_minute():
    now = [0]
    counts = LocalStore(clock=lambda: now[0])
    requests = Counter("requests:key:1", Kind.REQUESTS, 3)

    def admit(at: int, call: str):
        now[0] = at
        return counts.admit(call, [requests])

    assert all(admit(at, f"c{at}").admitted for at in (0, 20_000, 40_000))
    refused = admit(59_999, "late")
    assert not refused.admitted
    assert refused.counts[requests].wait_ms == 1  # the call at 0 leaves at 60,000
    assert refused.counts[requests].reset_ms == 1
    assert admit(60_000, "next").admitted
    assert admit(60_001, "again").counts[requests].wait_ms == 19_999


def test_a_window_drops_what_left_it_and_still_corrects_what_remains():
    now = [0]
    counts = LocalStore(clock=lambda: now[0])
    tokens = Counter("tokens:key:1", Kind.TOKENS, 1_000, amount=10)

    # Five minutes of calls, one a second: only the last minute's stay counted.
    for second in range(300):
        now[0] = second * 1000
        assert counts.admit(f"c{second}", [tokens]).admitted
    assert counts.used(tokens) == 60 * 10
    counts.release("c250", [tokens], 3)  # its settle: 3 tokens, not the 10 estimated
    counts.release("c200", [tokens], 3)  # already out of the window: nothing to correct
    assert counts.used(tokens) == 59 * 10 + 3
    now[0] = 311_000  # c250 leaves with the 3 it counts at the end
    assert counts.used(tokens) == 48 * 10
    now[0] = 400_000
    assert counts.used(tokens) == 0


def test_a_refused_call_is_counted_nowhere():
    counts = limit_store.store_in_use()
    requests = Counter("requests:key:test-atomic", Kind.REQUESTS, 5)
    place = Counter("in_flight:key:test-atomic", Kind.IN_FLIGHT, 1)

    assert counts.admit("a", [requests, place]).admitted
    refused = counts.admit("b", [requests, place])
    assert not refused.admitted
    assert refused.counts[requests].used == 1  # b was not counted per minute
    counts.release("a", [requests, place], None)
    again = counts.admit("b", [requests, place])
    assert again.admitted
    assert (again.counts[requests].used, again.counts[place].used) == (2, 1)
    counts.release("b", [requests, place], None)


def test_a_settled_call_counts_its_real_tokens():
    counts = limit_store.store_in_use()
    tokens = Counter("tokens:key:test-settle", Kind.TOKENS, 100, amount=60)

    assert counts.admit("a", [tokens]).admitted
    assert not counts.admit("b", [tokens]).admitted  # 60 + 60 > 100
    counts.release("a", [tokens], 10)
    admitted = counts.admit("b", [tokens])
    assert admitted.admitted
    assert admitted.counts[tokens].used == 70


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (250, "250ms"), (1_500, "1.5s"), (59_999, "59.999s"), (60_000, "1m0s")],
)
def test_durations_are_written_as_openai_writes_them(ms, text):
    assert duration(ms) == text


# --- a process that dies holding a place ------------------------------------------------------

HOLDER = """
import sys, time
import django
django.setup()
from llm_api.limits import admission_take
from llm_api.limits.rules import Limit
from llm_api.limits.store import Kind
admission_take([Limit(Kind.IN_FLIGHT, "key", int(sys.argv[1]), 1)], tokens=0)
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(
    isinstance(caches["default"], LocMemCache), reason="needs a shared cache (REDIS_URL)"
)
def test_a_killed_process_frees_its_place_within_its_lease(settings):
    from llm_api.limits import RateLimited, admission_take
    from llm_api.limits.rules import Limit

    settings.CONCURRENCY_LEASE_SECONDS = 1
    place = Limit(Kind.IN_FLIGHT, "key", 987_654, 1)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    env["CONCURRENCY_LEASE_SECONDS"] = "1"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "987654"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(2.5)  # past two leases: the holder's keeper renews its place
        with pytest.raises(RateLimited):
            admission_take([place], tokens=0)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=5)
        deadline = time.monotonic() + 3  # one lease, and some
        while True:
            try:
                admission = admission_take([place], tokens=0)
                break
            except RateLimited:
                assert time.monotonic() < deadline, "the dead process's place never came free"
                time.sleep(0.1)
        admission.end(failed=False)
    finally:
        holder.kill()
        holder.wait(timeout=5)
