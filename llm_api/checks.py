"""System checks: a misconfigured provider fails at start-up, not on the first request."""

import json
import math
from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.utils.module_loading import import_string

from llm_api.providers.base import Provider
from llm_api.providers.timeouts import SOURCES


@register()
def check_llm_providers(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Each LLM_PROVIDERS entry names an importable Provider subclass with a dict of OPTIONS."""
    errors = []
    providers = getattr(settings, "LLM_PROVIDERS", None)
    if not isinstance(providers, dict) or not providers:
        return [Error("LLM_PROVIDERS must be a non-empty dict.", id="llm_api.E001")]
    for name, config in providers.items():
        if not isinstance(config, dict) or "BACKEND" not in config:
            errors.append(Error(f"LLM_PROVIDERS['{name}'] needs a 'BACKEND'.", id="llm_api.E002"))
            continue
        try:
            backend = import_string(config["BACKEND"])
        except ImportError as error:
            errors.append(
                Error(
                    f"LLM_PROVIDERS['{name}'] BACKEND cannot be imported: {error}",
                    id="llm_api.E003",
                )
            )
            continue
        if not (isinstance(backend, type) and issubclass(backend, Provider)):
            errors.append(
                Error(f"LLM_PROVIDERS['{name}'] BACKEND is not a Provider.", id="llm_api.E004")
            )
        if not isinstance(config.get("OPTIONS", {}), dict):
            errors.append(
                Error(f"LLM_PROVIDERS['{name}'] OPTIONS must be a dict.", id="llm_api.E005")
            )
    if settings.DEFAULT_PROVIDER not in providers:
        errors.append(
            Error(
                f"DEFAULT_PROVIDER '{settings.DEFAULT_PROVIDER}' is not in LLM_PROVIDERS.",
                hint=f"Set DEFAULT_PROVIDER to one of: {', '.join(providers)}.",
                id="llm_api.E006",
            )
        )
    return errors


# Settings that are seconds to wait, and must be above zero (None: not set).
POSITIVE_SETTINGS = (
    "LLM_TIMEOUT",
    *(setting for _, setting in SOURCES.values()),
    "PROVIDER_HEALTH_TIMEOUT",
)
TIMEOUT_OPTIONS = ("timeout", *(option for option, _ in SOURCES.values()))


def _seconds(value: Any) -> bool:
    """Return whether `value` is a number of seconds a wait can last."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and value > 0


@register()
def check_llm_timeouts(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every timeout, in settings or in a provider's OPTIONS, is a positive number of seconds."""
    errors = [
        Error(
            f"{name} must be a number of seconds above 0, not {value!r}.",
            hint=f"Set {name} to a positive number of seconds (see env-template).",
            id="llm_api.E011",
        )
        for name in POSITIVE_SETTINGS
        if (value := getattr(settings, name, None)) is not None and not _seconds(value)
    ]
    cache_seconds = getattr(settings, "PROVIDER_HEALTH_CACHE_SECONDS", 0)
    if not (_seconds(cache_seconds) or cache_seconds == 0):
        errors.append(
            Error(
                f"PROVIDER_HEALTH_CACHE_SECONDS must be 0 or more seconds, not {cache_seconds!r}.",
                id="llm_api.E011",
            )
        )
    providers = getattr(settings, "LLM_PROVIDERS", None)
    for name, config in providers.items() if isinstance(providers, dict) else ():
        options = config.get("OPTIONS", {}) if isinstance(config, dict) else {}
        for option in TIMEOUT_OPTIONS if isinstance(options, dict) else ():
            value = options.get(option)
            if value is not None and not _seconds(value):
                errors.append(_timeout_option_error(name, option, value))
    return errors


def _timeout_option_error(provider: str, option: str, value: Any) -> Error:
    setting = "LLM_TIMEOUT" if option == "timeout" else f"LLM_{option.upper()}"
    return Error(
        f"LLM_PROVIDERS['{provider}'] OPTIONS '{option}' must be a number of seconds above 0, "
        f"not {value!r}.",
        hint=f"Set it to a positive number, or leave it out to use {setting}.",
        id="llm_api.E010",
    )


@register()
def check_model_fallbacks(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """MODEL_FALLBACKS is JSON {"alias": ["provider/model", ...]} with configured providers."""
    from llm_api.models import target_problem  # the app registry is ready when checks run

    value = settings.MODEL_FALLBACKS
    hint = 'Write JSON like {"smart": ["openai/gpt-4o", "ollama/llama3"]}.'
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError as error:
            return [Error(f"MODEL_FALLBACKS is not JSON: {error}.", hint=hint, id="llm_api.E020")]
    if not isinstance(value, dict):
        return [Error("MODEL_FALLBACKS must be a JSON object.", hint=hint, id="llm_api.E020")]
    errors = []
    for alias, targets in value.items():
        if "/" in alias or not isinstance(targets, list) or not targets:
            problem = "an alias without '/' naming a non-empty list of targets"
            errors.append(
                Error(
                    f"MODEL_FALLBACKS['{alias}'] must be {problem}.", hint=hint, id="llm_api.E020"
                )
            )
            continue
        for target in targets:
            problem = target_problem(target)
            if problem:
                errors.append(
                    Error(f"MODEL_FALLBACKS['{alias}']: {target!r}: {problem}", id="llm_api.E021")
                )
    return errors
