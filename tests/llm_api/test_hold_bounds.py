"""A hold is a true upper bound, a settle never writes off, and every delivered call is paid.

Each test here failed on the gateway before holds counted every field that reaches the model,
before usage beyond a hold became debt, before a stream closed early paid its prompt, before
long streams renewed their holds, and before prices could fail closed.
"""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import CreditAccount, CreditHold, LedgerEntry
from billing.money import MICRO
from billing.selectors import price_for
from billing.services import (
    credits_grant,
    credits_hold,
    credits_settle,
    holds_expire,
    price_set,
)
from llm_api.metering import prompt_tokens_bound, prompt_tokens_estimate, running
from llm_api.models import UsageRecord
from llm_api.providers.base import ChatRequest, ImagePart, Message, TextPart
from tests.llm_api.conftest import balance, chat, sse_events, usage_entries

pytestmark = pytest.mark.usefixtures("upstream_providers")

BIG_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{n}",
            "description": "x" * 10_000,
            "parameters": {"type": "object", "properties": {}},
        },
    }
    for n in range(60)
]  # about 600 KB


def ledger_sum(user) -> int:
    return sum(LedgerEntry.objects.filter(account__user=user).values_list("amount", flat=True))


def account(user) -> CreditAccount:
    return CreditAccount.objects.get(user=user)


# --- what the hold counts -------------------------------------------------------------------


def _request(**fields) -> ChatRequest:
    return ChatRequest(
        model="m", messages=[Message(role="user", content="Say hello")], max_tokens=16, **fields
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", BIG_TOOLS[:3]),
        ("response_format", {"type": "json_schema", "json_schema": {"schema": {"d": "y" * 9000}}}),
        ("tool_choice", {"type": "function", "function": {"name": "z" * 9000}}),
    ],
)
def test_every_request_field_that_reaches_the_model_counts_in_the_hold(field, value):
    plain = prompt_tokens_bound(_request())
    size = len(json.dumps(value, separators=(",", ":")).encode())
    assert prompt_tokens_bound(_request(**{field: value})) >= plain + size


def test_tool_calls_names_and_every_message_count_in_the_hold():
    arguments = json.dumps({"text": "é" * 5000})
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    messages = [
        Message(role="system", content="s" * 1000),
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", content="r" * 2000, tool_call_id="call_1", name="f"),
    ]
    request = ChatRequest(model="m", messages=messages, max_tokens=16)
    # UTF-8 bytes bound the tokens of a byte-level tokenizer: é is two bytes.
    assert prompt_tokens_bound(request) >= 1000 + 2 * 5000 + 2000
    # The estimate charged when a provider reports nothing counts them too, at 4 chars a token.
    assert prompt_tokens_estimate(request) >= (1000 + 5000 + 2000) // 4


def test_tools_that_cost_more_than_the_balance_are_refused_before_the_upstream(
    key_api, alice, fake_upstream, token_prices
):
    # 600 KB of tools: at least 150,000 tokens, 300 credits at 2 credits per 1K; alice has 500,
    # but the hold counts each byte, so the worst case (1,200 credits) is refused up front.
    response = chat(key_api, model="openai/gpt-4o", tools=BIG_TOOLS)
    assert response.status_code == 402, response.content
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert fake_upstream.requests == []
    assert account(alice).held == 0


def test_responses_instructions_count_in_the_hold(key_api, alice, fake_upstream, token_prices):
    body = {"model": "openai/gpt-4o", "input": "hi", "instructions": "i" * 300_000}
    response = key_api.post("/v1/responses", body, format="json")
    assert response.status_code == 402, response.content
    assert fake_upstream.requests == []


def test_a_fan_out_holds_the_prompt_once_per_upstream_call(key_api, alice, fake_upstream):
    price_set(model="*", per_request=0, per_1k_prompt=MICRO, per_1k_completion=MICRO)
    prompt = "p" * 3000
    messages = [{"role": "user", "content": prompt}]
    response = chat(key_api, model="inhouse/m", n=3, max_tokens=10, messages=messages)
    assert response.status_code == 200, response.content
    assert len(fake_upstream.requests) == 3  # the in-house provider has no native n
    request = ChatRequest(
        model="m", messages=[Message(role="user", content=prompt)], max_tokens=10, n=3
    )
    price = price_for(provider="inhouse", model="m")
    hold = CreditHold.objects.get()
    assert hold.amount == price.cost(3 * prompt_tokens_bound(request), 3 * 10)


# --- the settle never writes off --------------------------------------------------------------


def test_usage_beyond_the_hold_is_debt_that_blocks_calls_until_credits_pay_it(
    key_api, alice, fake_upstream, token_prices
):
    # The provider ignores max_tokens and reports 200,000 completion tokens: 600 credits and
    # a little, against alice's 500.
    fake_upstream.behave(prompt_tokens=10, completion_tokens=200_000)
    response = chat(key_api, model="openai/gpt-4o", max_tokens=5)
    assert response.status_code == 200, response.content
    cost = price_for(provider="openai", model="gpt-4o").cost(10, 200_000)
    entry = usage_entries(alice)[0]
    assert entry.amount == -500 * MICRO  # all there was
    assert account(alice).balance == 0
    assert account(alice).debt == cost - 500 * MICRO
    assert "owed" in entry.note
    assert balance(alice) == ledger_sum(alice)

    fake_upstream.reset()
    refused = chat(key_api, model="openai/gpt-4o")
    assert refused.status_code == 402
    assert "owes" in refused.json()["error"]["message"]
    assert fake_upstream.requests == []

    credits_grant(user=alice, amount=1000 * MICRO, note="top-up")
    paid = LedgerEntry.objects.get(account__user=alice, kind=LedgerEntry.Kind.DEBT)
    assert paid.amount == -(cost - 500 * MICRO)
    assert account(alice).debt == 0
    assert balance(alice) == 1000 * MICRO - (cost - 500 * MICRO) == ledger_sum(alice)
    fake_upstream.behave(prompt_tokens=10, completion_tokens=5)
    assert chat(key_api, model="openai/gpt-4o").status_code == 200


def test_a_grant_smaller_than_the_debt_pays_part_of_it(alice, key_api, fake_upstream):
    price_set(model="*", per_request=0, per_1k_prompt=0, per_1k_completion=MICRO)
    fake_upstream.behave(prompt_tokens=1, completion_tokens=800_000)  # 800 credits, 500 paid
    assert chat(key_api, model="openai/gpt-4o", max_tokens=5).status_code == 200
    assert account(alice).debt == 300 * MICRO
    credits_grant(user=alice, amount=100 * MICRO)
    assert (account(alice).balance, account(alice).debt) == (0, 200 * MICRO)
    assert chat(key_api, model="openai/gpt-4o").status_code == 402
    assert balance(alice) == ledger_sum(alice)


# --- streams ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # closing a response closes the DB connection
def test_a_stream_closed_before_its_first_token_pays_its_prompt(key_api, alice, fake_upstream):
    price_set(model="*", per_request=MICRO, per_1k_prompt=MICRO // 2)
    fake_upstream.behave(lockstep=True, lockstep_timeout=2.0)
    messages = [{"role": "user", "content": "q" * 300_000}]
    response = chat(key_api, model="openai/gpt-4o", stream=True, messages=messages)
    assert response.status_code == 200
    response.close()  # the client hangs up before the first chunk
    (entry,) = usage_entries(alice)
    request = ChatRequest(
        model="gpt-4o", messages=[Message(role="user", content="q" * 300_000)], max_tokens=16
    )
    assert entry.estimated
    assert (entry.prompt_tokens, entry.completion_tokens) == (prompt_tokens_estimate(request), 0)
    assert entry.amount == -price_for(provider="openai", model="gpt-4o").cost(75_004, 0)
    assert entry.amount == -(MICRO + 75_004 * MICRO // 2000)
    record = UsageRecord.objects.get(request_id=entry.request_id)
    assert record.status == UsageRecord.Status.CLIENT_CLOSED
    assert account(alice).held == 0


def test_an_upstream_error_before_the_first_token_charges_nothing(key_api, alice, fake_upstream):
    fake_upstream.behave(drop_after=0)
    response = chat(key_api, model="openai/gpt-4o", stream=True)
    sse_events(response)
    assert usage_entries(alice) == []
    assert account(alice).held == 0


@pytest.mark.django_db(transaction=True)  # closing a response closes the DB connection
def test_a_stream_longer_than_the_hold_ttl_keeps_its_hold(key_api, alice, fake_upstream, settings):
    settings.HOLD_TTL_SECONDS = 3
    settings.STREAM_HEARTBEAT_SECONDS = 0.2
    fake_upstream.behave(chunks=["a"] * 10, chunk_delay=0.5)
    response = chat(key_api, model="openai/gpt-4o", stream=True)
    events = iter(response.streaming_content)
    started = time.monotonic()
    for _ in events:
        if time.monotonic() - started > 4:  # past the first expiry
            break
    # The sweep runs while the stream still runs: the hold was renewed, so it stays.
    assert holds_expire() == 0
    assert CreditHold.objects.get().status == CreditHold.Status.HELD
    list(events)
    response.close()
    hold = CreditHold.objects.get()
    assert hold.status == CreditHold.Status.SETTLED
    (entry,) = usage_entries(alice)
    assert not entry.estimated
    assert account(alice).held == 0
    assert balance(alice) == ledger_sum(alice)


def test_a_settle_after_the_sweep_expired_the_hold_is_charged_once(alice):
    credits_hold(user_id=alice.pk, amount=5 * MICRO, request_id="req_swept")
    hold = CreditHold.objects.get()
    assert holds_expire(now=hold.expires_at + timedelta(seconds=1)) == 1
    entry = credits_settle(request_id="req_swept", cost=3 * MICRO)
    assert entry is not None
    assert entry.amount == -3 * MICRO
    assert credits_settle(request_id="req_swept", cost=3 * MICRO) is None
    assert account(alice).held == 0
    assert balance(alice) == 497 * MICRO == ledger_sum(alice)


# --- prices fail closed, model lists are cached -------------------------------------------------


def test_with_price_required_an_unpriced_model_answers_403_naming_the_admin_page(
    key_api, alice, fake_upstream, settings
):
    settings.PRICE_REQUIRED = True
    price_set(model="openai/gpt-4o", per_request=MICRO, per_1k_prompt=MICRO)
    price_set(model="*", per_request=1)  # a catch-all is a default, not a price of its own
    response = chat(key_api, model="openai/gpt-4o-2024-11-20")
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == "model_not_priced"
    assert "openai/gpt-4o-2024-11-20" in error["message"]
    assert "/admin/billing/modelprice/add/" in error["message"]
    assert fake_upstream.requests == []
    assert not CreditHold.objects.exists()

    assert chat(key_api, model="openai/gpt-4o").status_code == 200
    price_set(model="openai/gpt-4o-*", per_request=MICRO)
    assert chat(key_api, model="openai/gpt-4o-2024-11-20").status_code == 200


def test_without_price_required_an_unpriced_model_costs_the_default(key_api, alice, fake_upstream):
    price_set(model="openai/gpt-4o", per_request=5 * MICRO)
    assert chat(key_api, model="openai/gpt-4o-2024-11-20").status_code == 200
    assert usage_entries(alice)[0].amount == -MICRO


def test_supported_models_asks_the_provider_once_per_cache_window(key_api, fake_upstream):
    for _ in range(3):
        response = key_api.get("/api/supported-models/", {"provider": "openai"})
        assert response.status_code == 200, response.content
        assert response.json() == {"models": ["fake-model-a", "fake-model-b"]}
    assert [r.path for r in fake_upstream.requests].count("/v1/models") == 1


def test_the_holds_of_running_calls_are_renewed_and_finished_ones_are_not(alice, settings):
    settings.HOLD_TTL_SECONDS = 600
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_running")
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_finished")
    soon = timezone.now() + timedelta(seconds=5)
    CreditHold.objects.update(expires_at=soon)
    running.hold("req_running")
    try:
        running.renew()
    finally:
        running.drop("req_running")
    renewed = CreditHold.objects.get(request_id="req_running").expires_at
    assert renewed > timezone.now() + timedelta(seconds=590)
    assert CreditHold.objects.get(request_id="req_finished").expires_at == soon


def test_images_count_in_the_hold_by_their_decoded_size():
    def with_image(**size) -> ChatRequest:
        image = ImagePart(data=b"x", mime_type="image/png", **size)
        content = [TextPart("What is this?"), image]
        return ChatRequest(
            model="m", messages=[Message(role="user", content=content)], max_tokens=1
        )

    small = prompt_tokens_bound(with_image(width=256, height=256))
    large = prompt_tokens_bound(with_image(width=2048, height=4096))
    unfetched = prompt_tokens_bound(with_image())  # a URL not fetched yet: the worst case
    assert small - prompt_tokens_bound(with_image(width=1, height=1)) == 0
    assert large - small == 170 * 5  # 768 x 1536 after scaling: 2 x 3 tiles, against 1
    assert unfetched >= large
