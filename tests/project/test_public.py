import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_the_welcome_route_answers_with_links(api):
    response = api.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Welcome to the LLM API!"
    assert body["docs"].endswith("/docs")


@pytest.mark.django_db
def test_health_reports_database_and_cache(api):
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}


@pytest.mark.django_db
def test_info_lists_the_providers_without_credentials(api):
    response = api.get("/api/info")
    assert response.status_code == 200
    body = response.json()
    assert set(body["providers"]) == {"openai", "gemini", "ollama", "inhouse"}
    assert body["version"]


@pytest.mark.django_db
def test_every_response_carries_a_request_id(api):
    first, second = api.get("/"), api.get("/api/me/")
    assert first["x-request-id"].startswith("req_")
    assert second["x-request-id"].startswith("req_")
    assert first["x-request-id"] != second["x-request-id"]


@pytest.mark.django_db
def test_an_unknown_route_is_a_json_404(api):
    response = api.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/docs", "/api/docs", "/redoc"])
def test_the_docs_pages_use_local_assets(api, path):
    response = api.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn.jsdelivr.net" not in html


@pytest.mark.django_db
def test_the_schema_builds_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(out))
    schema = out.read_text()
    assert "/v1/chat/completions" in schema or "/api/signup/" in schema
    assert "ApiKeyAuth" in schema or "apiKey" in schema


PRODUCTION = {
    "DEBUG": "False",
    "SECRET_KEY": "x7!kq2" * 10,
    "API_KEY_SECRET": "k3$mz9" * 10,
    "ALLOWED_HOSTS": "llm.example.com",
    "SECURE_SSL_REDIRECT": "True",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "True",
    "SECURE_HSTS_PRELOAD": "True",
    "SESSION_COOKIE_SECURE": "True",
    "CSRF_COOKIE_SECURE": "True",
}


def check_deploy(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_is_clean_with_the_production_variables():
    result = check_deploy(PRODUCTION)
    assert result.returncode == 0, result.stderr


def test_check_deploy_fails_without_https_settings():
    result = check_deploy(
        {**PRODUCTION, "SECURE_SSL_REDIRECT": "False", "SECURE_HSTS_SECONDS": "0"}
    )
    assert result.returncode != 0
    assert "security.W008" in result.stderr


HEALTH_PROBE = """
import json, django
django.setup()
from django.test import Client
response = Client().get("/health", HTTP_HOST="localhost")
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


@pytest.mark.parametrize(
    "database_url",
    ["sqlite:////nonexistent-dir/db.sqlite3", "postgres://postgres@127.0.0.1:1/nowhere"],
)
def test_health_is_503_naming_the_database_when_it_is_unreachable(database_url, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", HEALTH_PROBE],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": database_url,
            "DATABASE_POOL_TIMEOUT": "1",
            "DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    assert answer["body"]["failing"] == ["database"]
    assert answer["body"]["checks"]["cache"] == "ok"
