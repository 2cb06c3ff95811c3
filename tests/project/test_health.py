"""/health stays the gateway's own; /health?deep=1 and /api/info add each provider's state.

A provider that is down is reported, never turned into a 503: a load balancer must not take the
gateway out because one provider is down. Probes are cached, so a flood of health checks costs
each provider one probe per PROVIDER_HEALTH_CACHE_SECONDS.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.fake_upstream.server import closed_port_url, unanswered_url

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("sk-fake-openai-key", "fake-gemini-key")
TIMEOUTS_5S = {"connect": 5.0, "first_byte": 5.0, "gap": 5.0, "total": 1800.0}


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
    assert info["providers"]["ollama"]["available"] is False
    assert info["providers"]["ollama"]["configured"] is True


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


def test_the_report_shows_no_secret_nor_upstream_address(api, db, providers_up):
    response = api.get("/health", {"deep": "1"})
    text = response.content.decode()
    assert [secret for secret in SECRETS if secret in text] == []
    assert providers_up.url.removeprefix("http://") not in text
    for status in response.json()["providers"].values():
        assert status["timeouts"] == TIMEOUTS_5S


def test_deep_0_is_the_plain_answer(api, db, providers_up):
    response = api.get("/health", {"deep": "0"})
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}
    assert providers_up.requests == []


def test_a_provider_slower_than_the_probe_timeout_is_down(api, db, settings, providers_up):
    settings.PROVIDER_HEALTH_TIMEOUT = 0.3
    providers_up.behave(delay=3)
    body = api.get("/health", {"deep": "1"}).json()
    assert sorted(body["providers_down"]) == ["gemini", "inhouse", "ollama", "openai"]
    for name, status in body["providers"].items():
        assert status["error"]["code"] == "upstream_timeout", name
        assert "0.3 s" in status["error"]["message"], name


def test_hosts_that_never_accept_are_down_within_the_probe_timeout(api, db, settings, providers_up):
    providers = providers_up.llm_providers(timeout=5.0)
    settings.PROVIDER_HEALTH_TIMEOUT = 0.3
    with unanswered_url() as url:
        providers["openai"]["OPTIONS"]["base_url"] = f"{url}/v1"
        providers["ollama"]["OPTIONS"]["host"] = url
        settings.LLM_PROVIDERS = providers
        body = api.get("/health", {"deep": "1"}).json()
    assert sorted(body["providers_down"]) == ["ollama", "openai"]
    assert body["providers"]["openai"]["error"]["message"].startswith(
        "The provider 'openai' could not be connected to within 0.3 s"
    )
    assert body["providers"]["gemini"]["reachable"] is True


def test_once_the_cache_window_is_over_the_providers_are_probed_again(
    api, db, settings, providers_up
):
    first = api.get("/health", {"deep": "1"}).json()
    probes = model_lists(providers_up)
    assert api.get("/health", {"deep": "1"}).json()["checked_at"] == first["checked_at"]
    assert model_lists(providers_up) == probes
    settings.PROVIDER_HEALTH_CACHE_SECONDS = 0
    api.get("/health", {"deep": "1"})
    assert model_lists(providers_up) == 2 * probes


def test_info_shows_an_unconfigured_provider_and_its_timeouts(api, db, settings, providers_up):
    providers = providers_up.llm_providers(timeout=5.0)
    providers["gemini"]["OPTIONS"]["api_key"] = ""
    settings.LLM_PROVIDERS = providers
    body = api.get("/api/info").json()
    assert body["providers"]["gemini"] == {
        "available": False,
        "configured": False,
        "reachable": None,
        "missing": "GEMINI_API_KEY",
        "timeouts": TIMEOUTS_5S,
    }
    assert body["providers_down"] == []
    assert ("GET", "/v1beta/models") not in [(r.method, r.path) for r in providers_up.requests]


HEALTH_PROBE = """
import json, django
django.setup()
from django.test import Client
response = Client().get("/health?deep=1", HTTP_HOST="localhost")
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


def test_deep_health_is_503_when_the_database_is_down_and_still_lists_providers(tmp_path):
    closed = closed_port_url()
    result = subprocess.run(
        [sys.executable, "-c", HEALTH_PROBE],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": "sqlite:////nonexistent-dir/db.sqlite3",
            "DATABASE_POOL_TIMEOUT": "1",
            "DATA_DIR": str(tmp_path),
            "OPENAI_API_KEY": "",
            "GEMINI_API_KEY": "",
            "OLLAMA_HOST": closed,
            "INHOUSE_BASE_URL": f"{closed}/v1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    body = answer["body"]
    assert body["failing"] == ["database"]
    assert body["checks"]["cache"] == "ok"
    assert sorted(body["providers_down"]) == ["inhouse", "ollama"]
    assert body["providers"]["openai"]["configured"] is False
