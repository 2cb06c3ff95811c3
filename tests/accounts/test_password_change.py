"""A changed password ends every session the old one opened: its refresh tokens stop working,
whether the password changed through the API, the admin or `manage.py changepassword`."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from tests.conftest import PASSWORD

User = get_user_model()
NEW_PASSWORD = "a-brand-new-passphrase-42"


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def sign_in(username="alice", password=PASSWORD) -> dict:
    response = APIClient().post(
        "/api/token/", {"username": username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def refresh(token: str):
    return APIClient().post("/api/token/refresh/", {"refresh": token}, format="json")


def change_password(access: str, current: str = PASSWORD, new: str = NEW_PASSWORD):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.post(
        "/api/me/password/",
        {"current_password": current, "new_password": new},
        format="json",
    )


def assert_refused(token: str) -> None:
    response = refresh(token)
    assert response.status_code == 401, response.content
    assert response.json()["code"] == "token_not_valid"


def test_changing_the_password_revokes_every_refresh_token(alice, bob):
    laptop, phone = sign_in(), sign_in()
    bobs = sign_in("bob")

    response = change_password(laptop["access"])

    assert response.status_code == 200, response.content
    assert "sign in again" in response.json()["message"]
    assert_refused(laptop["refresh"])
    assert_refused(phone["refresh"])
    assert refresh(bobs["refresh"]).status_code == 200  # nobody else's
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert not OutstandingToken.objects.filter(user=alice, blacklistedtoken__isnull=True).exists()


def test_the_new_password_signs_in_and_its_tokens_work(alice):
    change_password(sign_in()["access"])

    fresh = sign_in(password=NEW_PASSWORD)
    assert refresh(fresh["refresh"]).status_code == 200
    wrong = APIClient().post("/api/token/", {"username": "alice", "password": PASSWORD})
    assert wrong.status_code == 401


def test_a_wrong_current_password_changes_nothing(alice):
    tokens = sign_in()

    response = change_password(tokens["access"], current="not-my-password")

    assert response.status_code == 400
    assert response.json()["code"] == "wrong_password"
    assert "current_password" in response.json()["detail"]
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)
    assert refresh(tokens["refresh"]).status_code == 200


def test_a_weak_new_password_is_refused_naming_the_field(alice):
    tokens = sign_in()

    response = change_password(tokens["access"], new="12345678")

    assert response.status_code == 400
    assert "new_password" in response.json()["errors"]
    assert refresh(tokens["refresh"]).status_code == 200


def test_it_needs_both_fields(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {sign_in()['access']}")
    response = client.post("/api/me/password/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"current_password", "new_password"}


@pytest.mark.django_db
def test_it_needs_a_signed_in_user(api):
    response = api.post(
        "/api/me/password/",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        format="json",
    )
    assert response.status_code == 401


def test_an_api_key_cannot_change_the_password(alice, alice_jwt):
    created = alice_jwt.post(
        "/api/keys/", {"name": "script", "scopes": ["models", "manage"]}, format="json"
    )
    key = created.json()["key"]
    response = APIClient().post(
        "/api/me/password/",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        format="json",
        HTTP_X_API_KEY=key,
    )
    assert response.status_code == 403
    assert "POST /api/token/" in response.json()["detail"]
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_guessing_the_current_password_counts_as_failed_sign_ins(alice, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "login_username": "3/hour",
        },
    }
    access = sign_in()["access"]
    answers = [change_password(access, current=f"guess-{n}").status_code for n in range(3)]
    assert answers == [400, 400, 400]

    assert change_password(access).status_code == 429
    assert (
        APIClient().post("/api/token/", {"username": "alice", "password": PASSWORD}).status_code
        == 429
    )
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


# --- every other way to change a password ---------------------------------------------------------


def test_the_admins_password_form_revokes_the_users_refresh_tokens(alice):
    tokens = sign_in()
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    admin = Client()
    admin.force_login(User.objects.get(username="root"))

    response = admin.post(
        f"/admin/auth/user/{alice.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert_refused(tokens["refresh"])


def test_manage_py_changepassword_revokes_the_users_refresh_tokens(alice, monkeypatch):
    tokens = sign_in()
    # The command asks twice on the terminal; the test answers.
    monkeypatch.setattr(
        "django.contrib.auth.management.commands.changepassword.getpass.getpass",
        lambda prompt="": NEW_PASSWORD,
    )

    call_command("changepassword", "alice", stdout=io.StringIO())

    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert_refused(tokens["refresh"])
    assert BlacklistedToken.objects.filter(token__user=alice).exists()


def test_saving_a_new_password_anywhere_revokes_them(alice):
    tokens = sign_in()

    alice.set_password(NEW_PASSWORD)
    alice.save()

    assert_refused(tokens["refresh"])


def test_a_save_without_a_new_password_revokes_nothing(alice):
    tokens = sign_in()

    alice.email = "elsewhere@example.com"
    alice.save()

    assert refresh(tokens["refresh"]).status_code == 200
