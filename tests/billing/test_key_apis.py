"""/api/keys/: create (the key shown once), list, read, change, revoke; only one's own keys."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import keys
from billing.models import ApiKey
from billing.money import MICRO
from billing.services import api_key_create
from tests.billing.conftest import key_client


def test_it_creates_a_key_and_shows_it_once(alice_jwt, alice):
    response = alice_jwt.post(
        "/api/keys/",
        {"name": "ci", "allowed_models": ["openai/gpt-4o*"], "spend_cap": "12.5"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    key = body["key"]
    assert keys.is_well_formed(key)
    api_key = ApiKey.objects.get(pk=body["id"])
    assert (api_key.user, api_key.name, api_key.digest) == (alice, "ci", keys.digest(key))
    assert api_key.allowed_models == ["openai/gpt-4o*"]
    assert api_key.spend_cap == 12_500_000
    assert body["masked"] == f"{key[:11]}…{key[-4:]}"
    assert (body["status"], body["spend_cap"], body["spent"]) == ("active", "12.500000", "0.000000")
    assert key not in alice_jwt.get("/api/keys/").content.decode()
    assert key not in alice_jwt.get(f"/api/keys/{body['id']}/").content.decode()
    assert key_client(key).get("/api/billing/balance/").status_code == 200


def test_it_creates_a_key_that_expires_in_some_days(alice_jwt):
    response = alice_jwt.post("/api/keys/", {"expires_in_days": 7}, format="json")
    assert response.status_code == 201, response.content
    api_key = ApiKey.objects.get(pk=response.json()["id"])
    assert api_key.name == "default"
    assert abs(api_key.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"spend_cap": "-1"}, "spend_cap"),
        ({"spend_cap": "0.0000001"}, "spend_cap"),
        ({"rpm_limit": 0}, "rpm_limit"),
        ({"allowed_models": "openai/*"}, "allowed_models"),
        ({"allowed_models": [" "]}, "allowed_models"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_it_refuses_bad_key_settings_naming_the_field(alice_jwt, body, field):
    response = alice_jwt.post("/api/keys/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not ApiKey.objects.exists()


def test_it_lists_only_the_users_keys_without_any_secret(alice_jwt, alice_key, bob_key):
    response = alice_jwt.get("/api/keys/")
    assert response.status_code == 200
    listed = response.json()
    assert [item["id"] for item in listed] == [alice_key[0].pk]
    text = response.content.decode()
    assert alice_key[1] not in text and alice_key[0].digest not in text
    assert "digest" not in listed[0] and "key" not in listed[0]


def test_a_models_key_lists_only_itself_and_a_managing_key_creates_keys(alice, alice_key):
    api_key_create(user=alice, name="other")
    listed = key_client(alice_key[1]).get("/api/keys/")
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()] == [alice_key[0].pk]
    assert listed.json()[0]["scopes"] == ["models"]
    _, manager = api_key_create(user=alice, name="ops", scopes=["models", "manage"])
    assert len(key_client(manager).get("/api/keys/").json()) == 3
    response = key_client(manager).post("/api/keys/", {"name": "more"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["scopes"] == ["models"]


def test_it_renames_a_key_and_changes_its_allowlist(alice_jwt, alice_key):
    response = alice_jwt.patch(
        f"/api/keys/{alice_key[0].pk}/",
        {"name": "desktop", "allowed_models": ["Gemini/*"], "rpm_limit": 60},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "desktop"
    api_key = ApiKey.objects.get(pk=alice_key[0].pk)
    assert (api_key.name, api_key.allowed_models, api_key.rpm_limit) == (
        "desktop",
        ["gemini/*"],
        60,
    )


def test_it_removes_a_spend_cap_with_null(alice_jwt, alice):
    api_key, _ = api_key_create(user=alice, name="capped", spend_cap=MICRO)
    response = alice_jwt.patch(f"/api/keys/{api_key.pk}/", {"spend_cap": None}, format="json")
    assert response.status_code == 200
    assert ApiKey.objects.get(pk=api_key.pk).spend_cap is None


def test_it_revokes_a_key(alice_jwt, alice_key):
    response = alice_jwt.delete(f"/api/keys/{alice_key[0].pk}/")
    assert response.status_code == 204
    api_key = ApiKey.objects.get(pk=alice_key[0].pk)
    assert api_key.revoked_at is not None
    assert alice_jwt.get(f"/api/keys/{api_key.pk}/").json()["status"] == "revoked"
    assert alice_jwt.delete(f"/api/keys/{api_key.pk}/").status_code == 204
    response = alice_jwt.patch(f"/api/keys/{api_key.pk}/", {"name": "x"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "api_key_revoked"


def test_bob_cannot_read_change_or_revoke_alices_key(bob_jwt, alice_key):
    url = f"/api/keys/{alice_key[0].pk}/"
    for response in (
        bob_jwt.get(url),
        bob_jwt.patch(url, {"name": "mine now"}, format="json"),
        bob_jwt.delete(url),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    api_key = ApiKey.objects.get(pk=alice_key[0].pk)
    assert (api_key.name, api_key.revoked_at) == ("laptop", None)
    assert bob_jwt.get("/api/keys/").json() == []


def test_bob_cannot_reach_alices_key_with_his_own_key(bob, alice_key):
    client = key_client(api_key_create(user=bob, name="ops", scopes=["manage"])[1])
    assert client.get(f"/api/keys/{alice_key[0].pk}/").status_code == 404
    assert client.delete(f"/api/keys/{alice_key[0].pk}/").status_code == 404
    assert ApiKey.objects.get(pk=alice_key[0].pk).revoked_at is None


def test_patching_a_key_with_owner_balance_or_secret_fields_changes_nothing(
    alice_jwt, alice_key, bob
):
    before = ApiKey.objects.filter(pk=alice_key[0].pk).values().get()
    response = alice_jwt.patch(
        f"/api/keys/{alice_key[0].pk}/",
        {
            "user": bob.pk,
            "user_id": bob.pk,
            "owner": bob.pk,
            "digest": "0" * 64,
            "prefix": "sk-llm-XXXX",
            "last4": "XXXX",
            "spent": "-100",
            "held": "5",
            "revoked_at": None,
            "balance": "1000000",
            "is_staff": True,
        },
        format="json",
    )
    assert response.status_code == 200
    assert ApiKey.objects.filter(pk=alice_key[0].pk).values().get() == before


def test_a_restricted_key_cannot_create_or_widen_keys(alice):
    restricted, key = api_key_create(
        user=alice, name="narrow", allowed_models=["ollama/*"], scopes=["models", "manage"]
    )
    client = key_client(key)
    response = client.post("/api/keys/", {"name": "wide"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "restricted_api_key"
    response = client.patch(f"/api/keys/{restricted.pk}/", {"allowed_models": []}, format="json")
    assert response.status_code == 403
    assert ApiKey.objects.get(pk=restricted.pk).allowed_models == ["ollama/*"]
    assert client.delete(f"/api/keys/{restricted.pk}/").status_code == 204


def test_an_unknown_key_id_is_404(alice_jwt, db):
    assert alice_jwt.get("/api/keys/999999/").status_code == 404
