"""Revocation and deactivation apply on the very next request, in every worker: keys are served
from a cache every worker shares (several workers with a per-process cache fail a check), and
each change of a key or of its user replaces the key's cached entry."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import override_settings
from django.utils import timezone

from billing.checks import check_shared_cache
from billing.models import ApiKey
from billing.services import api_key_create, api_key_update
from tests.billing.conftest import key_client

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DUMMY = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/0",  # never connected to: the check reads settings
    }
}


def balance_status(key: str) -> tuple[int, str | None]:
    response = key_client(key).get("/api/billing/balance/")
    return response.status_code, response.json().get("code")


# --- Several workers need a shared cache --------------------------------------------------------


@pytest.mark.parametrize("caches", [LOCMEM, DUMMY], ids=["locmem", "dummy"])
def test_several_workers_with_a_per_process_cache_fail_the_check(caches):
    with override_settings(WEB_WORKERS=2, CACHES=caches):
        errors = check_shared_cache()
        with pytest.raises(SystemCheckError, match=r"billing\.E001"):
            call_command("check")
    assert [error.id for error in errors] == ["billing.E001"]
    assert "2 worker processes (WEB_WORKERS)" in errors[0].msg
    assert "REDIS_URL" in errors[0].hint


@pytest.mark.parametrize(
    ("workers", "caches"),
    [(1, LOCMEM), (1, DUMMY), (4, REDIS)],
    ids=["one-locmem", "one-dummy", "redis"],
)
def test_one_worker_or_a_shared_cache_passes_the_check(workers, caches):
    with override_settings(WEB_WORKERS=workers, CACHES=caches):
        assert check_shared_cache() == []


def _never_exec(*args):
    raise AssertionError("serve went on to start granian")


def test_serve_refuses_more_workers_than_the_cache_allows(monkeypatch):
    # Refused before it would become granian (were it not, the guard fails the test instead of
    # replacing the test process); the workers come from --workers, not WEB_WORKERS.
    monkeypatch.setattr("llm_api.management.commands.serve.os.execv", _never_exec)
    with override_settings(WEB_WORKERS=1, CACHES=LOCMEM), pytest.raises(CommandError) as refused:
        call_command("serve", workers=3)
    assert "3 worker processes" in str(refused.value) and "REDIS_URL" in str(refused.value)


# --- Revoking or changing a key ------------------------------------------------------------------


def test_a_key_revoked_through_the_api_fails_on_its_next_request(alice, alice_jwt, alice_key):
    assert balance_status(alice_key[1]) == (200, None)  # the key is now cached
    assert alice_jwt.delete(f"/api/keys/{alice_key[0].pk}/").status_code == 204
    assert balance_status(alice_key[1]) == (401, "api_key_revoked")


def test_a_key_revoked_by_a_managing_key_fails_on_its_next_request(alice, alice_key):
    _, manager = api_key_create(user=alice, name="ops", scopes=["manage"])
    assert balance_status(alice_key[1]) == (200, None)
    assert key_client(manager).delete(f"/api/keys/{alice_key[0].pk}/").status_code == 204
    assert balance_status(alice_key[1]) == (401, "api_key_revoked")
    assert ApiKey.objects.get(pk=alice_key[0].pk).revoked_at is not None


def test_a_changed_expiry_applies_on_the_next_request(alice_key, monkeypatch):
    assert balance_status(alice_key[1]) == (200, None)  # cached without an expiry
    expires_at = timezone.now() + timedelta(hours=1)
    api_key_update(api_key=alice_key[0], data={"expires_at": expires_at})
    later = expires_at + timedelta(seconds=1)
    monkeypatch.setattr("billing.authentication.timezone.now", lambda: later)
    assert balance_status(alice_key[1]) == (401, "api_key_expired")


# --- Deactivating or deleting a user -------------------------------------------------------------


def test_a_user_deactivated_in_code_loses_their_keys_on_the_next_request(alice, alice_key):
    assert balance_status(alice_key[1]) == (200, None)
    alice.is_active = False
    alice.save()
    assert balance_status(alice_key[1]) == (401, "user_inactive")
    alice.is_active = True
    alice.save()
    assert balance_status(alice_key[1]) == (200, None)


def test_a_user_deactivated_in_the_admin_loses_their_keys_on_the_next_request(
    admin_client, alice, alice_key
):
    _, other = api_key_create(user=alice, name="second")
    assert balance_status(alice_key[1]) == (200, None)
    assert balance_status(other) == (200, None)
    response = admin_client.post(
        f"/admin/auth/user/{alice.pk}/change/",
        {
            "username": "alice",
            "email": "alice@example.com",
            # is_active left out: its box unticked
            "date_joined_0": alice.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": alice.date_joined.strftime("%H:%M:%S"),
        },
    )
    assert response.status_code == 302, response.content
    assert get_user_model().objects.get(pk=alice.pk).is_active is False
    assert balance_status(alice_key[1]) == (401, "user_inactive")
    assert balance_status(other) == (401, "user_inactive")


def test_a_deleted_users_key_fails_on_the_next_request(db):
    carol = get_user_model().objects.create_user("carol")  # no ledger entries: deletable
    _, key = api_key_create(user=carol, name="carol's")
    assert balance_status(key) == (200, None)
    carol.delete()
    assert balance_status(key) == (401, "invalid_api_key")
