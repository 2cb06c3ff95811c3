"""/api/billing/balance/, /api/billing/ledger/ and /api/usage/: each user sees only their own."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from billing.models import CreditAccount, LedgerEntry
from billing.money import MICRO
from billing.services import credits_grant, credits_hold, credits_settle


def spend(user, request_id, cost, *, api_key=None, model="openai/gpt-4o", tokens=(10, 20)):
    credits_hold(
        user_id=user.pk,
        amount=cost,
        request_id=request_id,
        api_key_id=api_key.pk if api_key else None,
        model=model,
    )
    return credits_settle(
        request_id=request_id, cost=cost, prompt_tokens=tokens[0], completion_tokens=tokens[1]
    )


def backdate(entry: LedgerEntry, days: int) -> None:
    """Move an entry into the past, in raw SQL: the ORM refuses to update entries."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_ledgerentry SET created_at = %s WHERE id = %s",
            [timezone.now() - timedelta(days=days), entry.pk],
        )


def test_it_shows_the_balance_held_and_available_credits(alice_jwt, alice):
    credits_hold(user_id=alice.pk, amount=2_500_000, request_id="req_1")
    response = alice_jwt.get("/api/billing/balance/")
    assert response.status_code == 200
    assert response.json() == {
        "balance": "500.000000",
        "held": "2.500000",
        "available": "497.500000",
        "debt": "0.000000",
    }


def test_it_lists_the_ledger_newest_first_with_pages(alice_jwt, alice):
    for number in range(1, 4):
        credits_grant(user=alice, amount=number * MICRO, note=f"grant {number}")
    response = alice_jwt.get("/api/billing/ledger/?page_size=2")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4
    assert [entry["note"] for entry in body["results"]] == ["grant 3", "grant 2"]
    assert body["results"][0]["amount"] == "3.000000"
    assert body["next"]
    second = alice_jwt.get(body["next"]).json()
    assert [entry["note"] for entry in second["results"]] == ["grant 1", "Signup credits"]


def test_it_filters_the_ledger_by_kind_and_date(alice_jwt, alice, alice_key):
    usage = spend(alice, "req_1", 3 * MICRO, api_key=alice_key[0])
    old = credits_grant(user=alice, amount=MICRO, note="old")
    backdate(old, days=10)
    response = alice_jwt.get("/api/billing/ledger/?kind=usage")
    assert [entry["id"] for entry in response.json()["results"]] == [usage.pk]
    entry = response.json()["results"][0]
    assert entry["amount"] == "-3.000000"
    assert (entry["request_id"], entry["api_key"], entry["api_key_name"]) == (
        "req_1",
        alice_key[0].pk,
        "laptop",
    )
    assert (entry["model"], entry["prompt_tokens"], entry["completion_tokens"]) == (
        "openai/gpt-4o",
        10,
        20,
    )
    both = alice_jwt.get("/api/billing/ledger/?kind=usage&kind=grant").json()
    assert both["count"] == 3
    day = (timezone.now() - timedelta(days=10)).date().isoformat()
    dated = alice_jwt.get(f"/api/billing/ledger/?since={day}&until={day}").json()
    assert [entry["note"] for entry in dated["results"]] == ["old"]
    recent = alice_jwt.get(f"/api/billing/ledger/?since={timezone.now().date()}").json()
    assert old.pk not in [entry["id"] for entry in recent["results"]]


def test_it_refuses_bad_ledger_filters(alice_jwt):
    assert alice_jwt.get("/api/billing/ledger/?kind=gift").status_code == 400
    assert alice_jwt.get("/api/billing/ledger/?since=yesterday").status_code == 400
    response = alice_jwt.get("/api/billing/ledger/?since=2025-02-01&until=2025-01-01")
    assert response.status_code == 400


def test_it_sums_usage_per_day_model_and_key(alice_jwt, alice, alice_key):
    spend(alice, "req_1", 2 * MICRO, api_key=alice_key[0])
    spend(alice, "req_2", 3 * MICRO, api_key=alice_key[0], model="ollama/llama3.2")
    spend(alice, "req_3", 5 * MICRO, tokens=(1, 2))
    backdate(spend(alice, "req_4", 7 * MICRO), days=40)
    response = alice_jwt.get("/api/usage/")
    assert response.status_code == 200, response.content
    body = response.json()
    today = timezone.now().date()
    assert (body["since"], body["until"]) == (str(today - timedelta(days=29)), str(today))
    assert body["total"] == {
        "requests": 3,
        "prompt_tokens": 21,
        "completion_tokens": 42,
        "spent": "10.000000",
    }
    assert body["by_day"] == [
        {
            "date": str(today),
            "requests": 3,
            "prompt_tokens": 21,
            "completion_tokens": 42,
            "spent": "10.000000",
        }
    ]
    per_model = {row["model"]: (row["requests"], row["spent"]) for row in body["by_model"]}
    assert per_model == {"ollama/llama3.2": (1, "3.000000"), "openai/gpt-4o": (2, "7.000000")}
    per_key = {row["api_key"]: (row["name"], row["requests"]) for row in body["by_key"]}
    assert per_key == {alice_key[0].pk: ("laptop", 2), None: (None, 1)}
    keyed = alice_jwt.get(f"/api/usage/?api_key={alice_key[0].pk}").json()
    assert keyed["total"]["requests"] == 2
    ranged = alice_jwt.get(f"/api/usage/?since={today - timedelta(days=60)}").json()
    assert ranged["total"]["requests"] == 4


def test_usage_over_an_empty_range_is_zero(alice_jwt, alice):
    body = alice_jwt.get("/api/usage/?since=2020-01-01&until=2020-01-31").json()
    assert body["total"] == {
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "spent": "0.000000",
    }
    assert body["by_day"] == body["by_model"] == body["by_key"] == []


def test_usage_refuses_a_range_over_a_year(alice_jwt):
    response = alice_jwt.get("/api/usage/?since=2020-01-01&until=2022-01-01")
    assert response.status_code == 400
    assert "since" in response.json()["errors"]


def test_bob_never_sees_alices_ledger_or_usage(bob_jwt, alice, alice_key, bob):
    spend(alice, "req_alice", 4 * MICRO, api_key=alice_key[0])
    ledger = bob_jwt.get("/api/billing/ledger/").json()
    assert [entry["note"] for entry in ledger["results"]] == ["Signup credits"]
    assert bob_jwt.get("/api/usage/").json()["total"]["requests"] == 0
    assert bob_jwt.get("/api/billing/balance/").json()["balance"] == "500.000000"
    for path in ("/api/billing/ledger/", "/api/usage/"):
        response = bob_jwt.get(f"{path}?api_key={alice_key[0].pk}")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_patching_me_with_balance_or_staff_fields_changes_nothing(alice_jwt, alice):
    response = alice_jwt.patch(
        "/api/me/",
        {
            "balance": "1000000",
            "credits": 10**9,
            "is_staff": True,
            "is_superuser": True,
            "username": "mallory",
            "id": 999,
        },
        format="json",
    )
    assert response.status_code == 200
    user = get_user_model().objects.get(pk=alice.pk)
    assert (user.username, user.is_staff, user.is_superuser) == ("alice", False, False)
    assert CreditAccount.objects.get(pk=alice.pk).balance == 500 * MICRO
    assert LedgerEntry.objects.filter(account_id=alice.pk).count() == 1


def test_the_billing_routes_need_credentials(api, db):
    for url in ("/api/keys/", "/api/billing/balance/", "/api/billing/ledger/", "/api/usage/"):
        assert api.get(url).status_code == 401
