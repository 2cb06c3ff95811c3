"""The throttles against free credits and guessing: per client address, whatever X-Forwarded-For
says, and per username from any address. Real throttles, counted in the configured cache."""

import itertools

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from billing import keys
from billing.models import LedgerEntry
from tests.conftest import PASSWORD

User = get_user_model()

_addresses = (f"198.51.100.{n}" for n in itertools.count(1))
_headers = (f"203.0.113.{n % 250}, 192.0.2.{n % 250}" for n in itertools.count(1))


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    """Hashing is not what is tested; dozens of sign-ins at full strength would take minutes."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def limit(settings, scope: str) -> int:
    """Return how many attempts the rate of `scope` allows ("10/min": 10)."""
    return int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope].split("/")[0])


def from_one_address(address: str = "198.51.100.200") -> APIClient:
    return APIClient(REMOTE_ADDR=address)


def with_fresh_forwarded_for() -> dict:
    """A new X-Forwarded-For value, as an attacker sends with every request."""
    return {"HTTP_X_FORWARDED_FOR": next(_headers)}


def sign_in(client, username="alice", password=PASSWORD, **extra):
    return client.post(
        "/api/token/", {"username": username, "password": password}, format="json", **extra
    )


def assert_throttled(response, setting: str) -> None:
    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) > 0
    body = response.json()
    assert body["code"] == "throttled"
    assert setting in body["detail"]


# --- signup -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_forwarded_for_per_signup_does_not_get_around_the_signup_limit(settings):
    allowed = limit(settings, "signup")
    client = from_one_address()
    answers = [
        client.post(
            "/api/signup/",
            {"username": f"farmer{n}", "password": PASSWORD},
            format="json",
            **with_fresh_forwarded_for(),
        )
        for n in range(allowed + 5)
    ]

    assert [a.status_code for a in answers] == [201] * allowed + [429] * 5
    assert_throttled(answers[-1], "SIGNUP_THROTTLE_RATE")
    assert User.objects.filter(username__startswith="farmer").count() == allowed
    assert LedgerEntry.objects.filter(kind="grant").count() == allowed


@pytest.mark.django_db
def test_signups_from_another_address_are_counted_apart(settings):
    allowed = limit(settings, "signup")
    first = from_one_address("198.51.100.1")
    for n in range(allowed):
        first.post("/api/signup/", {"username": f"a{n}", "password": PASSWORD}, format="json")
    assert first.post("/api/signup/", {"username": "a-x", "password": PASSWORD}).status_code == 429

    other = from_one_address("198.51.100.2")
    response = other.post("/api/signup/", {"username": "b0", "password": PASSWORD})
    assert response.status_code == 201


# --- POST /api/token/ -----------------------------------------------------------------------------


def test_a_new_forwarded_for_per_guess_does_not_get_around_the_token_limit(settings, alice):
    allowed = limit(settings, "token")
    client = from_one_address()
    answers = [
        sign_in(client, password=f"guess-{n}", **with_fresh_forwarded_for())
        for n in range(allowed + 3)
    ]

    assert [a.status_code for a in answers] == [401] * allowed + [429] * 3
    assert_throttled(answers[-1], "TOKEN_THROTTLE_RATE")


def test_guesses_at_one_username_from_many_addresses_are_limited(settings, alice, bob):
    allowed = limit(settings, "login_username")
    answers = [
        sign_in(from_one_address(next(_addresses)), password=f"guess-{n}") for n in range(allowed)
    ]
    assert {a.status_code for a in answers} == {401}

    refused = sign_in(from_one_address(next(_addresses)))  # even the right password waits
    assert_throttled(refused, "LOGIN_USERNAME_THROTTLE_RATE")
    assert "failed sign-ins for this username" in refused.json()["detail"]
    # Other accounts are not affected, from the same addresses or any other.
    assert sign_in(from_one_address(next(_addresses)), "bob").status_code == 200


def test_spellings_of_one_username_share_its_limit(settings, alice):
    allowed = limit(settings, "login_username")
    spellings = itertools.cycle(["alice", " alice", "ALICE", "alice ", "Alice"])
    for n in range(allowed):
        sign_in(from_one_address(next(_addresses)), next(spellings), password=f"guess-{n}")

    assert sign_in(from_one_address(next(_addresses))).status_code == 429


def test_successful_sign_ins_do_not_count_against_the_username(settings, alice):
    allowed = limit(settings, "login_username")
    for _ in range(allowed + 2):
        assert sign_in(from_one_address(next(_addresses))).status_code == 200


# --- API keys -----------------------------------------------------------------------------------


def key_request(key: str, address: str = "198.51.100.200", **extra):
    client = APIClient(REMOTE_ADDR=address)
    return client.get("/api/me/", HTTP_X_API_KEY=key, **extra)


def test_guessing_api_keys_is_throttled_per_address(settings, alice, alice_jwt):
    allowed = limit(settings, "key_failure")
    created = alice_jwt.post("/api/keys/", {"name": "real"}, format="json")
    real_key = created.json()["key"]
    unknown = [keys.generate().plaintext for _ in range(allowed)]  # well-formed, not stored

    answers = [key_request(key, **with_fresh_forwarded_for()) for key in unknown]
    assert {a.status_code for a in answers} == {401}
    assert {a.json()["code"] for a in answers} == {"invalid_api_key"}

    refused = key_request(keys.generate().plaintext)
    assert_throttled(refused, "KEY_FAILURE_THROTTLE_RATE")
    # Even a right key learns nothing from that address now...
    assert key_request(real_key).status_code == 429
    # ...while it works from any other.
    assert key_request(real_key, address="198.51.100.201").status_code == 200


def test_malformed_keys_count_as_failures_too(settings, db):
    allowed = limit(settings, "key_failure")
    for n in range(allowed):
        assert key_request(f"sk-llm-not-a-key-{n}").status_code == 401
    assert key_request("sk-llm-not-a-key").status_code == 429


def test_the_openai_routes_answer_a_throttled_key_in_openai_shape(settings, db):
    for n in range(limit(settings, "key_failure")):
        key_request(f"sk-llm-not-a-key-{n}")
    response = APIClient(REMOTE_ADDR="198.51.100.200").get(
        "/v1/models", HTTP_AUTHORIZATION=f"Bearer {keys.generate().plaintext}"
    )
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "KEY_FAILURE_THROTTLE_RATE" in error["message"]


def test_a_valid_key_is_never_counted_as_a_failure(settings, alice, alice_jwt):
    real_key = alice_jwt.post("/api/keys/", {"name": "real"}, format="json").json()["key"]
    for _ in range(limit(settings, "key_failure") + 2):
        assert key_request(real_key).status_code == 200


# --- the admin's login --------------------------------------------------------------------------


@pytest.fixture
def root(db):
    return User.objects.create_superuser("root", "root@example.com", PASSWORD)


def admin_sign_in(address: str, username: str = "root", password: str = PASSWORD):
    client = Client(REMOTE_ADDR=address)
    form = {"username": username, "password": password, "next": "/admin/"}
    return client.post("/admin/login/", form)


def test_the_admin_login_still_signs_in(root):
    response = admin_sign_in("198.51.100.200")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_the_admin_login_is_throttled_per_address_with_a_clear_429(settings, root):
    allowed = limit(settings, "admin_login")
    answers = [
        Client(REMOTE_ADDR="198.51.100.200").post(
            "/admin/login/",
            {"username": f"nobody{n}", "password": "guess"},
            **with_fresh_forwarded_for(),
        )
        for n in range(allowed)
    ]
    assert {a.status_code for a in answers} == {200}  # the form again, with its error

    refused = admin_sign_in("198.51.100.200")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "Too many admin sign-in attempts from your address" in refused.content.decode()
    assert "ADMIN_LOGIN_THROTTLE_RATE" in refused.content.decode()
    assert admin_sign_in("198.51.100.201").status_code == 302


def test_admin_guesses_from_many_addresses_are_limited_per_username(settings, root):
    for n in range(limit(settings, "login_username")):
        assert admin_sign_in(next(_addresses), password=f"guess-{n}").status_code == 200

    refused = admin_sign_in(next(_addresses))
    assert refused.status_code == 429
    assert "failed sign-ins for this username" in refused.content.decode()


def test_failures_at_the_api_and_at_the_admin_add_up(settings, root):
    allowed = limit(settings, "login_username")
    for n in range(allowed):
        if n % 2:
            sign_in(from_one_address(next(_addresses)), "root", password=f"guess-{n}")
        else:
            admin_sign_in(next(_addresses), password=f"guess-{n}")

    assert admin_sign_in(next(_addresses)).status_code == 429
    assert sign_in(from_one_address(next(_addresses)), "root").status_code == 429
