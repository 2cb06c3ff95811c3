"""System checks: a configuration that would serve revoked keys fails at start-up."""

from typing import Any

from django.conf import settings
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.checks import Error, register
from django.utils.module_loading import import_string

# Caches that live inside one process (or nowhere): each worker would keep its own copy.
PROCESS_LOCAL_CACHES = (LocMemCache, DummyCache)


def _is_process_local(backend: str) -> bool:
    try:
        cache_class = import_string(backend)
    except ImportError:
        return False  # Django's own checks and the first cache access report a bad BACKEND
    return isinstance(cache_class, type) and issubclass(cache_class, PROCESS_LOCAL_CACHES)


def shared_cache_errors(*, workers: int) -> list[Error]:
    """Return an error when several worker processes would not share the default cache.

    Authentication serves API keys from the cache, and a revocation, a deactivated user or a
    changed key replaces the entry in the cache only: a worker with a cache of its own would go
    on accepting the old key for up to API_KEY_CACHE_SECONDS.
    """
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if workers <= 1 or not _is_process_local(backend):
        return []
    return [
        Error(
            f"{workers} worker processes (WEB_WORKERS) need a cache they share, but the default "
            f"cache ({backend}) lives in each process: a revoked API key or a deactivated "
            "user's key would keep working in the other workers for up to "
            "API_KEY_CACHE_SECONDS.",
            hint="Set REDIS_URL to a Redis server every worker reaches, or set WEB_WORKERS=1.",
            id="billing.E001",
        )
    ]


@register()
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Several worker processes (WEB_WORKERS) need a cache they all share."""
    return shared_cache_errors(workers=settings.WEB_WORKERS)
