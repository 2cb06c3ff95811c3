"""Reads for the LLM routes: which provider and model a name means, and what models exist."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from llm_api.exceptions import ProviderUnavailable
from llm_api.models import ModelAlias
from llm_api.providers import providers
from llm_api.providers.base import Provider, ProviderError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved model: the provider object and the provider's own model name."""

    provider: Provider
    model: str

    @property
    def name(self) -> str:
        """Return the public `provider/model` name (what allowlists, prices and usage use)."""
        return f"{self.provider.name}/{self.model}"


class TimedCache:
    """A value recomputed at most every `seconds`, shared by the threads of one process."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._value: object = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self, compute):  # type: ignore[no-untyped-def]
        if time.monotonic() >= self._expires:
            with self._lock:
                if time.monotonic() >= self._expires:
                    self._value = compute()
                    self._expires = time.monotonic() + self.seconds
        return self._value

    def clear(self) -> None:
        self._expires = 0.0


# Alias edits in the admin clear this process's copy at once; other processes see them within
# ALIAS_CACHE_SECONDS.
_aliases = TimedCache(30)
_models = TimedCache(settings.MODELS_CACHE_SECONDS)


def aliases() -> dict[str, str]:
    """Return {alias: provider/model}."""
    return _aliases.get(lambda: dict(ModelAlias.objects.values_list("name", "target")))


def aliases_changed() -> None:
    _aliases.clear()
    _models.clear()


def provider_get(name: str) -> Provider:
    """Return a configured provider, or raise ProviderUnavailable naming the variable to set."""
    provider = providers[name]
    missing = provider.missing_setting
    if missing:
        raise ProviderUnavailable(
            f"Provider '{name}' is not configured: set {missing} in the environment or .env.",
        )
    return provider


def model_resolve(name: str | None, *, provider_name: str | None = None) -> Target:
    """Resolve what a client wrote as `model` into a provider and the provider's model name.

    `provider/model`, an alias, a bare name (under DEFAULT_PROVIDER, or `provider_name` when a
    seed route's `?provider=` gave one), or nothing (the default model).
    """
    if provider_name is not None:
        return Target(provider_get(provider_name), name or settings.DEFAULT_MODEL)
    if not name:
        return Target(provider_get(settings.DEFAULT_PROVIDER), settings.DEFAULT_MODEL)
    target = aliases().get(name)
    if target:
        name = target
    prefix, _, rest = name.partition("/")
    if rest and prefix in providers:
        return Target(provider_get(prefix), rest)
    # Model names may hold '/' themselves (org/model on OpenAI-compatible servers).
    return Target(provider_get(settings.DEFAULT_PROVIDER), name)


def provider_models(provider: Provider) -> list[str]:
    """Return a provider's model names; an unreachable provider lists none (and is logged)."""
    try:
        return provider.list_models()
    except ProviderError as error:
        logger.warning("Listing models of %s failed: %s", provider.name, error.message)
        return []


def models_list() -> list[dict[str, str]]:
    """Return every available model as `provider/model`, plus the aliases, cached a while."""

    def compute() -> list[dict[str, str]]:
        entries = []
        for provider in providers.all():
            if provider.available:
                for model in provider_models(provider):
                    entries.append({"id": f"{provider.name}/{model}", "owned_by": provider.name})
        for alias, target in aliases().items():
            entries.append({"id": alias, "owned_by": target.partition("/")[0], "alias_of": target})
        return entries

    return _models.get(compute)  # type: ignore[return-value]
