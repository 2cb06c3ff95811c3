"""The provider registry: validated at start-up, warmed before the first request."""

import json
import logging
import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from llm_api.checks import check_llm_providers
from llm_api.providers import providers

OPENAI = {"BACKEND": "llm_api.providers.openai.OpenAIProvider", "OPTIONS": {"api_key": "sk-x"}}


def messages(settings, value, default="openai"):
    settings.LLM_PROVIDERS = value
    settings.DEFAULT_PROVIDER = default
    return [(error.id, error.msg) for error in check_llm_providers()]


def test_the_shipped_configuration_passes_the_checks():
    assert check_llm_providers() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, ("llm_api.E001", "LLM_PROVIDERS must be a non-empty dict.")),
        (
            {"openai": {"OPTIONS": {}}},
            ("llm_api.E002", "LLM_PROVIDERS['openai'] needs a 'BACKEND'."),
        ),
        (
            {"openai": {"BACKEND": "llm_api.providers.nowhere.Provider"}},
            ("llm_api.E003", "LLM_PROVIDERS['openai'] BACKEND cannot be imported"),
        ),
        (
            {"openai": {"BACKEND": "llm_api.models.UsageRecord"}},
            ("llm_api.E004", "LLM_PROVIDERS['openai'] BACKEND is not a Provider."),
        ),
        (
            {"openai": {**OPENAI, "OPTIONS": ["api_key"]}},
            ("llm_api.E005", "LLM_PROVIDERS['openai'] OPTIONS must be a dict."),
        ),
    ],
)
def test_a_misconfigured_provider_is_a_system_check_error(settings, value, expected):
    [(error_id, message)] = messages(settings, value)
    assert error_id == expected[0]
    assert message.startswith(expected[1])


def test_a_default_provider_that_is_not_configured_is_an_error_naming_the_choices(settings):
    assert messages(settings, {"openai": OPENAI}, default="gemini") == [
        ("llm_api.E006", "DEFAULT_PROVIDER 'gemini' is not in LLM_PROVIDERS.")
    ]


def test_the_check_stops_the_server_from_starting(settings):
    settings.LLM_PROVIDERS = {"openai": {"BACKEND": "llm_api.providers.nowhere.Provider"}}
    with pytest.raises(SystemCheckError, match=r"llm_api\.E003"):
        call_command("check")


def test_warming_up_builds_the_clients_of_configured_providers_only(settings, fake_upstream):
    providers_setting = fake_upstream.llm_providers()
    providers_setting["gemini"]["OPTIONS"]["api_key"] = ""  # unconfigured: answers 503 later
    settings.LLM_PROVIDERS = providers_setting

    providers.warm_up()

    built = {provider.name: provider._client is not None for provider in providers.all()}
    assert built == {"openai": True, "gemini": False, "ollama": True, "inhouse": True}


def test_a_provider_that_fails_to_build_is_logged_not_fatal(settings, fake_upstream, caplog):
    settings.LLM_PROVIDERS = {
        **fake_upstream.llm_providers(),
        "broken": {"BACKEND": "llm_api.providers.nowhere.Provider"},
    }
    with caplog.at_level(logging.ERROR, logger="llm_api.providers"):
        providers.warm_up()

    assert "Provider 'broken' could not be built at start-up." in caplog.messages
    assert providers["openai"]._client is not None


def test_the_wsgi_application_loads_views_and_sdks_before_the_first_request():
    code = (
        "import json, sys; import project.wsgi; from llm_api.providers import providers; "
        "print(json.dumps({'modules': [m for m in ('openai', 'ollama', 'google.genai', "
        "'llm_api.apis') if m in sys.modules], 'built': sorted(p.name for p in "
        "providers._providers.values() if p._client is not None)}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "OPENAI_API_KEY": "sk-x"}
    env.pop("GEMINI_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["modules"] == ["openai", "ollama", "google.genai", "llm_api.apis"]
    assert "openai" in loaded["built"]
    assert "gemini" not in loaded["built"]
