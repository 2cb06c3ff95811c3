"""A value kept by each process for a while: the model aliases, the model lists, the prices."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_UNSET: object = object()


class TimedCache(Generic[T]):
    """A value recomputed at most every `seconds` (a number, or a function returning one, for a
    setting a test may change), shared by the threads of one process.

    No thread waits for another's computation. A computation may need a pooled database
    connection that a waiting thread holds (a thousand requests arriving at once each hold one
    after their key lookup), and waiting would leave the pool empty and every thread stuck until
    its timeout. So one thread refreshes an expired value while the others serve the previous
    one; until there is one, each thread computes its own. `clear()` drops the value, and a
    computation that began before it is not kept.
    """

    def __init__(self, seconds: float | Callable[[], float]) -> None:
        self._seconds = seconds if callable(seconds) else (lambda: seconds)
        self._value: object = _UNSET
        self._at = 0.0  # when the value was computed (its age is held against seconds now)
        self._generation = 0
        self._refreshing = threading.Lock()

    def get(self, compute: Callable[[], T]) -> T:
        value = self._value
        if value is not _UNSET and time.monotonic() - self._at < self._seconds():
            return value  # type: ignore[return-value]
        if not self._refreshing.acquire(blocking=False):
            return compute() if value is _UNSET else value  # type: ignore[return-value]
        try:
            generation = self._generation
            value = compute()
            if generation == self._generation:
                self._value, self._at = value, time.monotonic()
        finally:
            self._refreshing.release()
        return value  # type: ignore[return-value]

    def clear(self) -> None:
        self._generation += 1
        self._value = _UNSET
