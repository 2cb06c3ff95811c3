"""/health stays the gateway's own; /health?deep=1 and /api/info add each provider's state.

A provider that is down is reported, never turned into a 503: a load balancer must not take the
gateway out because one provider is down. Probes are cached, so a flood of health checks costs
each provider one probe per PROVIDER_HEALTH_CACHE_SECONDS.
"""

import json

import pytest
from rest_framework.test import APIClient

from tests.fake_upstream.server import closed_port_url


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def providers_up(settings, fake_upstream):
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=5.0)
    settings.PROVIDER_HEALTH_CACHE_SECONDS = 60
    return fake_upstream


def model_lists(fake_upstream) -> int:
    return sum(
        1
        for r in fake_upstream.requests
        if r.path in {"/v1/models", "/api/tags"} or "models" in r.path
    )


def test_deep_health_reports_every_provider_reachable(api, db, providers_up):
    response = api.get("/health", {"deep": "1"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "cache": "ok"}
    assert set(body["providers"]) == {"openai", "gemini", "ollama", "inhouse"}
    for status in body["providers"].values():
        assert (status["configured"], status["reachable"]) == (True, True)
    assert body["providers_down"] == []
    # The probe used the provider's credentials; the answer never shows them.
    assert "sk-fake-openai-key" not in response.content.decode()
    assert "fake-gemini-key" not in response.content.decode()


def test_a_provider_that_is_down_is_listed_and_the_gateway_stays_healthy(
    api, db, settings, providers_up
):
    providers = providers_up.llm_providers(timeout=5.0)
    providers["ollama"]["OPTIONS"]["host"] = closed_port_url()
    settings.LLM_PROVIDERS = providers
    response = api.get("/health", {"deep": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["providers_down"] == ["ollama"]
    ollama = body["providers"]["ollama"]
    assert ollama["reachable"] is False
    assert ollama["error"]["code"] in {"upstream_unreachable", "upstream_timeout"}
    assert body["providers"]["openai"]["reachable"] is True
    info = api.get("/api/info").json()
    assert info["providers_down"] == ["ollama"]
    assert info["providers"]["ollama"]["available"] is True


def test_probes_are_cached_so_health_checks_do_not_flood_the_providers(api, db, providers_up):
    assert api.get("/health", {"deep": "1"}).status_code == 200
    probes = model_lists(providers_up)
    assert probes >= 4  # one per provider
    for _ in range(5):
        assert api.get("/health", {"deep": "1"}).status_code == 200
        assert api.get("/api/info").status_code == 200
    assert model_lists(providers_up) == probes


def test_plain_health_never_calls_a_provider(api, db, providers_up):
    response = api.get("/health")
    assert response.status_code == 200
    assert "providers" not in response.json()
    assert providers_up.requests == []


def test_an_unconfigured_provider_names_its_variable(api, db, settings, providers_up):
    providers = providers_up.llm_providers(timeout=5.0)
    providers["openai"]["OPTIONS"]["api_key"] = ""
    settings.LLM_PROVIDERS = providers
    openai = api.get("/health", {"deep": "1"}).json()["providers"]["openai"]
    assert (openai["configured"], openai["reachable"]) == (False, None)
    assert openai["missing"] == "OPENAI_API_KEY"


def test_a_bad_deep_value_is_a_400_naming_it(api, db):
    response = api.get("/health", {"deep": "very"})
    assert response.status_code == 400
    assert "deep" in json.dumps(response.json())
