"""Billing's shared test pieces: keys and clients that use them, an admin, a clean price table."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from billing.services import api_key_create
from tests.conftest import PASSWORD


def key_client(key: str, *, header: str = "x-api-key") -> APIClient:
    """Return a client that sends `key` in X-API-Key, or as a bearer token."""
    client = APIClient()
    if header == "bearer":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    else:
        client.credentials(HTTP_X_API_KEY=key)
    return client


@pytest.fixture
def alice_key(alice):
    """Return (ApiKey, plaintext) for an unrestricted key of alice's."""
    return api_key_create(user=alice, name="laptop")


@pytest.fixture
def alice_key_client(alice_key) -> APIClient:
    return key_client(alice_key[1])


@pytest.fixture
def bob_key(bob):
    return api_key_create(user=bob, name="bob's key")


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)


@pytest.fixture
def admin_client(client, root):
    client.force_login(root)
    return client
