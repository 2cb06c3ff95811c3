"""/api/info: each provider's configuration and, separately, whether it answers."""

import pytest
from rest_framework.test import APIClient

from tests.fake_upstream.server import closed_port_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def providers(settings, fake_upstream):
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=5.0)
    settings.PROVIDER_HEALTH_CACHE_SECONDS = 60
    return fake_upstream


def test_an_ollama_nothing_answers_for_is_configured_but_not_reachable_nor_available(
    settings, providers
):
    entries = providers.llm_providers(timeout=5.0)
    entries["ollama"]["OPTIONS"]["host"] = closed_port_url()
    settings.LLM_PROVIDERS = entries
    ollama = APIClient().get("/api/info").json()["providers"]["ollama"]
    assert (ollama["configured"], ollama["reachable"], ollama["available"]) == (True, False, False)
    assert ollama["error"]["code"] in {"upstream_unreachable", "upstream_timeout"}


def test_a_provider_that_answers_is_reachable_and_available(providers):
    body = APIClient().get("/api/info").json()
    for name, status in body["providers"].items():
        assert (status["configured"], status["reachable"], status["available"]) == (
            True,
            True,
            True,
        ), name
    assert body["providers_down"] == []


def test_reachability_is_checked_once_per_cache_period(providers):
    client = APIClient()
    first = client.get("/api/info").json()["checked_at"]
    probes = len(providers.requests)
    assert probes >= 4  # one model list per provider
    assert client.get("/api/info").json()["checked_at"] == first
    assert len(providers.requests) == probes
