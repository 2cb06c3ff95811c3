"""Which target of an alias's chain to try next, and which to pass over for a while.

A target that failed FALLBACK_COOLDOWN_FAILURES times in a row (before its first byte) cools
down for FALLBACK_COOLDOWN_SECONDS, or for as long as its Retry-After asked if that is longer:
calls go to the next targets meanwhile, unless every target of the chain is cooling down. The
count is kept per process: each process learns of a failing target from its own calls, which
costs each at most FALLBACK_COOLDOWN_FAILURES failed attempts per cool-down.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from llm_api.providers.base import ProviderError
from llm_api.selectors import Target

RETRY_AFTER_LONGEST = 3600.0  # a Retry-After longer than this is read as this


@dataclass(slots=True)
class _Health:
    failures: int = 0
    cool_until: float = 0.0


_health: dict[str, _Health] = {}
_lock = threading.Lock()


def ordered(targets: list[Target]) -> list[Target]:
    """Return the targets to try, in order: those cooling down are left out (all of them are
    kept when every one is cooling down)."""
    now = time.monotonic()
    ready = [t for t in targets if _health.get(t.name, _Health()).cool_until <= now]
    return ready or targets


def failed(target: Target, error: ProviderError) -> None:
    """Count a failure before the first byte; cool the target down after enough in a row."""
    with _lock:
        health = _health.setdefault(target.name, _Health())
        health.failures += 1
        cool = 0.0
        if health.failures >= settings.FALLBACK_COOLDOWN_FAILURES:
            cool = settings.FALLBACK_COOLDOWN_SECONDS
        cool = max(cool, _seconds(error.retry_after))
        if cool:
            health.cool_until = max(health.cool_until, time.monotonic() + cool)


def answered(target: Target) -> None:
    """Forget a target's failures: it answered."""
    if target.name in _health:
        with _lock:
            _health.pop(target.name, None)


def pause(attempt: int) -> None:
    """Wait before attempt `attempt` (1 for the first fallback): jittered, doubling each time."""
    base = settings.FALLBACK_BACKOFF_SECONDS * 2 ** (attempt - 1)
    time.sleep(random.uniform(0.5, 1.5) * base)  # noqa: S311 (jitter, not a secret)


def reset() -> None:
    """Forget every target's failures (tests, and a change of configuration)."""
    with _lock:
        _health.clear()


def _seconds(retry_after: str | None) -> float:
    try:
        return min(max(float(retry_after or 0), 0.0), RETRY_AFTER_LONGEST)
    except ValueError:
        return 0.0  # an HTTP date: the cool-down counts failures instead
