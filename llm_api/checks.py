"""System checks: a misconfigured provider fails at start-up, not on the first request."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.utils.module_loading import import_string

from llm_api.providers.base import Provider


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
