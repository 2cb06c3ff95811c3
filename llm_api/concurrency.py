"""Per-model limits on concurrent upstream calls (seed 001's MAX_CONCURRENCY).

A call takes a slot of its model before it goes upstream and gives it back when the upstream is
done with it: for a stream, when the stream ends or the client hangs up. Over the limit a call
waits up to CONCURRENCY_WAIT_SECONDS for a slot, then is answered 429 with Retry-After.

Two ways to count, chosen by the cache:

- In one process (the local-memory cache, no REDIS_URL): a semaphore per model.
- Across processes (a shared cache such as Redis): slot `i` of a model is the cache key
  `llm-slot:<model>:<i>`, taken with `cache.add` (Redis SET NX with a TTL) and holding a random
  token. Each process renews the leases it holds from one keeper thread, every third of
  CONCURRENCY_LEASE_SECONDS; a process that dies stops renewing, so its slots come free within
  one lease. A shared counter (`incr`/`decr`) would save a round trip, but a process killed
  between the two leaks its slot until the counter's key expires, and under steady traffic that
  key never does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import setting_changed
from django.dispatch import receiver

from project.exceptions import ServiceError

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # how often a waiting call looks for a free shared slot

Lease = TypeVar("Lease", bound=Hashable)


class ModelBusy(ServiceError):
    """Every slot of the model stayed taken for as long as a call may wait."""

    status_code = 429
    code = "model_busy"
    error_type = "rate_limit_error"
    default_message = "The model is busy; try again shortly."


class Slot:
    """A held slot: `release()` gives it back (once, however often it is called)."""

    def __init__(self, on_release: Callable[[], None] | None = None) -> None:
        self._on_release = on_release
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            on_release, self._on_release = self._on_release, None
        if on_release is not None:
            on_release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


# --- in one process ----------------------------------------------------------------------------


class LocalSlots:
    """Slots counted in this process: one semaphore per (model, limit)."""

    def __init__(self) -> None:
        self._semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def take(self, name: str, limit: int, wait: float) -> Slot | None:
        """Return a held slot, or None when none came free within `wait` seconds."""
        with self._lock:
            semaphore = self._semaphores.setdefault(
                (name, limit), threading.BoundedSemaphore(limit)
            )
        if not semaphore.acquire(timeout=wait):
            return None
        return Slot(semaphore.release)

    def clear(self) -> None:
        with self._lock:
            self._semaphores.clear()


# --- across processes --------------------------------------------------------------------------


class LeaseKeeper(Generic[Lease]):
    """Renews this process's leases from one daemon thread while any are held.

    `renew_all(leases)` pushes each lease's expiry a full lease ahead; the thread calls it every
    third of a lease (`lease_seconds()`, by default CONCURRENCY_LEASE_SECONDS). The shared slots
    below, the in-flight limits (`llm_api.limits`) and the credit holds of running calls
    (`llm_api.metering`) each keep their leases here.
    """

    def __init__(
        self,
        renew_all: Callable[[list[Lease]], None],
        name: str,
        lease_seconds: Callable[[], float] = lambda: settings.CONCURRENCY_LEASE_SECONDS,
    ) -> None:
        self._renew_all = renew_all
        self._name = name
        self._lease_seconds = lease_seconds
        self._held: set[Lease] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held.add(lease)
            # After a fork the thread object is copied but not running: start a new one.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name)
                self._thread.daemon = True
                self._thread.start()

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._held.discard(lease)

    def holds(self, lease: Lease) -> bool:
        return lease in self._held

    def renew(self) -> None:
        """Push every held lease's expiry a full lease ahead."""
        with self._lock:
            leases = list(self._held)
        if not leases:
            return
        try:
            self._renew_all(leases)
        except Exception:  # the cache is down: the leases may lapse, the calls go on
            logger.warning(
                "Could not renew %d lease(s) (%s).", len(leases), self._name, exc_info=True
            )

    def _run(self) -> None:
        renewed_at = time.monotonic()
        while True:
            # Short naps, so that a changed lease length applies at once.
            every = self._lease_seconds() / 3
            time.sleep(min(1.0, every))
            if time.monotonic() - renewed_at >= every:
                renewed_at = time.monotonic()
                self.renew()


class SharedSlots:
    """Slots counted in the shared cache: leased keys, renewed while held (see the module)."""

    def __init__(self) -> None:
        self.keeper: LeaseKeeper[str] = LeaseKeeper(self._renew, "llm-slot-keeper")

    def take(self, name: str, limit: int, wait: float) -> Slot | None:
        """Return a held slot, or None when none came free within `wait` seconds."""
        keys = [f"llm-slot:{name}:{index}" for index in range(limit)]
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while (key := self._try(keys, token)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(POLL_SECONDS, remaining))
        self.keeper.hold(key)
        return Slot(functools.partial(self._release, key, token))

    def _try(self, keys: list[str], token: str) -> str | None:
        """Take one free slot key and return it, or None when all are taken."""
        taken = cache.get_many(keys)
        free = [key for key in keys if key not in taken]
        random.shuffle(free)  # spread concurrent takers over the free keys
        lease = settings.CONCURRENCY_LEASE_SECONDS
        for key in free:
            if cache.add(key, token, timeout=lease):
                return key
        return None

    def _renew(self, keys: list[str]) -> None:
        lease = settings.CONCURRENCY_LEASE_SECONDS
        for key in keys:
            if not cache.touch(key, lease) and self.keeper.holds(key):
                logger.warning("Concurrency slot %s expired before it was released.", key)

    def _release(self, key: str, token: str) -> None:
        self.keeper.drop(key)
        try:
            # Only our own lease: the keeper renews it long before it could lapse and pass to
            # another caller, so nobody else can hold it between this read and the delete.
            if cache.get(key) == token:
                cache.delete(key)
        except Exception:  # the cache is down: the lease expires by itself
            logger.warning("Could not release concurrency slot %s.", key, exc_info=True)


local_slots = LocalSlots()
shared_slots = SharedSlots()


def slots() -> LocalSlots | SharedSlots:
    """Return the shared slots when the default cache is shared between processes (Redis…)."""
    if isinstance(caches["default"], LocMemCache | DummyCache):
        return local_slots
    return shared_slots


# --- the entry point ---------------------------------------------------------------------------


def slot_take(*, name: str, limit: int, wait: float | None = None) -> Slot:
    """Return a held slot of `name`, waiting up to `wait` seconds; raise ModelBusy (429).

    A limit of 0 or less means no limit. When the shared cache fails, the call goes ahead
    without a slot (logged): the limit protects the upstream, it must not take the gateway down.
    """
    if limit <= 0:
        return Slot()
    wait = settings.CONCURRENCY_WAIT_SECONDS if wait is None else wait
    try:
        slot = slots().take(name, limit, wait)
    except Exception:
        logger.warning("Concurrency limit of %s unavailable; not limiting.", name, exc_info=True)
        return Slot()
    if slot is None:
        raise ModelBusy(
            f"The model '{name}' is busy: all {limit} of its concurrent calls are in use and "
            f"none came free within {wait:g} seconds. Try again shortly.",
            headers={"Retry-After": "1"},
        )
    return slot


@contextlib.contextmanager
def released_on_error(slot: Slot) -> Iterator[Slot]:
    """Give the slot back if the block raises; otherwise the caller keeps holding it."""
    try:
        yield slot
    except BaseException:
        slot.release()
        raise


@receiver(setting_changed)
def _forget_semaphores(*, setting: str, **kwargs: Any) -> None:
    if setting.endswith("_MAX_CONCURRENCY") or setting == "CACHES":
        local_slots.clear()
