"""The books checks every money test ends with: whatever happened, the ledger still balances.

A few grouped queries check any number of accounts or keys at once, so a state machine can
afford them after every step.
"""

from __future__ import annotations

from django.db.models import Count, QuerySet, Sum

from billing.models import ApiKey, CreditAccount, CreditHold, LedgerEntry

HELD = CreditHold.Status.HELD


def _sums(rows: QuerySet, by: str) -> dict[int, int]:
    """Return {`by`: the sum of `amount`} over the rows."""
    grouped = rows.order_by().values(by).annotate(total=Sum("amount"))
    return {row[by]: row["total"] for row in grouped}


def assert_invariants(*users) -> None:
    """Assert each user's account balances: balance = the sum of its ledger entries, and
    balance >= held = the sum of its open holds >= 0."""
    ids = [user.pk for user in users]
    entries = _sums(LedgerEntry.objects.filter(account_id__in=ids), "account_id")
    held = _sums(CreditHold.objects.filter(account_id__in=ids, status=HELD), "account_id")
    accounts = CreditAccount.objects.filter(pk__in=ids).values_list("pk", "balance", "held")
    assert len(accounts) == len(ids)
    for pk, balance, held_now in accounts:
        assert balance == entries.get(pk, 0), f"account {pk}: balance != sum of its entries"
        assert balance >= held_now >= 0, f"account {pk}: balance {balance}, held {held_now}"
        assert held_now == held.get(pk, 0), f"account {pk}: held != its open holds"


def assert_key_invariants(*key_ids: int, spend_cap: bool = True) -> None:
    """Assert each API key's books: held = the sum of its open holds >= 0, spent >= 0, and
    (with `spend_cap`) spent within its spend cap."""
    held = _sums(CreditHold.objects.filter(api_key_id__in=key_ids, status=HELD), "api_key_id")
    keys = ApiKey.objects.filter(pk__in=key_ids).values_list("pk", "held", "spent", "spend_cap")
    assert len(keys) == len(key_ids)
    for pk, held_now, spent, cap in keys:
        assert held_now == held.get(pk, 0), f"key {pk}: held != its open holds"
        assert held_now >= 0 and spent >= 0, f"key {pk}: held {held_now}, spent {spent}"
        if spend_cap and cap is not None:
            assert spent <= cap, f"key {pk}: spent {spent} > its spend cap {cap}"


def assert_settled_at_most_once() -> None:
    """Assert no request id has more than one usage entry."""
    usage = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).order_by()
    twice = usage.values("request_id").annotate(n=Count("id")).filter(n__gt=1)
    assert list(twice) == []


def assert_no_open_holds() -> None:
    """Assert every hold was settled, released or expired."""
    assert list(CreditHold.objects.filter(status=HELD).values_list("request_id", flat=True)) == []
