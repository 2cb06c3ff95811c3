"""Metering: what is charged equals what the provider reported times the price, in every mode."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import LedgerEntry
from billing.money import MICRO
from billing.services import price_set
from tests.llm_api.conftest import balance, chat, sse_events, usage_entries

pytestmark = pytest.mark.usefixtures("upstream_providers")


def test_ledger_totals_equal_reported_usage_times_price_over_a_mixed_run(
    key_api, alice, fake_upstream
):
    price_set(
        model="openai/*", per_request=MICRO // 10, per_1k_prompt=MICRO, per_1k_completion=4 * MICRO
    )
    price_set(model="gemini/*", per_request=0, per_1k_prompt=3 * MICRO, per_1k_completion=MICRO)
    start = balance(alice)
    calls = [
        ("openai/gpt-4o-mini", False, 120, 33),
        ("openai/gpt-4o-mini", True, 7, 501),
        ("gemini/gemini-2.0-flash", False, 1001, 1),
        ("gemini/gemini-2.0-flash", True, 64, 64),
        ("ollama/llama3", False, 5, 5),
        ("ollama/llama3", True, 9, 11),
    ]
    expected = 0
    for model, stream, prompt, completion in calls:
        fake_upstream.behave(chunks=["x", "y"], prompt_tokens=prompt, completion_tokens=completion)
        response = chat(key_api, model=model, stream=stream)
        assert response.status_code == 200, response.content
        if stream:
            sse_events(response)
        if model.startswith("openai/"):
            cost = MICRO // 10 + -(-(prompt * MICRO + completion * 4 * MICRO) // 1000)
        elif model.startswith("gemini/"):
            cost = -(-(prompt * 3 * MICRO + completion * MICRO) // 1000)
        else:
            cost = MICRO  # the default price: one credit a request
        expected += cost
    entries = usage_entries(alice)
    assert len(entries) == len(calls)
    assert not any(entry.estimated for entry in entries)
    assert sorted((e.prompt_tokens, e.completion_tokens) for e in entries) == sorted(
        (p, c) for _, _, p, c in calls
    )
    assert -sum(entry.amount for entry in entries) == expected
    assert start - balance(alice) == expected
    total = sum(LedgerEntry.objects.filter(account__user=alice).values_list("amount", flat=True))
    assert balance(alice) == total


def test_a_call_touches_the_database_only_to_hold_and_settle(key_api, fake_upstream):
    chat(key_api, model="openai/gpt-4o-mini")  # warms the key, price and alias caches
    with CaptureQueriesContext(connection) as queries:
        response = chat(key_api, model="openai/gpt-4o-mini")
    assert response.status_code == 200
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    tables = " ".join(q["sql"] for q in queries.captured_queries)
    assert "auth_user" not in tables  # the key and its user came from the cache
    assert "billing_modelprice" not in tables
    assert "llm_api_modelalias" not in tables
    data = [s for s in statements if s not in {"SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"}]
    # hold: account, key, hold row; settle: claim (and read) the hold, account, key, ledger
    # entry, usage record.
    assert data == ["UPDATE", "UPDATE", "INSERT", "UPDATE", "UPDATE", "UPDATE", "INSERT", "INSERT"]
