"""How long the gateway waits on a provider: to connect, for the first byte, between two chunks,
and for the whole call.

One number cannot serve a local model on a slow machine: a small CPU model may think for minutes
before its first token of a long prompt (first byte), then send a token every fraction of a
second (gap), while a dead host should be given up on within seconds (connect). The defaults come
from settings (LLM_CONNECT_TIMEOUT, LLM_FIRST_BYTE_TIMEOUT, LLM_GAP_TIMEOUT, LLM_TOTAL_TIMEOUT);
each provider may override them in its OPTIONS.

The wire client (`wire`) applies all four itself. The SDKs' HTTP clients know one read timeout
per request, so for their streams a `Watch` applies the gap and the total: one watchdog thread per
process cuts a stream whose wait ran out, and the provider reports which timeout did it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

NAMES = ("connect", "first_byte", "gap", "total")
# timeout -> (its option in LLM_PROVIDERS[...]["OPTIONS"], its setting)
SOURCES = {name: (f"{name}_timeout", f"LLM_{name.upper()}_TIMEOUT") for name in NAMES}
# What a provider did not do in time, per timeout (completes "The provider 'x' ...").
FAILED_TO = {
    "connect": "could not be connected to within",
    "first_byte": "did not start its answer within",
    "gap": "stopped sending in the middle of its answer for more than",
    "total": "did not finish its answer within",
}
# The one number of earlier versions (LLM_TIMEOUT, the `timeout` option) meant these three.
LEGACY = ("connect", "first_byte", "gap")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait on a provider: `connect`, `first_byte` (until the status line of a
    whole answer, the first event of a stream), `gap` (between two events, or two reads of a
    whole answer's body) and `total` (the whole call, stream included)."""

    connect: float
    first_byte: float
    gap: float
    total: float = math.inf

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        """Return what one number meant before there were four: the wait to connect, for the
        first byte and for each read after it, and no limit on the whole call."""
        seconds = float(seconds)
        return cls(connect=seconds, first_byte=seconds, gap=seconds)

    @classmethod
    def from_settings(cls) -> Timeouts:
        """Return the defaults every provider starts from (LLM_*_TIMEOUT)."""
        from django.conf import settings

        return cls(**{name: float(getattr(settings, SOURCES[name][1])) for name in NAMES})

    def with_options(self, options: Mapping[str, Any]) -> Timeouts:
        """Return these timeouts overridden by a provider's OPTIONS: `timeout` (the one number
        of earlier versions) sets connect, first byte and gap; each `<name>_timeout` its own."""
        values = asdict(self)
        if options.get("timeout") is not None:
            values.update(dict.fromkeys(LEGACY, float(options["timeout"])))
        for name, (option, _) in SOURCES.items():
            if options.get(option) is not None:
                values[name] = float(options[option])
        return Timeouts(**values)

    def seconds(self, name: str) -> float:
        return getattr(self, name)

    def waiting(self) -> float:
        """Return the most an SDK may wait for one read before the first chunk (its only read
        timeout): the first-byte timeout, or the total when that is shorter."""
        return min(self.first_byte, self.total)

    def before_first_chunk(self) -> str:
        """Return the timeout that ends a wait of `waiting()` seconds."""
        return "total" if self.total < self.first_byte else "first_byte"

    def for_httpx(self, module: Any) -> Any:
        """Return the `Timeout` of httpx (or httpx2, `module`) for the SDK's HTTP client.
        Waiting for a pooled connection counts as connecting, sending the request as waiting
        for its answer."""
        return module.Timeout(
            connect=self.connect, read=self.waiting(), write=self.waiting(), pool=self.connect
        )

    def as_dict(self) -> dict[str, float | None]:
        """Return the timeouts in seconds, for the health and info routes (None: no limit)."""
        return {name: None if math.isinf(value) else value for name, value in asdict(self).items()}


def describe(provider: str, name: str, seconds: float) -> str:
    """Return the message of a timeout: which one, its value, and what sets it."""
    option, setting = SOURCES[name]
    label = name.replace("_", "-")
    return (
        f"The provider '{provider}' {FAILED_TO[name]} {seconds:g} s (the {label} timeout: "
        f"set {setting}, or '{option}' in the OPTIONS of LLM_PROVIDERS['{provider}'])."
    )


def sdk_timeout(error: BaseException, timeouts: Timeouts) -> str:
    """Return which timeout an SDK's timeout exception (or its cause) stands for."""
    seen: BaseException | None = error
    while seen is not None:
        if type(seen).__name__ in {"ConnectTimeout", "PoolTimeout"}:
            return "connect"
        seen = seen.__cause__ or seen.__context__
    return timeouts.before_first_chunk()


class Watch:
    """The gap and the total of one SDK stream: `start(cut)` once the first chunk is in, then
    `waiting()` before each read; when a wait runs out, the watchdog calls `cut` (which must
    end the blocked read) and `fired` says which timeout it was."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.end = time.monotonic() + timeouts.total
        self.which = "gap"
        self.at = math.inf
        self.scheduled = math.inf
        self.fired: str | None = None
        self._cut: Callable[[], None] | None = None

    def start(self, cut: Callable[[], None]) -> None:
        self._cut = cut
        self.waiting()

    def waiting(self) -> None:
        """Start one wait for the next chunk: gap seconds, or what is left of the total."""
        at = time.monotonic() + self.timeouts.gap
        self.which, self.at = ("gap", at) if at < self.end else ("total", self.end)
        # Waits only move later, except the first: then the watchdog must hear of it.
        if self._cut is not None and self.at < self.scheduled:
            self.scheduled = self.at
            watchdog.schedule(self, self.at)

    def stop(self) -> None:
        """The stream is over: never cut it (and let go of its response)."""
        self._cut = None

    def _due(self, at: float) -> None:
        """The watchdog's call at `at`, a time it was scheduled for."""
        cut = self._cut
        if cut is None or at != self.scheduled:
            return
        if time.monotonic() < self.at:  # a chunk came meanwhile: wait on
            self.scheduled = self.at
            watchdog.schedule(self, self.at)
            return
        self.fired, self._cut = self.which, None
        cut()


class Watchdog:
    """One thread, started on first use, that calls each watch when its wait may have run out.
    A watch is in the heap once at a time however many chunks it sees (see Watch.waiting)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, watch: Watch, at: float) -> None:
        with self._condition:
            heapq.heappush(self._heap, (at, next(self._order), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llm-watchdog", daemon=True)
                self._thread.start()
            self._condition.notify()

    def _run(self) -> None:
        while True:
            at, watch = self._next()
            try:
                watch._due(at)
            except Exception:  # the read is left to its SDK's own timeout; the watchdog goes on
                logger.exception("Cutting a stream whose wait ran out failed.")

    def _next(self) -> tuple[float, Watch]:
        with self._condition:
            while True:
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait is not None and wait <= 0:
                    at, _, watch = heapq.heappop(self._heap)
                    return at, watch
                self._condition.wait(wait)


watchdog = Watchdog()
