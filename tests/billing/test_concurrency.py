"""Money under real concurrency: threads, each with its own database connection."""

import random
import threading
import time

import pytest
from django.db import connections

from billing.exceptions import InsufficientCredits, SpendCapExceeded
from billing.models import CreditAccount, CreditHold, LedgerEntry
from billing.money import MICRO
from billing.services import (
    api_key_create,
    credits_grant,
    credits_hold,
    credits_release,
    credits_settle,
)
from tests.ledger import assert_invariants
from tests.threads import in_threads

pytestmark = pytest.mark.django_db(transaction=True)


class Watcher:
    """Samples the account from its own connection while the threads work."""

    def __init__(self, user_id: int) -> None:
        self.user_id, self.samples, self.running = user_id, [], True
        self.thread = threading.Thread(target=self.watch)

    def watch(self) -> None:
        try:
            while self.running:
                row = CreditAccount.objects.filter(pk=self.user_id).values("balance", "held")
                self.samples.append(row.get())
                time.sleep(0.001)  # sample, don't monopolise the interpreter
        finally:
            connections.close_all()

    def __enter__(self) -> "Watcher":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


def test_50_concurrent_holds_on_an_account_that_affords_10_let_exactly_10_through(alice):
    with Watcher(alice.pk) as watcher:
        results = in_threads(
            50,
            lambda i: credits_hold(user_id=alice.pk, amount=50 * MICRO, request_id=f"req_{i}"),
        )
    succeeded = [result for result in results if result is None]
    refused = [result for result in results if isinstance(result, InsufficientCredits)]
    assert len(succeeded) == 10, results
    assert len(refused) == 40, results
    assert all(s["balance"] >= s["held"] >= 0 for s in watcher.samples)
    account = CreditAccount.objects.get(pk=alice.pk)
    assert (account.balance, account.held) == (500 * MICRO, 500 * MICRO)
    assert CreditHold.objects.filter(status="held").count() == 10
    assert_invariants(alice)


def test_concurrent_settles_of_one_request_id_charge_once(alice):
    credits_hold(user_id=alice.pk, amount=10 * MICRO, request_id="req_1")
    results = in_threads(20, lambda i: credits_settle(request_id="req_1", cost=7 * MICRO))
    assert len([result for result in results if isinstance(result, LedgerEntry)]) == 1, results
    assert results.count(None) == 19
    assert CreditAccount.objects.get(pk=alice.pk).balance == 493 * MICRO
    assert_invariants(alice)


def test_concurrent_holds_on_a_capped_key_stop_at_the_cap(alice):
    api_key, _ = api_key_create(user=alice, name="capped", spend_cap=25 * MICRO)
    results = in_threads(
        30,
        lambda i: credits_hold(
            user_id=alice.pk, amount=5 * MICRO, request_id=f"req_{i}", api_key_id=api_key.pk
        ),
    )
    assert results.count(None) == 5, results
    assert all(isinstance(r, SpendCapExceeded) for r in results if r is not None)
    assert CreditAccount.objects.get(pk=alice.pk).held == 25 * MICRO
    assert_invariants(alice)


def test_concurrent_deductions_never_take_the_balance_below_zero(alice):
    results = in_threads(20, lambda i: credits_grant(user=alice, amount=-60 * MICRO))
    assert len([r for r in results if isinstance(r, LedgerEntry)]) == 8, results
    assert CreditAccount.objects.get(pk=alice.pk).balance == 20 * MICRO
    assert_invariants(alice)


def one_request(user_id: int, index: int) -> str:
    """Hold, then settle (sometimes above the hold) or release, like the completion service."""
    rng = random.Random(index)
    request_id = f"req_{index}"
    try:
        credits_hold(user_id=user_id, amount=rng.randint(1, 40) * MICRO, request_id=request_id)
    except InsufficientCredits:
        return "refused"
    if rng.random() < 0.2:
        credits_release(request_id=request_id)
        return "released"
    credits_settle(request_id=request_id, cost=rng.randint(0, 60) * MICRO, prompt_tokens=index)
    return "settled"


def test_a_storm_of_holds_settles_releases_and_grants_keeps_the_books_balanced(alice):
    def work(index: int) -> str:
        if index % 10 == 0:
            credits_grant(user=alice, amount=(15 if index % 20 else -15) * MICRO)
            return "granted"
        return one_request(alice.pk, index)

    with Watcher(alice.pk) as watcher:
        results = in_threads(60, work)
    unexpected = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(error, InsufficientCredits) for error in unexpected), unexpected
    assert all(s["balance"] >= s["held"] >= 0 for s in watcher.samples)
    assert CreditAccount.objects.get(pk=alice.pk).held == 0
    usage = LedgerEntry.objects.filter(kind="usage")
    assert usage.count() == results.count("settled")
    assert usage.values("request_id").distinct().count() == usage.count()
    assert_invariants(alice)
