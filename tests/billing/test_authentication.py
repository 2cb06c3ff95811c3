from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from billing import keys
from billing.authentication import ApiKeyAuthentication, ApiKeyInfo, api_key_of
from billing.models import ApiKey
from billing.services import api_key_create, api_key_revoke, api_key_update
from tests.billing.conftest import key_client


def authenticate(**headers):
    request = Request(APIRequestFactory().get("/api/billing/balance/", **headers))
    return ApiKeyAuthentication().authenticate(request)


def test_it_accepts_a_key_in_x_api_key(alice, alice_key):
    response = key_client(alice_key[1]).get("/api/billing/balance/")
    assert response.status_code == 200, response.content
    assert response.json()["balance"] == "500.000000"


def test_it_accepts_a_key_as_a_bearer_token(alice, alice_key):
    response = key_client(alice_key[1], header="bearer").get("/api/billing/balance/")
    assert response.status_code == 200, response.content


def test_a_jwt_still_works_as_a_bearer_token(alice_jwt):
    assert alice_jwt.get("/api/billing/balance/").status_code == 200


def test_it_says_how_to_send_a_key_when_credentials_are_missing(api, db):
    response = api.get("/api/billing/balance/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert "X-API-Key" in response.json()["detail"]
    assert response.headers["WWW-Authenticate"]


def test_it_rejects_an_unknown_key(db):
    unknown = keys.generate().plaintext  # well-formed, never stored
    response = key_client(unknown).get("/api/billing/balance/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key.", "code": "invalid_api_key"}


def test_it_rejects_a_key_with_one_character_changed_without_any_query(alice_key):
    key = alice_key[1]
    mangled = key[:20] + ("a" if key[20] != "a" else "b") + key[21:]
    for header in ("x-api-key", "bearer"):
        with CaptureQueriesContext(connection) as queries:
            response = key_client(mangled, header=header).get("/api/billing/balance/")
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"
        assert len(queries) == 0, queries.captured_queries


def test_it_makes_no_query_to_authenticate_a_key_with_a_warm_cache(alice, alice_key):
    key = alice_key[1]
    assert authenticate(HTTP_X_API_KEY=key)[0] == alice  # warms the cache
    with CaptureQueriesContext(connection) as queries:
        user, info = authenticate(HTTP_X_API_KEY=key)
    assert len(queries) == 0, queries.captured_queries
    assert user == alice
    assert info == ApiKeyInfo(
        id=alice_key[0].pk, user_id=alice.pk, name="laptop", prefix=alice_key[0].prefix
    )


def test_a_revoked_key_fails_on_its_very_next_request(alice_key):
    client = key_client(alice_key[1])
    assert client.get("/api/billing/balance/").status_code == 200
    api_key_revoke(api_key=alice_key[0])
    response = client.get("/api/billing/balance/")
    assert response.status_code == 401
    assert response.json() == {"detail": "This API key was revoked.", "code": "api_key_revoked"}


def test_a_key_revoked_through_the_api_fails_on_its_next_request(alice):
    api_key, key = api_key_create(user=alice, name="ops", scopes=["models", "manage"])
    client = key_client(key)
    assert client.delete(f"/api/keys/{api_key.pk}/").status_code == 204
    response = client.get("/api/billing/balance/")
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_revoked"


def test_it_rejects_an_expired_key_saying_when_it_expired(alice, monkeypatch):
    expires_at = timezone.now() + timedelta(minutes=5)
    _, key = api_key_create(user=alice, name="short-lived", expires_at=expires_at)
    client = key_client(key)
    assert client.get("/api/billing/balance/").status_code == 200  # now cached, still valid
    later = expires_at + timedelta(seconds=1)
    monkeypatch.setattr("billing.authentication.timezone.now", lambda: later)
    response = client.get("/api/billing/balance/")
    assert response.status_code == 401
    assert response.json() == {
        "detail": f"This API key expired on {expires_at:%Y-%m-%d %H:%M} UTC.",
        "code": "api_key_expired",
    }


def test_it_rejects_a_key_found_expired_in_the_database(alice_key):
    expired = timezone.now() - timedelta(days=1)
    ApiKey.objects.filter(pk=alice_key[0].pk).update(expires_at=expired)
    response = key_client(alice_key[1]).get("/api/billing/balance/")
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_expired"


def test_a_changed_allowlist_applies_on_the_next_request(alice, alice_key):
    _, info = authenticate(HTTP_X_API_KEY=alice_key[1])
    assert info.allows("openai/gpt-4o")
    api_key_update(
        api_key=alice_key[0], data={"allowed_models": ["OpenAI/gpt-4o-mini", "ollama/*"]}
    )
    _, info = authenticate(HTTP_X_API_KEY=alice_key[1])
    assert info.allowed_models == ("openai/gpt-4o-mini", "ollama/*")
    assert info.allows("openai/gpt-4o-mini")
    assert info.allows("ollama/llama3.2")
    assert not info.allows("openai/gpt-4o")


def test_it_rejects_the_key_of_a_disabled_user(alice, alice_key):
    alice.is_active = False
    alice.save()
    response = key_client(alice_key[1]).get("/api/billing/balance/")
    assert response.status_code == 401
    assert response.json()["code"] == "user_inactive"


def test_it_records_last_use_at_most_once_a_minute(alice_key):
    client = key_client(alice_key[1])
    client.get("/api/billing/balance/")
    first = ApiKey.objects.get(pk=alice_key[0].pk).last_used_at
    assert first is not None
    client.get("/api/billing/balance/")
    assert ApiKey.objects.get(pk=alice_key[0].pk).last_used_at == first


def test_a_bearer_value_without_the_key_prefix_is_left_to_jwt(db):
    assert authenticate(HTTP_AUTHORIZATION="Bearer eyJhbGciOi.not.a-key") is None
    assert authenticate() is None


def test_api_key_of_tells_which_key_authenticated_a_request(alice, alice_key):
    request = Request(
        APIRequestFactory().get("/", HTTP_X_API_KEY=alice_key[1]),
        authenticators=[ApiKeyAuthentication()],
    )
    assert request.user == alice
    assert api_key_of(request).id == alice_key[0].pk
    jwt_request = Request(APIRequestFactory().get("/"), authenticators=[])
    assert api_key_of(jwt_request) is None


def test_an_expiry_date_in_the_past_is_refused(alice):
    with pytest.raises(ValidationError):
        api_key_create(user=alice, name="old", expires_at=timezone.now() - timedelta(days=1))
