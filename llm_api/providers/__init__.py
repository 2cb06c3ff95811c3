"""The provider registry, built lazily from `settings.LLM_PROVIDERS`.

The idiom of Django's STORAGES and CACHES: each entry is `{"BACKEND": dotted path, "OPTIONS":
{...}}`; a provider is imported and built on first use, kept for the life of the process (its
SDK client and connection pool with it), and dropped when the setting changes in tests.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from llm_api.providers.base import Provider, ProviderError
from llm_api.providers.timeouts import SOURCES, Timeouts

TIMEOUT_SETTINGS = {"LLM_TIMEOUT", *(setting for _, setting in SOURCES.values())}

logger = logging.getLogger(__name__)


class ProviderHandler:
    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(settings.LLM_PROVIDERS)

    def __contains__(self, name: str) -> bool:
        return name in settings.LLM_PROVIDERS

    def __getitem__(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            with self._lock:
                provider = self._providers.get(name) or self._create(name)
                self._providers[name] = provider
        return provider

    def _create(self, name: str) -> Provider:
        try:
            config: dict[str, Any] = settings.LLM_PROVIDERS[name]
        except KeyError:
            raise ProviderError(
                f"Unknown provider '{name}'. Valid providers: {', '.join(self.names)}.",
                status_code=404,
                code="model_not_found",
            ) from None
        backend = import_string(config["BACKEND"])
        return backend(name, dict(config.get("OPTIONS", {})), Timeouts.from_settings())

    def all(self) -> list[Provider]:
        return [self[name] for name in self.names]

    def warm_up(self) -> None:
        """Import every provider and build the SDK clients of those configured, so that the
        first request does not wait for them (an SDK import takes up to a second). A provider
        that cannot be built is logged and left to answer its own error when called."""
        for name in self.names:
            try:
                provider = self[name]
                if provider.available:
                    provider.client  # noqa: B018 (building it is the point)
            except Exception:
                logger.exception("Provider '%s' could not be built at start-up.", name)

    def reset(self) -> None:
        with self._lock:
            self._providers.clear()


providers = ProviderHandler()


@receiver(setting_changed)
def _reset_providers(*, setting: str, **kwargs: Any) -> None:
    if setting == "LLM_PROVIDERS" or setting in TIMEOUT_SETTINGS:
        providers.reset()
