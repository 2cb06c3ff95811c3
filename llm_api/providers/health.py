"""Is each provider configured, and does it answer? For /health?deep=1 and /api/info.

A probe is the provider's own model list (its real URL, credentials and SDK), made by a copy of
the provider whose every timeout is PROVIDER_HEALTH_TIMEOUT; the providers are probed at once,
and the report is kept PROVIDER_HEALTH_CACHE_SECONDS per process, so that a flood of health
checks costs the providers one probe each per period. A probe's failure is reported in the
words of its ProviderError, which never carry keys or URLs.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from llm_api.providers import TIMEOUT_SETTINGS, providers
from llm_api.providers.base import Provider, ProviderError
from llm_api.providers.timeouts import SOURCES, Timeouts

HEALTH_SETTINGS = {"LLM_PROVIDERS", "PROVIDER_HEALTH_CACHE_SECONDS", "PROVIDER_HEALTH_TIMEOUT"}


class ProviderHealth:
    """The last report and the probe copies of the providers (kept for their connections)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: dict[str, Any] | None = None
        self._expires = 0.0
        self._probes: dict[str, Provider] = {}

    def report(self) -> dict[str, Any]:
        """Return {"providers": {name: status}, "providers_down": [names], "checked_at"}, at
        most PROVIDER_HEALTH_CACHE_SECONDS old. Callers that arrive during a probe wait for it
        rather than probing again."""
        with self._lock:
            if self._report is None or time.monotonic() >= self._expires:
                self._report = self._probe_all()
                self._expires = time.monotonic() + settings.PROVIDER_HEALTH_CACHE_SECONDS
            return self._report

    def reset(self) -> None:
        with self._lock:
            self._report, self._expires, self._probes = None, 0.0, {}

    def _probe_all(self) -> dict[str, Any]:
        seconds = settings.PROVIDER_HEALTH_TIMEOUT
        configured = [provider for provider in providers.all() if provider.available]
        statuses = {provider.name: _status(provider) for provider in providers.all()}
        if configured:
            pool = ThreadPoolExecutor(len(configured), thread_name_prefix="provider-health")
            futures = {p.name: pool.submit(self._probe, p, seconds) for p in configured}
            # A probe's own timeouts bound it; this bounds one whose SDK does not keep them.
            wait(futures.values(), timeout=seconds + 1)
            pool.shutdown(wait=False, cancel_futures=True)
            for name, future in futures.items():
                statuses[name].update(_outcome(name, future, seconds))
        down = [name for name, status in statuses.items() if status["reachable"] is False]
        checked_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {"providers": statuses, "providers_down": down, "checked_at": checked_at}

    def _probe(self, provider: Provider, seconds: float) -> float:
        """Return the seconds the provider took to list its models; raise ProviderError."""
        probe = self._probes.get(provider.name)
        if probe is None:
            # Every timeout of the copy is the probe's: its own options say so last.
            options = {**provider.options, **{option: seconds for option, _ in SOURCES.values()}}
            probe = type(provider)(provider.name, options, Timeouts.uniform(seconds))
            self._probes[provider.name] = probe
        started = time.monotonic()
        probe.list_models()
        return time.monotonic() - started


def _status(provider: Provider) -> dict[str, Any]:
    status: dict[str, Any] = {"configured": provider.available, "reachable": None}
    if not provider.available:
        status["missing"] = provider.missing_setting
    status["timeouts"] = provider.timeouts.as_dict()
    return status


def _outcome(name: str, future: Future[float], seconds: float) -> dict[str, Any]:
    if not future.done():
        message = f"The provider '{name}' did not answer the probe within {seconds:g} s."
        return {"reachable": False, "error": {"code": "upstream_timeout", "message": message}}
    error = future.exception()
    if error is None:
        return {"reachable": True, "latency_ms": round(future.result() * 1000)}
    if not isinstance(error, ProviderError):  # a bug or an SDK surprise: say little
        error = ProviderError(f"The provider '{name}' failed ({type(error).__name__}).")
    return {"reachable": False, "error": {"code": error.code, "message": error.message}}


provider_health = ProviderHealth()


@receiver(setting_changed)
def _reset_provider_health(*, setting: str, **kwargs: Any) -> None:
    if setting in HEALTH_SETTINGS or setting in TIMEOUT_SETTINGS:
        provider_health.reset()
