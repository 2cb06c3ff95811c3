"""The admin: a key shown once on creation, never its digest; grants that record the admin;
a ledger nobody can change; prices that apply at once."""

import re

from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from billing import keys
from billing.authentication import ApiKeyAuthentication
from billing.models import ApiKey, CreditAccount, LedgerEntry, ModelPrice
from billing.money import MICRO
from billing.selectors import price_for
from billing.services import credits_hold, credits_settle
from tests.billing.conftest import key_client
from tests.billing.test_secrecy import every_text_value


def add_key(admin_client, user, **fields):
    data = {"user": user.pk, "name": "from admin", "allowed_models": "", **fields}
    return admin_client.post("/admin/billing/apikey/add/", data)


def test_the_add_page_shows_a_new_key_once(admin_client, alice):
    assert admin_client.get("/admin/billing/apikey/add/").status_code == 200
    response = add_key(admin_client, alice, allowed_models="openai/*\nollama/*", spend_cap="2.5")
    assert response.status_code == 200, response.content
    page = response.content.decode()
    found = re.findall(r"sk-llm-[0-9A-Za-z]{39}", page)
    assert len(found) == 1 and keys.is_well_formed(found[0])
    api_key = ApiKey.objects.get(digest=keys.digest(found[0]))
    assert (api_key.user, api_key.name) == (alice, "from admin")
    assert (api_key.allowed_models, api_key.spend_cap) == (["openai/*", "ollama/*"], 2_500_000)
    assert api_key.digest not in page
    assert key_client(found[0]).get("/api/billing/balance/").status_code == 200
    assert not [value for value in every_text_value() if found[0] in value]  # nor the admin log


def test_the_key_and_its_digest_are_never_shown_after_creation(admin_client, alice_key):
    api_key, plaintext = alice_key
    for url in (
        "/admin/billing/apikey/",
        f"/admin/billing/apikey/{api_key.pk}/change/",
        f"/admin/billing/apikey/{api_key.pk}/history/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        assert plaintext not in page and api_key.digest not in page, url
        assert api_key.masked in page or url.endswith("history/")


def test_an_admin_can_find_a_key_by_pasting_it(admin_client, alice_key, bob_key):
    response = admin_client.get("/admin/billing/apikey/", {"q": alice_key[1]})
    assert alice_key[0].masked in response.content.decode()
    assert bob_key[0].masked not in response.content.decode()


def test_an_admin_change_applies_on_the_keys_next_request(admin_client, alice_key):
    client = key_client(alice_key[1])
    assert client.get("/api/billing/balance/").status_code == 200
    response = admin_client.post(
        f"/admin/billing/apikey/{alice_key[0].pk}/change/",
        {"name": "renamed", "allowed_models": "gemini/*", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 302, response.content
    assert ApiKey.objects.get(pk=alice_key[0].pk).allowed_models == ["gemini/*"]
    request = Request(APIRequestFactory().get("/", HTTP_X_API_KEY=alice_key[1]))
    _, info = ApiKeyAuthentication().authenticate(request)
    assert (info.name, info.allowed_models) == ("renamed", ("gemini/*",))


def test_the_revoke_action_revokes_keys_at_once(admin_client, alice_key):
    client = key_client(alice_key[1])
    assert client.get("/api/billing/balance/").status_code == 200
    response = admin_client.post(
        "/admin/billing/apikey/",
        {"action": "revoke_keys", "_selected_action": [alice_key[0].pk]},
    )
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=alice_key[0].pk).revoked_at is not None
    assert client.get("/api/billing/balance/").json()["code"] == "api_key_revoked"


def test_keys_cannot_be_deleted_in_the_admin(admin_client, alice_key):
    response = admin_client.post(
        f"/admin/billing/apikey/{alice_key[0].pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 403
    assert ApiKey.objects.filter(pk=alice_key[0].pk).exists()


def test_the_grant_action_writes_an_entry_recording_the_admin(admin_client, alice, root):
    selection = {"action": "grant_credits", "_selected_action": [alice.pk]}
    form = admin_client.post("/admin/billing/creditaccount/", selection)
    assert form.status_code == 200
    assert 'name="amount"' in form.content.decode()
    response = admin_client.post(
        "/admin/billing/creditaccount/",
        {**selection, "apply": "1", "amount": "12.5", "note": "promo"},
    )
    assert response.status_code == 302
    entry = LedgerEntry.objects.filter(account_id=alice.pk).order_by("-id").first()
    assert (entry.kind, entry.amount, entry.note, entry.admin) == (
        "grant",
        12_500_000,
        "promo",
        root,
    )
    assert CreditAccount.objects.get(pk=alice.pk).balance == 512_500_000


def test_the_deduct_action_never_goes_below_what_is_available(admin_client, alice, root):
    credits_hold(user_id=alice.pk, amount=450 * MICRO, request_id="req_1")
    selection = {"action": "deduct_credits", "_selected_action": [alice.pk], "apply": "1"}
    response = admin_client.post(
        "/admin/billing/creditaccount/", {**selection, "amount": "60", "note": "x"}, follow=True
    )
    assert "only 50 are available" in response.content.decode()
    assert LedgerEntry.objects.filter(account_id=alice.pk).count() == 1
    admin_client.post("/admin/billing/creditaccount/", {**selection, "amount": "50", "note": "x"})
    entry = LedgerEntry.objects.filter(account_id=alice.pk).order_by("-id").first()
    assert (entry.kind, entry.amount, entry.admin) == ("adjustment", -50 * MICRO, root)


def test_the_grant_form_refuses_zero(admin_client, alice):
    selection = {"action": "grant_credits", "_selected_action": [alice.pk], "apply": "1"}
    response = admin_client.post("/admin/billing/creditaccount/", {**selection, "amount": "0"})
    assert response.status_code == 200  # the form again, with its error
    assert LedgerEntry.objects.filter(account_id=alice.pk).count() == 1


def test_an_account_balance_is_read_only(admin_client, alice):
    page = admin_client.get(f"/admin/billing/creditaccount/{alice.pk}/change/")
    assert page.status_code == 200
    assert 'name="balance"' not in page.content.decode()
    assert (
        admin_client.post(f"/admin/billing/creditaccount/{alice.pk}/change/", {}).status_code == 403
    )
    assert admin_client.get("/admin/billing/creditaccount/add/").status_code == 403


def test_the_ledger_can_be_searched_and_filtered_but_never_changed(admin_client, alice):
    entry = LedgerEntry.objects.get(account_id=alice.pk)
    listing = admin_client.get(
        "/admin/billing/ledgerentry/", {"q": "alice", "kind__exact": "grant"}
    )
    assert listing.status_code == 200
    assert (
        "Signup credits"
        in admin_client.get(f"/admin/billing/ledgerentry/{entry.pk}/change/").content.decode()
    )
    assert admin_client.get("/admin/billing/ledgerentry/add/").status_code == 403
    response = admin_client.post(f"/admin/billing/ledgerentry/{entry.pk}/change/", {"amount": "1"})
    assert response.status_code == 403
    response = admin_client.post(f"/admin/billing/ledgerentry/{entry.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    response = admin_client.post(
        "/admin/billing/ledgerentry/", {"action": "delete_selected", "_selected_action": [entry.pk]}
    )
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()
    assert LedgerEntry.objects.get(pk=entry.pk).amount == 500 * MICRO


def test_prices_are_edited_in_credits_and_apply_at_once(admin_client, db):
    assert price_for(provider="openai", model="gpt-4o").per_request == MICRO
    response = admin_client.post(
        "/admin/billing/modelprice/add/",
        {
            "model": "OpenAI/gpt-4o",
            "per_request": "0",
            "per_1k_prompt": "0.25",
            "per_1k_completion": "1",
        },
    )
    assert response.status_code == 302, response.content
    price = ModelPrice.objects.get()
    assert (price.model, price.per_1k_prompt, price.per_1k_completion) == (
        "openai/gpt-4o",
        250_000,
        MICRO,
    )
    assert price_for(provider="openai", model="gpt-4o").per_1k_prompt == 250_000
    page = admin_client.get(f"/admin/billing/modelprice/{price.pk}/change/").content.decode()
    assert 'value="0.250000"' in page
    admin_client.post(f"/admin/billing/modelprice/{price.pk}/delete/", {"post": "yes"})
    assert price_for(provider="openai", model="gpt-4o").per_request == MICRO


def test_the_holds_list_is_read_only(admin_client, alice):
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_1")
    assert "req_1" in admin_client.get("/admin/billing/credithold/").content.decode()
    assert admin_client.get("/admin/billing/credithold/add/").status_code == 403


def test_the_refund_action_gives_a_usage_charge_back_once(admin_client, alice, root):
    credits_hold(user_id=alice.pk, amount=5 * MICRO, request_id="req_1")
    usage = credits_settle(request_id="req_1", cost=5 * MICRO)
    refund = {"action": "refund_entries", "_selected_action": [usage.pk]}
    assert admin_client.post("/admin/billing/ledgerentry/", refund).status_code == 302
    admin_client.post("/admin/billing/ledgerentry/", refund)
    refunds = LedgerEntry.objects.filter(kind="refund")
    assert [(r.amount, r.request_id, r.admin) for r in refunds] == [(5 * MICRO, "req_1", root)]
    assert CreditAccount.objects.get(pk=alice.pk).balance == 500 * MICRO
