"""The shared base of every test: named users, API clients, a clean cache."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.services import user_create
from billing.selectors import price_table
from billing.services import rows
from billing.services.api_keys import api_key_touches_forget
from billing.services.credits import _Sweep
from llm_api import fallbacks
from llm_api.limits.store import local_store
from llm_api.selectors import aliases_changed

pytest_plugins = ["tests.fake_upstream", "tests.live", "tests.browser"]

PASSWORD = "correct-horse-battery-staple"


def _forget_process_state() -> None:
    cache.clear()
    price_table.clear()
    aliases_changed()
    fallbacks.reset()
    local_store.clear()
    api_key_touches_forget()
    _Sweep.next_at = 0.0


@pytest.fixture(scope="session", autouse=True)
def _writer_connection_closed(django_db_setup, django_db_blocker):
    """Close the money writes' own connection before the test database is dropped (PostgreSQL
    refuses to drop a database someone is connected to)."""
    yield
    rows.writer_close()


@pytest.fixture(autouse=True)
def _clean_state():
    """Throttles, cached keys, prices, aliases and the sweep timer live in the cache or the
    process: start every test without them."""
    _forget_process_state()
    yield
    _forget_process_state()


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def alice(db):
    return user_create(username="alice", password=PASSWORD, email="alice@example.com")


@pytest.fixture
def bob(db):
    return user_create(username="bob", password=PASSWORD, email="bob@example.com")


def jwt_client(user) -> APIClient:
    """Return a client signed in as `user` with a real JWT access token."""
    client = APIClient()
    response = client.post("/api/token/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client


@pytest.fixture
def alice_jwt(alice) -> APIClient:
    return jwt_client(alice)


@pytest.fixture
def bob_jwt(bob) -> APIClient:
    return jwt_client(bob)
