"""Where limits are counted: in Redis, shared by every gateway process, or in this process.

Two kinds of counter:

- a window counts what calls added in the last minute: requests (one each) or tokens. It is a
  log of entries, each with its time and amount, so the count is exact over any minute (a
  sliding window: fixed minutes would let twice the limit through across a minute's turn), and
  an entry can be corrected later (the tokens a call really used, at its settle);
- in flight counts the calls holding a place now. Each place is a lease with an expiry, renewed
  while its call runs by the keeper thread of `llm_api.concurrency` (the design of seed 001's
  shared slots), so the places of a process that dies come free within
  CONCURRENCY_LEASE_SECONDS.

`admit` checks every counter of a call and counts the call in all of them, or in none, in one
step: in Redis one Lua script (`scripts.py`), in this process one lock. Redis is used when the
default cache is Django's RedisCache (REDIS_URL is set); its scripts run through the redis-py
client of that cache backend, on a connection pool of this module's own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.dispatch import receiver

from llm_api.concurrency import LeaseKeeper
from llm_api.limits import scripts

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000  # the window of "per minute"


class Kind(StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"
    IN_FLIGHT = "in_flight"


class Counter(NamedTuple):
    """One counter a call is counted in: its name, its limit, and what this call adds. (A
    named tuple: a call makes several and looks each up, so they must be cheap to make and
    to hash.)"""

    name: str  # e.g. "requests:key:12"; unique per counted thing
    kind: Kind
    limit: int
    amount: int = 1  # a request, a place in flight: 1; tokens: the call's estimate

    @property
    def windowed(self) -> bool:
        return self.kind is not Kind.IN_FLIGHT


class Count(NamedTuple):
    """A counter as `admit` found it."""

    used: int  # with this call when it was admitted, without it when it was refused
    fits: bool
    wait_ms: int = 0  # refused windows: how long until the call would fit; -1: never
    reset_ms: int = 0  # windows: how long until their oldest entry leaves (0: empty)


@dataclass(frozen=True, slots=True)
class Outcome:
    admitted: bool
    counts: dict[Counter, Count]


class Store(Protocol):
    def admit(self, call_id: str, counters: Sequence[Counter]) -> Outcome:
        """Count the call in every counter if it fits in every one; else in none."""

    def release(self, call_id: str, counters: Sequence[Counter], tokens: int | None) -> None:
        """Give back the call's places in flight; with `tokens`, count that many instead of the
        amount admitted in its token windows."""


# --- in this process -------------------------------------------------------------------------


class _Window:
    """One counter's last minute: its entries oldest first, each `[ms, amount, call id]` (a
    deque, so the oldest leave in constant time), found by call id for a correction."""

    __slots__ = ("by_call", "log", "total")

    def __init__(self) -> None:
        self.log: deque[list[Any]] = deque()
        self.by_call: dict[str, list[Any]] = {}
        self.total = 0

    def expire(self, now: int) -> None:
        log, cutoff = self.log, now - WINDOW_MS
        while log and log[0][0] <= cutoff:
            _, amount, call_id = log.popleft()
            del self.by_call[call_id]
            self.total -= amount

    def add(self, call_id: str, amount: int, now: int) -> None:
        entry = [now, amount, call_id]
        self.log.append(entry)
        self.by_call[call_id] = entry
        self.total += amount

    def wait_ms(self, excess: int, now: int) -> int:
        """Return how long until `excess` has left the window."""
        freed = 0
        for at, amount, _ in self.log:
            freed += amount
            if freed >= excess:
                return at + WINDOW_MS - now
        return WINDOW_MS  # not reached: total = the sum of the amounts

    def reset_ms(self, now: int) -> int:
        """Return how long until the oldest entry leaves (0: empty)."""
        return self.log[0][0] + WINDOW_MS - now if self.log else 0


class LocalStore:
    """Counters in this process's memory, under one lock: exact among its threads, and what
    a single process (no REDIS_URL) needs. `clock` returns milliseconds."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or (lambda: int(time.monotonic() * 1000))
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._places: dict[str, set[str]] = {}

    def admit(self, call_id: str, counters: Sequence[Counter]) -> Outcome:
        with self._lock:
            now = self._clock()
            fits = [self._fits(counter, now) for counter in counters]
            admitted = all(wait == 0 for wait in fits)
            counts = {}
            for counter, wait in zip(counters, fits, strict=True):
                if counter.kind is Kind.IN_FLIGHT:
                    places = self._places.setdefault(counter.name, set())
                    if admitted:
                        places.add(call_id)
                    counts[counter] = Count(len(places), wait == 0)
                    continue
                window = self._windows[counter.name]
                if admitted:
                    window.add(call_id, counter.amount, now)
                counts[counter] = Count(window.total, wait == 0, wait, window.reset_ms(now))
            return Outcome(admitted, counts)

    def release(self, call_id: str, counters: Sequence[Counter], tokens: int | None) -> None:
        with self._lock:
            for counter in counters:
                if counter.kind is Kind.IN_FLIGHT:
                    self._places.get(counter.name, set()).discard(call_id)
                elif counter.kind is Kind.TOKENS and tokens is not None:
                    window = self._windows.get(counter.name)
                    entry = window.by_call.get(call_id) if window else None
                    if window and entry:  # else it has already left the window
                        window.total += tokens - entry[1]
                        entry[1] = tokens

    def used(self, counter: Counter) -> int:
        """Return what `counter` counts now: places taken, or its window's total."""
        with self._lock:
            if counter.kind is Kind.IN_FLIGHT:
                return len(self._places.get(counter.name, ()))
            window = self._windows.get(counter.name)
            if window is None:
                return 0
            window.expire(self._clock())
            return window.total

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()
            self._places.clear()

    def _fits(self, counter: Counter, now: int) -> int:
        """Return 0 when the call fits in the counter now, else how long until it would (ms;
        -1: never, it alone counts more than the limit; in flight: not known, 1)."""
        if counter.kind is Kind.IN_FLIGHT:
            return 0 if len(self._places.get(counter.name, ())) < counter.limit else 1
        window = self._windows.get(counter.name)
        if window is None:
            window = self._windows[counter.name] = _Window()
        window.expire(now)
        if counter.amount > counter.limit:
            return -1
        excess = window.total + counter.amount - counter.limit
        return 0 if excess <= 0 else window.wait_ms(excess, now)


# --- in Redis ----------------------------------------------------------------------------------


class RedisStore:
    """Counters in Redis, shared by every process that uses it (see the module and scripts.py).

    The places in flight this process holds are renewed by its keeper; a lease that nobody
    renews (its process died) expires, and the next admission on its counter drops it.
    """

    def __init__(self) -> None:
        # A cache backend of our own, so one connection pool serves every thread (the default
        # cache is one object per thread, each with its pool); the key prefix is the same.
        self._backend: RedisCache = caches.create_connection(DEFAULT_CACHE_ALIAS)
        client = self._backend._cache.get_client(write=True)
        self._admit = client.register_script(scripts.ADMIT)
        self._release = client.register_script(scripts.RELEASE)
        self._renew = client.register_script(scripts.RENEW)
        self.keeper: LeaseKeeper[tuple[str, str]] = LeaseKeeper(self.renew, "llm-limit-keeper")

    def admit(self, call_id: str, counters: Sequence[Counter]) -> Outcome:
        windows = [counter for counter in counters if counter.windowed]
        places = [counter for counter in counters if not counter.windowed]
        keys = [key for counter in windows for key in (self._log(counter), self._amounts(counter))]
        keys += [self._log(counter) for counter in places]
        lease_ms = settings.CONCURRENCY_LEASE_SECONDS * 1000
        args: list[Any] = [call_id, WINDOW_MS, lease_ms, len(windows)]
        args += [value for counter in windows for value in (counter.limit, counter.amount)]
        args += [counter.limit for counter in places]
        reply = self._admit(keys=keys, args=args)
        ordered = [*windows, *places]
        counts = {
            counter: Count(reply[4 * i], bool(reply[4 * i + 1]), reply[4 * i + 2], reply[4 * i + 3])
            for i, counter in enumerate(ordered)
        }
        admitted = bool(reply[-1])
        if admitted:
            for counter in places:
                self.keeper.hold((self._log(counter), call_id))
        return Outcome(admitted, counts)

    def release(self, call_id: str, counters: Sequence[Counter], tokens: int | None) -> None:
        places = [self._log(counter) for counter in counters if not counter.windowed]
        for key in places:
            self.keeper.drop((key, call_id))
        corrected = []
        if tokens is not None:
            corrected = [self._amounts(c) for c in counters if c.kind is Kind.TOKENS]
        if places or corrected:
            amount = "" if tokens is None else tokens
            self._release(keys=[*places, *corrected], args=[call_id, len(places), amount])

    def renew(self, leases: list[tuple[str, str]]) -> None:
        """Push each (key, lease id) a full lease ahead (the keeper calls this)."""
        lease_ms = settings.CONCURRENCY_LEASE_SECONDS * 1000
        for start in range(0, len(leases), 500):
            batch = leases[start : start + 500]
            lapsed = self._renew(
                keys=[k for k, _ in batch], args=[lease_ms, *[i for _, i in batch]]
            )
            for index in lapsed:
                lease = batch[index - 1]
                if self.keeper.holds(lease):  # else its call ended meanwhile
                    logger.warning("In-flight place %s expired before it was released.", lease[0])

    def _log(self, counter: Counter) -> str:
        return self._backend.make_and_validate_key(f"limit:{counter.name}")

    def _amounts(self, counter: Counter) -> str:
        return self._backend.make_and_validate_key(f"limit:{counter.name}:amounts")


# --- the store in use ----------------------------------------------------------------------------

local_store = LocalStore()
_store: Store | None = None  # chosen on first use, again when CACHES changes
_store_lock = threading.Lock()


def store_in_use() -> Store:
    """Return the Redis store when the default cache is Redis, else this process's store."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                shared = isinstance(caches[DEFAULT_CACHE_ALIAS], RedisCache)
                _store = RedisStore() if shared else local_store
    return _store


@receiver(setting_changed)
def _forget_counters(*, setting: str, **kwargs: Any) -> None:
    global _store
    if setting == "CACHES":
        _store = None
    if setting in {"CACHES", "DEFAULT_RPM_LIMIT", "DEFAULT_TPM_LIMIT", "DEFAULT_CONCURRENCY_LIMIT"}:
        local_store.clear()  # a test's counts do not outlive its settings
