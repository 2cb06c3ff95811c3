"""Key scopes: a key calls the models and reads its own usage; managing keys and the account
needs a login token or a key with "manage", and a key never hands out more than it has."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from billing.exceptions import RestrictedApiKey
from billing.models import ApiKey
from billing.money import MICRO
from billing.selectors import cached_key_of
from billing.services import api_key_create, api_key_revoke, api_key_update
from tests.billing.conftest import key_client
from tests.billing.test_billing_apis import spend

MANAGE = ["models", "manage"]


def managing_key(user, **settings):
    """Return (ApiKey, client) for a key of `user` with the "manage" scope."""
    api_key, plaintext = api_key_create(user=user, name="ops", scopes=MANAGE, **settings)
    return api_key, key_client(plaintext)


def assert_refused(response, *words):
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["code"] == "restricted_api_key"
    for word in words:
        assert word in body["detail"], body["detail"]


# --- What a key without "manage" may do -------------------------------------------------------


def test_a_new_key_has_the_models_scope_only(alice_jwt):
    response = alice_jwt.post("/api/keys/", {"name": "script"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["scopes"] == ["models"]
    assert ApiKey.objects.get(pk=response.json()["id"]).scopes == ["models"]


def test_a_login_token_creates_a_managing_key_and_listings_show_its_scopes(alice_jwt):
    response = alice_jwt.post("/api/keys/", {"name": "ops", "scopes": ["manage"]}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["scopes"] == MANAGE
    assert ApiKey.objects.get(pk=response.json()["id"]).scopes == MANAGE
    assert [item["scopes"] for item in alice_jwt.get("/api/keys/").json()] == [MANAGE]


def test_it_refuses_an_unknown_scope_naming_the_field(alice_jwt):
    response = alice_jwt.post("/api/keys/", {"scopes": ["admin"]}, format="json")
    assert response.status_code == 400
    assert "scopes" in response.json()["errors"]
    assert not ApiKey.objects.exists()


def test_a_key_without_manage_cannot_create_change_or_revoke_keys(alice, alice_key):
    other, _ = api_key_create(user=alice, name="other")
    client = key_client(alice_key[1])
    for response in (
        client.post("/api/keys/", {"name": "more"}, format="json"),
        client.post("/api/keys/", {"name": "more", "scopes": MANAGE}, format="json"),
        client.patch(f"/api/keys/{other.pk}/", {"name": "mine"}, format="json"),
        client.patch(f"/api/keys/{alice_key[0].pk}/", {"scopes": MANAGE}, format="json"),
        client.delete(f"/api/keys/{other.pk}/"),
    ):
        assert_refused(response, "use a login token", '"manage"')
    assert ApiKey.objects.filter(user=alice).count() == 2
    other.refresh_from_db()
    assert (other.name, other.revoked_at) == ("other", None)
    assert ApiKey.objects.get(pk=alice_key[0].pk).scopes == ["models"]


def test_the_refusal_names_what_was_refused(alice_key):
    response = key_client(alice_key[1]).delete(f"/api/keys/{alice_key[0].pk}/")
    assert_refused(response, "to revoke API keys")
    response = key_client(alice_key[1]).post("/api/keys/", {}, format="json")
    assert_refused(response, "to create API keys")


def test_a_key_without_manage_cannot_change_the_accounts_email(alice, alice_key):
    response = key_client(alice_key[1]).patch(
        "/api/me/", {"email": "mallory@example.com"}, format="json"
    )
    assert_refused(response, "to change the account", "use a login token")
    assert get_user_model().objects.get(pk=alice.pk).email == "alice@example.com"
    assert key_client(alice_key[1]).get("/api/me/").json()["email"] == "alice@example.com"


def test_a_managing_key_changes_the_accounts_email(alice):
    _, client = managing_key(alice)
    response = client.patch("/api/me/", {"email": "new@example.com"}, format="json")
    assert response.status_code == 200, response.content
    assert get_user_model().objects.get(pk=alice.pk).email == "new@example.com"
    assert client.get("/api/me/").json()["email"] == "new@example.com"


def test_a_key_without_manage_reads_only_itself(alice, alice_key):
    other, _ = api_key_create(user=alice, name="other")
    client = key_client(alice_key[1])
    assert client.get(f"/api/keys/{alice_key[0].pk}/").json()["name"] == "laptop"
    assert_refused(client.get(f"/api/keys/{other.pk}/"), "use a login token")


def test_a_key_without_manage_reads_only_its_own_ledger_and_usage(alice, alice_key, alice_jwt):
    other, _ = api_key_create(user=alice, name="other")
    spend(alice, "req_own", 2 * MICRO, api_key=alice_key[0])
    spend(alice, "req_other", 3 * MICRO, api_key=other)
    client = key_client(alice_key[1])

    ledger = client.get("/api/billing/ledger/")
    assert ledger.status_code == 200
    assert [entry["request_id"] for entry in ledger.json()["results"]] == ["req_own"]
    usage = client.get("/api/usage/").json()
    assert (usage["total"]["requests"], usage["total"]["spent"]) == (1, "2.000000")
    assert [row["api_key"] for row in usage["by_key"]] == [alice_key[0].pk]
    for path in ("/api/billing/ledger/", "/api/usage/"):
        assert_refused(client.get(f"{path}?api_key={other.pk}"), "use a login token")
        assert client.get(f"{path}?api_key={alice_key[0].pk}").status_code == 200

    # A login token and a managing key see the whole account: the grant and both keys' usage.
    _, manager = managing_key(alice)
    for whole in (alice_jwt, manager):
        results = whole.get("/api/billing/ledger/").json()["results"]
        assert sorted(entry["request_id"] for entry in results) == ["", "req_other", "req_own"]
        assert whole.get("/api/usage/").json()["total"]["requests"] == 2


def test_a_key_without_manage_still_reads_the_balance(alice_key):
    response = key_client(alice_key[1]).get("/api/billing/balance/")
    assert response.status_code == 200
    assert response.json()["balance"] == "500.000000"


# --- A managing key hands out no more than it has ----------------------------------------------


def test_an_expiring_key_cannot_create_a_key_that_never_expires_or_expires_later(alice):
    expires_at = timezone.now() + timedelta(days=1)
    _, client = managing_key(alice, expires_at=expires_at)
    for body in ({"name": "forever"}, {"name": "later", "expires_in_days": 7}):
        response = client.post("/api/keys/", body, format="json")
        assert_refused(response, "expires on", "expires_at", "use a login token")
        assert response.json()["detail"].count(f"{expires_at:%Y-%m-%d %H:%M:%S} UTC") == 2
    assert ApiKey.objects.filter(user=alice).count() == 1
    sooner = (expires_at - timedelta(hours=1)).isoformat()
    response = client.post("/api/keys/", {"name": "sooner", "expires_at": sooner}, format="json")
    assert response.status_code == 201, response.content


def test_a_capped_key_cannot_create_a_key_with_no_cap_or_a_larger_one(alice):
    _, client = managing_key(alice, spend_cap=10 * MICRO)
    for body in ({"name": "uncapped"}, {"name": "bigger", "spend_cap": "10.000001"}):
        response = client.post("/api/keys/", body, format="json")
        assert_refused(response, "spend_cap 10 credits", "at most 10 credits")
    assert ApiKey.objects.filter(user=alice).count() == 1
    response = client.post("/api/keys/", {"name": "smaller", "spend_cap": "10"}, format="json")
    assert response.status_code == 201, response.content
    assert ApiKey.objects.get(pk=response.json()["id"]).spend_cap == 10 * MICRO


@pytest.mark.parametrize("field", ["rpm_limit", "tpm_limit", "concurrency_limit"])
def test_a_rate_limited_key_cannot_create_a_key_without_that_limit(alice, field):
    _, client = managing_key(alice, **{field: 5})
    assert_refused(client.post("/api/keys/", {}, format="json"), f"{field} of at most 5")
    assert_refused(client.post("/api/keys/", {field: 6}, format="json"), field)
    assert client.post("/api/keys/", {field: 5}, format="json").status_code == 201


def test_a_key_with_an_allowlist_creates_only_keys_within_it(alice):
    _, client = managing_key(alice, allowed_models=["openai/gpt-4o*", "ollama/llama3.2"])
    for allowed in ([], ["openai/*"], ["ollama/llama3.2", "gemini/gemini-2.0-flash"]):
        response = client.post("/api/keys/", {"allowed_models": allowed}, format="json")
        assert_refused(response, "may call only openai/gpt-4o*, ollama/llama3.2")
    for allowed in (["openai/gpt-4o*"], ["OpenAI/gpt-4o-mini", "ollama/llama3.2"]):
        response = client.post("/api/keys/", {"allowed_models": allowed}, format="json")
        assert response.status_code == 201, response.content
    assert ApiKey.objects.filter(user=alice).count() == 3


def test_a_managing_key_can_grant_manage_and_a_login_token_anything(alice, alice_jwt):
    _, client = managing_key(alice, spend_cap=MICRO)
    response = client.post("/api/keys/", {"scopes": MANAGE, "spend_cap": "1"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["scopes"] == MANAGE
    assert alice_jwt.post("/api/keys/", {"scopes": MANAGE}, format="json").status_code == 201


def test_a_narrow_managing_key_cannot_widen_a_key_or_itself(alice):
    expires_at = timezone.now() + timedelta(days=1)
    api_key, client = managing_key(alice, spend_cap=MICRO, expires_at=expires_at)
    other, _ = api_key_create(user=alice, name="other", spend_cap=MICRO, expires_at=expires_at)
    for target in (api_key, other):
        url = f"/api/keys/{target.pk}/"
        assert_refused(client.patch(url, {"spend_cap": None}, format="json"), "spend_cap")
        assert_refused(client.patch(url, {"spend_cap": "2"}, format="json"), "spend_cap")
        target.refresh_from_db()
        assert (target.spend_cap, target.expires_at) == (MICRO, expires_at)
    response = client.patch(f"/api/keys/{other.pk}/", {"spend_cap": "0.5"}, format="json")
    assert response.status_code == 200, response.content
    assert ApiKey.objects.get(pk=other.pk).spend_cap == MICRO // 2


def test_a_narrow_managing_key_may_rename_and_revoke_a_wider_key(alice, alice_key):
    _, client = managing_key(alice, spend_cap=MICRO)
    url = f"/api/keys/{alice_key[0].pk}/"
    assert client.patch(url, {"name": "renamed"}, format="json").status_code == 200
    assert client.delete(url).status_code == 204
    alice_key[0].refresh_from_db()
    assert alice_key[0].name == "renamed" and alice_key[0].revoked_at is not None


# --- The rules hold without HTTP too --------------------------------------------------------


def test_the_services_refuse_a_key_without_manage(alice, alice_key):
    acting_key = cached_key_of(alice_key[0]).info
    with pytest.raises(RestrictedApiKey):
        api_key_create(user=alice, name="more", acting_key=acting_key)
    with pytest.raises(RestrictedApiKey):
        api_key_update(api_key=alice_key[0], data={"name": "x"}, acting_key=acting_key)
    with pytest.raises(RestrictedApiKey):
        api_key_revoke(api_key=alice_key[0], acting_key=acting_key)
    alice_key[0].refresh_from_db()
    assert (alice_key[0].name, alice_key[0].revoked_at) == ("laptop", None)
    assert ApiKey.objects.count() == 1


def test_the_services_refuse_a_wider_key_naming_the_setting(alice):
    api_key, _ = api_key_create(
        user=alice, name="ops", scopes=MANAGE, expires_at=timezone.now() + timedelta(days=1)
    )
    acting_key = cached_key_of(api_key).info
    with pytest.raises(RestrictedApiKey) as refused:
        api_key_create(user=alice, name="forever", acting_key=acting_key)
    assert (refused.value.status_code, refused.value.param) == (403, "expires_at")
    assert ApiKey.objects.count() == 1
    for expires_at in (None, api_key.expires_at + timedelta(seconds=1)):
        with pytest.raises(RestrictedApiKey) as refused:
            api_key_update(api_key=api_key, data={"expires_at": expires_at}, acting_key=acting_key)
        assert refused.value.param == "expires_at"
    assert ApiKey.objects.get(pk=api_key.pk).expires_at == api_key.expires_at


# --- Scopes travel with the cached key and change through the admin ---------------------------


def test_an_admin_gives_a_key_the_manage_scope_and_takes_it_back(admin_client, alice, alice_key):
    client = key_client(alice_key[1])
    assert client.post("/api/keys/", {}, format="json").status_code == 403  # now cached
    url = f"/admin/billing/apikey/{alice_key[0].pk}/change/"
    form = {"name": "laptop", "allowed_models": "", "expires_at_0": "", "expires_at_1": ""}
    response = admin_client.post(url, {**form, "scopes": ["models", "manage"]})
    assert response.status_code == 302, response.content
    assert ApiKey.objects.get(pk=alice_key[0].pk).scopes == MANAGE
    assert client.post("/api/keys/", {}, format="json").status_code == 201
    assert admin_client.post(url, {**form, "scopes": ["models"]}).status_code == 302
    assert client.post("/api/keys/", {}, format="json").status_code == 403


def test_an_admin_creates_a_managing_key(admin_client, alice):
    data = {"user": alice.pk, "name": "ops", "allowed_models": "", "scopes": ["manage"]}
    response = admin_client.post("/admin/billing/apikey/add/", data)
    assert response.status_code == 200, response.content
    assert ApiKey.objects.get(user=alice).scopes == MANAGE
    assert "models, manage" in admin_client.get("/admin/billing/apikey/").content.decode()
