"""Reads for the LLM routes: which provider and model a name means, and what models exist."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from llm_api.exceptions import ProviderUnavailable
from llm_api.models import ModelAlias
from llm_api.providers import providers
from llm_api.providers.base import Provider, ProviderError
from project.timed import TimedCache

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


# Alias edits in the admin clear this process's copy at once; other processes see them within
# ALIAS_CACHE_SECONDS.
_aliases = TimedCache(30)
_models = TimedCache(settings.MODELS_CACHE_SECONDS)


def aliases() -> dict[str, str]:
    """Return {alias: provider/model} (the first target of each alias)."""
    return _alias_table()[1]


def alias_chains() -> dict[str, list[str]]:
    """Return {alias: [provider/model, fallback, ...]}: MODEL_FALLBACKS, then the admin's aliases
    (which win over a setting of the same name)."""
    return _alias_table()[0]


def _alias_table() -> tuple[dict[str, list[str]], dict[str, str]]:
    """Return the chains and their first targets, read and parsed once per ALIAS_CACHE_SECONDS
    (not on every request that resolves a model)."""

    def load() -> tuple[dict[str, list[str]], dict[str, str]]:
        rows = ModelAlias.objects.values_list("name", "target", "fallbacks")
        chains = {
            **configured_fallbacks(),
            **{name: [target, *fallbacks] for name, target, fallbacks in rows},
        }
        return chains, {name: chain[0] for name, chain in chains.items()}

    return _aliases.get(load)  # type: ignore[return-value]


def configured_fallbacks() -> dict[str, list[str]]:
    """Return MODEL_FALLBACKS as {alias: [provider/model, ...]}; what is not well formed is left
    out (the system checks llm_api.E020/E021 name it at start-up)."""
    value = settings.MODEL_FALLBACKS
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {
        name: list(targets)
        for name, targets in value.items()
        if isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)
    }


# Each provider's model list, so that listing routes never reach a provider more often than
# every MODELS_CACHE_SECONDS, however often they are called (a failure is not kept).
_provider_lists: dict[str, TimedCache] = {}


@receiver(setting_changed)
def _fallbacks_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "MODEL_FALLBACKS":
        aliases_changed()


def aliases_changed() -> None:
    _aliases.clear()
    _models.clear()
    _provider_lists.clear()


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


def model_targets(name: str | None, *, provider_name: str | None = None) -> list[Target]:
    """Return the targets that may answer for `name`, in order: an alias's chain (its targets
    whose provider is configured), else the one `model_resolve` gives."""
    chain = alias_chains().get(name or "") if provider_name is None else None
    if not chain or len(chain) == 1:
        return [model_resolve(name, provider_name=provider_name)]
    targets, problems = [], []
    for target in chain:
        try:
            targets.append(model_resolve(target))
        except ProviderUnavailable as problem:
            problems.append(problem)
    if not targets:
        raise problems[0]
    return targets


def provider_model_names(provider: Provider) -> list[str]:
    """Return a provider's model names, asked of it at most every MODELS_CACHE_SECONDS;
    raise ProviderError when it cannot say."""
    key = f"{provider.name}:{id(provider)}"  # a provider rebuilt (new settings) asks again
    listed = _provider_lists.get(key)
    if listed is None:
        listed = _provider_lists.setdefault(key, TimedCache(settings.MODELS_CACHE_SECONDS))
    return listed.get(provider.list_models)  # type: ignore[no-any-return]


def provider_models(provider: Provider) -> list[str]:
    """Return a provider's model names; an unreachable provider lists none (and is logged)."""
    try:
        return provider_model_names(provider)
    except ProviderError as error:
        logger.warning("Listing models of %s failed: %s", provider.name, error.message)
        return []


def models_list() -> list[dict[str, Any]]:
    """Return every available model as `provider/model`, plus the aliases, cached a while."""

    def compute() -> list[dict[str, Any]]:
        entries = []
        for provider in providers.all():
            if provider.available:
                for model in provider_models(provider):
                    entries.append({"id": f"{provider.name}/{model}", "owned_by": provider.name})
        for alias, chain in alias_chains().items():
            target = chain[0]
            entry = {"id": alias, "owned_by": target.partition("/")[0], "alias_of": target}
            entries.append({**entry, "fallbacks": chain[1:]} if len(chain) > 1 else entry)
        return entries

    return _models.get(compute)  # type: ignore[return-value]
