import pytest
from django.contrib.auth import get_user_model

from tests.conftest import PASSWORD

User = get_user_model()


@pytest.mark.django_db
def test_it_creates_a_user(api):
    response = api.post(
        "/api/signup/", {"username": "charming_user", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["message"] == "User created successfully"
    user = User.objects.get(username="charming_user")
    assert user.check_password(PASSWORD)
    assert not user.is_staff


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["12345678901", "short", "password123", "charming_user1"])
def test_it_rejects_a_weak_password_naming_the_field(api, password):
    response = api.post(
        "/api/signup/", {"username": "charming_user", "password": password}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_value"
    assert "password" in body["errors"]
    assert body["detail"].startswith("password: ")
    assert not User.objects.filter(username="charming_user").exists()


def test_it_rejects_a_duplicate_username_naming_the_field(api, alice):
    response = api.post("/api/signup/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["errors"]["username"][0]
    assert User.objects.filter(username="alice").count() == 1


@pytest.mark.django_db
def test_it_requires_username_and_password(api):
    response = api.post("/api/signup/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"username", "password"}


@pytest.mark.django_db
def test_it_rejects_an_invalid_email(api):
    response = api.post(
        "/api/signup/",
        {"username": "carol", "password": PASSWORD, "email": "not-an-email"},
        format="json",
    )
    assert response.status_code == 400
    assert "email" in response.json()["errors"]


@pytest.mark.django_db
def test_it_answers_malformed_json_with_a_400(api):
    response = api.post("/api/signup/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
