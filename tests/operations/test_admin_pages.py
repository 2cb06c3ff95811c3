"""The user's admin page (balance, keys, ledger, usage chart, grant) and the keys' badges."""

from datetime import timedelta

from django.utils import timezone

from billing.models import ApiKey, CreditAccount, LedgerEntry
from billing.money import MICRO
from billing.services import api_key_create, api_key_revoke


def test_a_users_page_shows_balance_keys_ledger_and_a_usage_chart(admin_client, alice):
    api_key, _ = api_key_create(user=alice, name="laptop")
    html = admin_client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    balance = CreditAccount.objects.get(user=alice).balance
    assert f'id="user-balance">{balance // MICRO}<' in html
    assert api_key.masked in html and "ACTIVE" in html
    assert "grant" in html  # the signup grant, in the ledger table
    assert '<svg class="chart"' in html
    assert f"/admin/auth/user/{alice.pk}/credits/" in html


def test_credits_granted_from_the_users_page_are_a_ledger_entry_by_the_admin(
    admin_client, admin_user, alice
):
    before = CreditAccount.objects.get(user=alice).balance
    url = f"/admin/auth/user/{alice.pk}/credits/"
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"amount": "12.5", "note": "support ticket 7"})
    assert response.status_code == 302
    assert CreditAccount.objects.get(user=alice).balance == before + 12_500_000
    entry = LedgerEntry.objects.filter(account__user=alice).first()
    assert (entry.kind, entry.amount, entry.admin, entry.note) == (
        "grant",
        12_500_000,
        admin_user,
        "support ticket 7",
    )


def test_a_deduction_beyond_the_balance_is_refused_with_a_message(admin_client, alice):
    before = CreditAccount.objects.get(user=alice).balance
    url = f"/admin/auth/user/{alice.pk}/credits/"
    response = admin_client.post(url, {"amount": "999999", "direction": "deduct"}, follow=True)
    assert response.status_code == 200
    assert CreditAccount.objects.get(user=alice).balance == before


def test_bad_grant_input_is_a_form_error_not_a_crash(admin_client, alice):
    url = f"/admin/auth/user/{alice.pk}/credits/"
    for amount in ("", "-3", "abc", "1e999"):
        assert admin_client.post(url, {"amount": amount}).status_code == 200
    assert admin_client.get("/admin/auth/user/999999/credits/").status_code == 404


def test_staff_without_the_ledger_permission_cannot_grant(client, alice, django_user_model):
    staff = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(staff)
    assert client.post(f"/admin/auth/user/{alice.pk}/credits/", {"amount": "5"}).status_code == 403


def test_key_list_badges_revoked_and_expired_keys(admin_client, alice):
    api_key_create(user=alice, name="active one")
    revoked, _ = api_key_create(user=alice, name="revoked one")
    api_key_revoke(api_key=revoked)
    expired, _ = api_key_create(user=alice, name="expired one")
    # Time passes: the key's expiry (in the future when it was set) is now behind us.
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    html = admin_client.get("/admin/billing/apikey/").content.decode()
    for status in ("active", "revoked", "expired"):
        assert f'class="key-badge key-{status}"' in html, status
    assert ">REVOKED<" in html and ">EXPIRED<" in html
