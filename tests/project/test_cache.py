"""The Redis cache: one client and one bounded connection pool per process, shared by every
thread (Django's `caches` are one backend object per thread)."""

import os

import pytest
from django.conf import settings

from project.cache import RedisCache
from tests.threads import in_threads

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")


def cache_with(**options) -> RedisCache:
    base = settings.CACHES["default"]
    params = {**base, "OPTIONS": {**base["OPTIONS"], **options}, "KEY_PREFIX": "test-pool"}
    return RedisCache(base["LOCATION"], params)


def test_every_thread_gets_the_same_client_and_pool():
    clients = in_threads(8, lambda i: cache_with(max_connections=7)._cache.get_client())
    assert len({id(client) for client in clients}) == 1, clients
    assert clients[0].connection_pool.max_connections == 7


def test_more_threads_than_connections_wait_for_one_instead_of_failing():
    # Each thread builds its own backend object, as Django's per-thread `caches` do.
    cache_with(max_connections=2).set("shared", "value")
    results = in_threads(
        60, lambda i: [cache_with(max_connections=2).get_many(["shared"]) for _ in range(20)]
    )
    assert all(result == [{"shared": "value"}] * 20 for result in results), results
    pool = cache_with(max_connections=2)._cache.get_client().connection_pool
    assert 1 <= len(pool._connections) <= 2  # what it ever opened


@pytest.mark.django_db
def test_a_cache_that_cannot_be_reached_answers_503_not_500(settings, alice):
    from rest_framework.test import APIClient

    from billing.services import api_key_create
    from tests.fake_upstream.server import closed_port_url

    key = api_key_create(user=alice, name="c")[1]
    redis_url = closed_port_url().replace("http://", "redis://") + "/0"
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"]}}
    settings.CACHES["default"]["LOCATION"] = redis_url
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = api.post(
        "/v1/chat/completions",
        {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "cache_unavailable"
    assert response["Retry-After"] == "1"
