"""Limits on attempts (signups, sign-ins, API-key guesses), counted where every process sees them.

A `Limit` counts attempts per identity (a client address, a username) in windows of the rate's
period: a counter in Django's cache (Redis when REDIS_URL is set, so the limits hold across
server processes), raised with `incr`, which Redis does atomically. Concurrent attempts therefore
cannot all read the same count and slip under the limit, as they can with DRF's
read-modify-write history. Rates are DRF's "number/period" strings in
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], each set by the variable `<SCOPE>_THROTTLE_RATE`.
"""

import hashlib
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_network
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from project.clients import client_address, parse_address

if TYPE_CHECKING:  # rest_framework.views imports the authentication classes, which import this
    from rest_framework.views import APIView

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*([smhd])[a-z]*\s*$")


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int
    text: str


def parse_rate(text: str) -> Rate:
    """Return the rate in `text` ("10/min", "20/hour", "5/s"), else raise ValueError."""
    match = RATE_PATTERN.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a rate like 10/min, 20/hour or 100/day")
    return Rate(count=int(match[1]), seconds=PERIODS[match[2]], text=text.strip())


def rate_setting(scope: str) -> str:
    """Return the name of the environment variable that sets the rate of `scope`."""
    return f"{scope.upper()}_THROTTLE_RATE"


def address_ident(request: HttpRequest | Request) -> str:
    """Return the identity a client is counted under: its address, or for IPv6 its /64 (the
    least one subscriber gets), so that no one can step through addresses of their own."""
    address = client_address(request)
    parsed = parse_address(address)
    if isinstance(parsed, IPv6Address):
        return str(ip_network(f"{parsed}/64", strict=False))
    return address


@dataclass(frozen=True)
class Limit:
    """At most the rate of `scope` attempts per identity; `what` names them in the 429.

    A window opens with an identity's first counted attempt and lasts the rate's period; its
    counter and its end are two cache entries that expire with it.
    """

    scope: str
    what: str = "requests from your address"

    def window_keys(self, ident: str) -> list[str]:
        """Return the cache keys of `ident`'s window, to read with other entries at once."""
        _, key = self._rate_and_key(ident)
        return [key, f"{key}:end"]

    def check(self, ident: str, window: Mapping[str, Any] | None = None) -> None:
        """Raise Throttled if `ident` has used up its window's attempts (counts nothing).
        `window`: what a `cache.get_many` of its `window_keys` returned, if read already."""
        rate, key = self._rate_and_key(ident)
        if window is None:
            window = cache.get_many([key, f"{key}:end"])
        if window.get(key, 0) >= rate.count:
            raise self._refusal(rate, window.get(f"{key}:end"))

    def hit(self, ident: str) -> None:
        """Count one attempt by `ident`, e.g. a failed one, without refusing it."""
        self._count(ident)

    def take(self, ident: str) -> None:
        """Count one attempt by `ident`, and raise Throttled if it is over the limit."""
        rate, key, count = self._count(ident)
        if count > rate.count:
            raise self._refusal(rate, cache.get(f"{key}:end"))

    def _rate_and_key(self, ident: str) -> tuple[Rate, str]:
        rate = parse_rate(api_settings.DEFAULT_THROTTLE_RATES[self.scope])
        # Hashed: the cache never holds a username or an address, and any ident makes a valid key.
        digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
        return rate, f"throttle:{self.scope}:{digest}"

    def _count(self, ident: str) -> tuple[Rate, str, int]:
        """Return the rate, the key and the count after this attempt (atomic on Redis)."""
        rate, key = self._rate_and_key(ident)
        if cache.add(key, 0, timeout=rate.seconds):  # the first attempt opens a window
            cache.set(f"{key}:end", time.time() + rate.seconds, timeout=rate.seconds)
        try:
            return rate, key, cache.incr(key)
        except ValueError:  # the window closed between add and incr: open the next one
            cache.set(key, 1, timeout=rate.seconds)
            cache.set(f"{key}:end", time.time() + rate.seconds, timeout=rate.seconds)
            return rate, key, 1

    def _refusal(self, rate: Rate, end: float | None) -> Throttled:
        wait = rate.seconds if end is None else max(1, math.ceil(end - time.time()))
        detail = f"Too many {self.what}: the limit is {rate.text} ({rate_setting(self.scope)})."
        return Throttled(wait=wait, detail=detail)


class ClientRateThrottle(BaseThrottle):
    """DRF throttle: at most the rate of the view's `throttle_scope` per client address."""

    def allow_request(self, request: Request, view: "APIView") -> bool:
        Limit(view.throttle_scope).take(address_ident(request))  # raises the 429 itself
        return True
