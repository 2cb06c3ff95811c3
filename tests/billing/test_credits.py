"""The credit services, without HTTP: grants, holds, settlement, release, expiry, refunds."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.models import Sum
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.exceptions import (
    DuplicateRequestId,
    InsufficientCredits,
    InvalidAmount,
    LedgerAppendOnly,
    RefundRefused,
    SpendCapExceeded,
)
from billing.models import ApiKey, CreditAccount, CreditHold, LedgerEntry
from billing.money import MICRO
from billing.services import (
    account_open,
    api_key_create,
    credits_grant,
    credits_hold,
    credits_refund,
    credits_release,
    credits_settle,
    holds_expire,
)
from billing.services.credits import _Sweep


def account(user) -> CreditAccount:
    return CreditAccount.objects.get(pk=user.pk)


def assert_balanced(user) -> None:
    """The invariants: balance == sum of entries, never below zero, held == open holds."""
    acc = account(user)
    total = LedgerEntry.objects.filter(account=acc).aggregate(total=Sum("amount"))["total"] or 0
    open_holds = CreditHold.objects.filter(account=acc, status="held").aggregate(s=Sum("amount"))
    assert acc.balance == total
    assert acc.balance >= acc.held >= 0
    assert acc.held == (open_holds["s"] or 0)


def test_signup_opens_an_account_with_the_signup_grant(alice):
    assert account(alice).balance == 500 * MICRO
    entry = LedgerEntry.objects.get(account_id=alice.pk)
    assert (entry.kind, entry.amount, entry.admin) == ("grant", 500 * MICRO, None)
    assert_balanced(alice)


def test_opening_an_account_twice_grants_once(alice):
    account_open(user=alice)
    assert LedgerEntry.objects.filter(account_id=alice.pk).count() == 1
    assert account(alice).balance == 500 * MICRO


@override_settings(SIGNUP_CREDITS=0)
def test_no_signup_entry_when_signup_credits_are_zero(django_user_model, db):
    user = django_user_model.objects.create_user("carol")
    account_open(user=user)
    assert account(user).balance == 0
    assert not LedgerEntry.objects.filter(account_id=user.pk).exists()


def test_a_grant_adds_an_entry_recording_the_admin(alice, django_user_model):
    root = django_user_model.objects.create_superuser("root")
    entry = credits_grant(user=alice, amount=25 * MICRO, note="welcome back", admin=root)
    assert (entry.kind, entry.amount, entry.note, entry.admin) == (
        "grant",
        25 * MICRO,
        "welcome back",
        root,
    )
    assert account(alice).balance == 525 * MICRO
    assert_balanced(alice)


@pytest.mark.parametrize("amount", [0, 1.5, "10", None, True])
def test_a_grant_of_zero_or_a_non_integer_amount_is_refused(alice, amount):
    with pytest.raises(InvalidAmount) as error:
        credits_grant(user=alice, amount=amount)
    assert error.value.code == "invalid_amount"
    assert "zero" in error.value.message or "whole number" in error.value.message
    assert LedgerEntry.objects.filter(account_id=alice.pk).count() == 1


def test_a_negative_grant_deducts_but_never_below_zero(alice):
    entry = credits_grant(user=alice, amount=-100 * MICRO, note="chargeback")
    assert (entry.kind, entry.amount) == ("adjustment", -100 * MICRO)
    with pytest.raises(InsufficientCredits) as error:
        credits_grant(user=alice, amount=-401 * MICRO)
    assert "only 400 are available" in error.value.message
    assert account(alice).balance == 400 * MICRO
    assert_balanced(alice)


def test_a_deduction_cannot_take_credits_held_by_a_call(alice):
    credits_hold(user_id=alice.pk, amount=300 * MICRO, request_id="req_1")
    with pytest.raises(InsufficientCredits):
        credits_grant(user=alice, amount=-201 * MICRO)
    credits_grant(user=alice, amount=-200 * MICRO)
    assert account(alice).available == 0
    assert_balanced(alice)


def test_a_grant_opens_an_account_for_a_user_without_one(django_user_model, db):
    root = django_user_model.objects.create_superuser("root")
    credits_grant(user=root, amount=7 * MICRO)
    assert account(root).balance == 7 * MICRO


def test_a_hold_reserves_credits_without_writing_the_ledger(alice):
    credits_hold(user_id=alice.pk, amount=120 * MICRO, request_id="req_1", model="openai/gpt-4o")
    acc = account(alice)
    assert (acc.balance, acc.held, acc.available) == (500 * MICRO, 120 * MICRO, 380 * MICRO)
    hold = CreditHold.objects.get(request_id="req_1")
    assert (hold.status, hold.model, hold.amount) == ("held", "openai/gpt-4o", 120 * MICRO)
    assert hold.expires_at > timezone.now() + timedelta(minutes=14)
    assert LedgerEntry.objects.filter(account_id=alice.pk).count() == 1
    assert_balanced(alice)


def test_a_hold_the_balance_cannot_cover_raises_insufficient_credits(alice):
    credits_hold(user_id=alice.pk, amount=450 * MICRO, request_id="req_1")
    with pytest.raises(InsufficientCredits) as error:
        credits_hold(user_id=alice.pk, amount=51 * MICRO, request_id="req_2")
    assert error.value.status_code == 402
    assert error.value.code == "insufficient_credits"
    assert error.value.message == (
        "Insufficient credits: the balance is 500 credits (450 held by calls in progress) "
        "and this call needs up to 51."
    )
    assert not CreditHold.objects.filter(request_id="req_2").exists()
    assert_balanced(alice)


def test_a_hold_for_a_user_without_an_account_is_refused(django_user_model, db):
    user = django_user_model.objects.create_user("carol")
    with pytest.raises(InsufficientCredits):
        credits_hold(user_id=user.pk, amount=1, request_id="req_1")


def test_a_request_id_can_hold_only_once(alice):
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_1")
    with pytest.raises(DuplicateRequestId):
        credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_1")
    assert account(alice).held == MICRO


def test_settling_charges_the_cost_and_releases_the_rest(alice, alice_key):
    api_key = alice_key[0]
    credits_hold(
        user_id=alice.pk, amount=10 * MICRO, request_id="req_1", api_key_id=api_key.pk, model="m/x"
    )
    entry = credits_settle(
        request_id="req_1", cost=3 * MICRO, prompt_tokens=12, completion_tokens=34, estimated=True
    )
    assert entry.kind == "usage"
    assert (entry.amount, entry.request_id, entry.api_key_id, entry.model) == (
        -3 * MICRO,
        "req_1",
        api_key.pk,
        "m/x",
    )
    assert (entry.prompt_tokens, entry.completion_tokens, entry.estimated) == (12, 34, True)
    assert entry.note == ""
    acc = account(alice)
    assert (acc.balance, acc.held) == (497 * MICRO, 0)
    api_key.refresh_from_db()
    assert (api_key.spent, api_key.held) == (3 * MICRO, 0)
    assert CreditHold.objects.get(request_id="req_1").status == "settled"
    assert_balanced(alice)


def test_settling_the_same_request_id_twice_charges_once(alice):
    credits_hold(user_id=alice.pk, amount=10 * MICRO, request_id="req_1")
    assert credits_settle(request_id="req_1", cost=4 * MICRO) is not None
    assert credits_settle(request_id="req_1", cost=4 * MICRO) is None
    assert account(alice).balance == 496 * MICRO
    assert LedgerEntry.objects.filter(request_id="req_1").count() == 1
    assert_balanced(alice)


def test_a_cost_above_the_hold_takes_what_is_left_and_the_rest_is_debt(alice):
    credits_grant(user=alice, amount=-490 * MICRO)
    credits_hold(user_id=alice.pk, amount=4 * MICRO, request_id="req_1")
    credits_hold(user_id=alice.pk, amount=2 * MICRO, request_id="req_2")
    entry = credits_settle(request_id="req_1", cost=20 * MICRO)
    assert entry.amount == -8 * MICRO  # 10 left, 2 still held by req_2
    assert "12 are owed" in entry.note
    acc = account(alice)
    assert (acc.balance, acc.held, acc.debt) == (2 * MICRO, 2 * MICRO, 12 * MICRO)
    assert_balanced(alice)
    # The debt blocks new holds; settling the other hold releases it, then a grant pays it.
    with pytest.raises(InsufficientCredits, match="owes 12"):
        credits_hold(user_id=alice.pk, amount=1, request_id="req_3")
    credits_release(request_id="req_2")
    credits_grant(user=alice, amount=20 * MICRO)
    acc = account(alice)
    assert (acc.balance, acc.held, acc.debt) == (10 * MICRO, 0, 0)
    assert_balanced(alice)


def test_a_cost_above_the_hold_is_charged_in_full_when_the_balance_allows(alice):
    credits_hold(user_id=alice.pk, amount=4 * MICRO, request_id="req_1")
    assert credits_settle(request_id="req_1", cost=9 * MICRO).amount == -9 * MICRO
    assert_balanced(alice)


def test_releasing_a_hold_charges_nothing(alice):
    credits_hold(user_id=alice.pk, amount=10 * MICRO, request_id="req_1")
    assert credits_release(request_id="req_1") is True
    assert credits_release(request_id="req_1") is False
    assert credits_settle(request_id="req_1", cost=MICRO) is None
    acc = account(alice)
    assert (acc.balance, acc.held) == (500 * MICRO, 0)
    assert CreditHold.objects.get(request_id="req_1").status == "released"
    assert_balanced(alice)


def test_settling_an_unknown_request_id_does_nothing(alice):
    assert credits_settle(request_id="req_never_held", cost=MICRO) is None
    assert credits_release(request_id="req_never_held") is False


@pytest.mark.parametrize("cost", [-1, 1.0, "5"])
def test_a_settle_with_a_bad_cost_is_refused(alice, cost):
    credits_hold(user_id=alice.pk, amount=10, request_id="req_1")
    with pytest.raises(InvalidAmount):
        credits_settle(request_id="req_1", cost=cost)


def test_a_hold_past_its_expiry_is_released_by_the_sweep(alice, alice_key):
    credits_hold(user_id=alice.pk, amount=7 * MICRO, request_id="old", api_key_id=alice_key[0].pk)
    credits_hold(user_id=alice.pk, amount=5 * MICRO, request_id="new")
    CreditHold.objects.filter(request_id="old").update(expires_at=timezone.now())
    assert holds_expire() == 1
    assert CreditHold.objects.get(request_id="old").status == "expired"
    assert CreditHold.objects.get(request_id="new").status == "held"
    assert account(alice).held == 5 * MICRO
    assert ApiKey.objects.get(pk=alice_key[0].pk).held == 0
    assert holds_expire() == 0
    assert_balanced(alice)


def test_the_sweep_releases_holds_that_expire_in_the_given_future(alice):
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_1")
    assert holds_expire(now=timezone.now() + timedelta(hours=1)) == 1


@pytest.mark.parametrize("swept", [False, True])
def test_a_request_that_outlives_its_hold_is_still_charged_once(alice, alice_key, swept):
    api_key = alice_key[0]
    credits_hold(user_id=alice.pk, amount=5 * MICRO, request_id="long", api_key_id=api_key.pk)
    credits_hold(user_id=alice.pk, amount=2 * MICRO, request_id="other")
    CreditHold.objects.filter(request_id="long").update(expires_at=timezone.now())
    if swept:
        assert holds_expire() == 1
    entry = credits_settle(request_id="long", cost=3 * MICRO, completion_tokens=9)
    assert entry is not None
    assert entry.amount == -3 * MICRO
    assert credits_settle(request_id="long", cost=3 * MICRO) is None
    assert CreditHold.objects.get(request_id="long").status == "settled"
    assert (account(alice).balance, account(alice).held) == (497 * MICRO, 2 * MICRO)
    api_key.refresh_from_db()
    assert (api_key.spent, api_key.held) == (3 * MICRO, 0)
    assert_balanced(alice)


def test_a_settle_after_release_charges_nothing(alice):
    credits_hold(user_id=alice.pk, amount=5 * MICRO, request_id="req_1")
    assert credits_release(request_id="req_1") is True
    assert credits_settle(request_id="req_1", cost=MICRO) is None
    assert (account(alice).balance, account(alice).held) == (500 * MICRO, 0)


def test_stale_holds_are_swept_automatically_when_new_holds_are_taken(alice):
    credits_hold(user_id=alice.pk, amount=500 * MICRO, request_id="dead")
    CreditHold.objects.filter(request_id="dead").update(expires_at=timezone.now())
    _Sweep.next_at = 0.0  # a minute later, in this process and in the shared cache
    cache.delete("billing:holds-expire")
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="next")  # succeeds: swept first
    assert CreditHold.objects.get(request_id="dead").status == "expired"
    assert_balanced(alice)


def test_the_automatic_sweep_runs_at_most_once_a_minute(alice):
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="first")  # sweeps, arms the timer
    CreditHold.objects.filter(request_id="first").update(expires_at=timezone.now())
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="second")
    assert CreditHold.objects.get(request_id="first").status == "held"


def test_a_key_with_a_spend_cap_cannot_hold_past_it(alice):
    api_key, _ = api_key_create(user=alice, name="capped", spend_cap=10 * MICRO)
    credits_hold(user_id=alice.pk, amount=6 * MICRO, request_id="req_1", api_key_id=api_key.pk)
    credits_settle(request_id="req_1", cost=6 * MICRO)
    credits_hold(user_id=alice.pk, amount=3 * MICRO, request_id="req_2", api_key_id=api_key.pk)
    with pytest.raises(SpendCapExceeded) as error:
        credits_hold(user_id=alice.pk, amount=2 * MICRO, request_id="req_3", api_key_id=api_key.pk)
    assert error.value.status_code == 402
    assert error.value.code == "spend_cap_exceeded"
    assert error.value.message == (
        "This API key's spend cap of 10 credits is reached: it has spent 6 (3 held) and this "
        "call needs up to 2."
    )
    assert account(alice).held == 3 * MICRO  # the account's reservation was rolled back
    assert not CreditHold.objects.filter(request_id="req_3").exists()
    assert_balanced(alice)


def test_a_refund_gives_back_a_usage_charge_once(alice):
    credits_hold(user_id=alice.pk, amount=10 * MICRO, request_id="req_1")
    usage = credits_settle(request_id="req_1", cost=4 * MICRO)
    refund = credits_refund(entry=usage)
    assert (refund.kind, refund.amount, refund.request_id) == ("refund", 4 * MICRO, "req_1")
    with pytest.raises(RefundRefused):
        credits_refund(entry=usage)
    with pytest.raises(RefundRefused):
        credits_refund(entry=refund)
    assert account(alice).balance == 500 * MICRO
    assert_balanced(alice)


def test_ledger_entries_are_never_updated_or_deleted(alice):
    entry = LedgerEntry.objects.get(account_id=alice.pk)
    entry.amount = 10**12
    with pytest.raises(LedgerAppendOnly):
        entry.save()
    with pytest.raises(LedgerAppendOnly):
        entry.delete()
    with pytest.raises(LedgerAppendOnly):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=1)
    with pytest.raises(LedgerAppendOnly):
        LedgerEntry.objects.all().delete()
    with pytest.raises(LedgerAppendOnly):
        LedgerEntry.objects.bulk_update([entry], ["amount"])
    assert LedgerEntry.objects.get(pk=entry.pk).amount == 500 * MICRO


def test_a_user_with_ledger_entries_cannot_be_deleted(alice):
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        alice.delete()
    assert LedgerEntry.objects.filter(account_id=alice.pk).exists()


def statements(queries: CaptureQueriesContext) -> list[str]:
    skipped = ("SAVEPOINT", "RELEASE SAVEPOINT", "BEGIN", "COMMIT")
    return [
        q["sql"].split()[0] for q in queries.captured_queries if not q["sql"].startswith(skipped)
    ]


def test_a_hold_and_its_settlement_take_a_few_short_statements(alice, alice_key):
    credits_hold(user_id=alice.pk, amount=1, request_id="warm")  # the sweep ran: not due again
    with CaptureQueriesContext(connection) as queries:
        credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_1", api_key_id=alice_key[0].pk)
    assert statements(queries) == ["UPDATE", "UPDATE", "INSERT"]
    with CaptureQueriesContext(connection) as queries:
        credits_settle(request_id="req_1", cost=MICRO)
    # The hold claimed and read in one statement, the account and the key charged, the entry.
    assert statements(queries) == ["UPDATE", "UPDATE", "UPDATE", "INSERT"]
