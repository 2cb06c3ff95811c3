import pytest

from tests.conftest import PASSWORD


def obtain(api, username="alice", password=PASSWORD):
    return api.post("/api/token/", {"username": username, "password": password}, format="json")


def test_it_issues_an_access_and_a_refresh_token(api, alice):
    response = obtain(api)
    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}


def test_it_refuses_a_wrong_password(api, alice):
    response = obtain(api, password="wrong-password")
    assert response.status_code == 401
    assert response.json()["code"] == "no_active_account"


def test_the_access_token_opens_me(api, alice):
    access = obtain(api).json()["access"]
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    response = api.get("/api/me/")
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert response.json()["email"] == "alice@example.com"


@pytest.mark.django_db
def test_me_without_a_token_is_401_saying_how_to_authenticate(api):
    response = api.get("/api/me/")
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["detail"]
    assert response["WWW-Authenticate"]


@pytest.mark.django_db
def test_me_with_a_bad_token_is_401(api):
    api.credentials(HTTP_AUTHORIZATION="Bearer eyJhbGciOiJIUzI1NiJ9.e30.bad-signature")
    response = api.get("/api/me/")
    assert response.status_code == 401


def test_refresh_rotates_and_the_old_refresh_is_refused(api, alice):
    first = obtain(api).json()
    rotated = api.post("/api/token/refresh/", {"refresh": first["refresh"]}, format="json")
    assert rotated.status_code == 200
    assert set(rotated.json()) == {"access", "refresh"}
    assert rotated.json()["refresh"] != first["refresh"]

    reused = api.post("/api/token/refresh/", {"refresh": first["refresh"]}, format="json")
    assert reused.status_code == 401
    assert reused.json()["code"] == "token_not_valid"

    again = api.post("/api/token/refresh/", {"refresh": rotated.json()["refresh"]}, format="json")
    assert again.status_code == 200


def test_logout_makes_the_refresh_token_unusable(api, alice):
    tokens = obtain(api).json()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    response = api.post("/api/logout/", {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 205
    api.credentials()
    refused = api.post("/api/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refused.status_code == 401


def test_logout_refuses_someone_elses_refresh_token(api, alice, bob):
    bobs = obtain(api, "bob").json()
    alices = obtain(api).json()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {alices['access']}")
    response = api.post("/api/logout/", {"refresh": bobs["refresh"]}, format="json")
    assert response.status_code == 400
    assert "refresh" in response.json()["errors"]


def test_logout_refuses_garbage_with_a_field_error(alice_jwt):
    response = alice_jwt.post("/api/logout/", {"refresh": "garbage"}, format="json")
    assert response.status_code == 400
    assert "refresh" in response.json()["errors"]


def test_me_patch_changes_the_email_and_nothing_else(alice, alice_jwt):
    response = alice_jwt.patch(
        "/api/me/",
        {"email": "new@example.com", "is_staff": True, "is_superuser": True, "username": "root"},
        format="json",
    )
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.email == "new@example.com"
    assert (alice.username, alice.is_staff, alice.is_superuser) == ("alice", False, False)


def test_the_token_endpoint_is_throttled_against_password_guessing(api, alice, settings):
    limit = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"].split("/")[0])
    answers = [obtain(api, password=f"guess-{n}").status_code for n in range(limit)]
    assert set(answers) == {401}
    throttled = obtain(api)  # even the right password waits now
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
