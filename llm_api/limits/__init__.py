"""Per-key and per-user limits: requests per minute, tokens per minute, requests in flight.

The pipeline's limit step: `admitted(caller, tokens=…)` admits a call or raises 429, yields its
`Admission` (the `x-ratelimit-*` headers of the answer), and gives its in-flight place back when
the block ends, however the call ends. `Admission.settle(tokens)` corrects tokens per minute from
the held estimate to the real usage.

A call counts against its API key's own limits (`rpm_limit`, `tpm_limit`, `concurrency_limit`,
each optional) and against its user's, the settings DEFAULT_RPM_LIMIT, DEFAULT_TPM_LIMIT and
DEFAULT_CONCURRENCY_LIMIT, over all of the user's calls together (0: no limit). It is admitted
only when it fits in every one, and then counted in all of them at once (`store`): in Redis when
REDIS_URL is set, so every gateway process sees the same counts, else in this process.

Seed 001's model slots are shared fairly with `model_share_held`: one key holds at most
MODEL_SLOT_SHARE of a model's <ROLE>_MAX_CONCURRENCY slots.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings

from llm_api.limits.rules import Limit, RateLimited, limits_for, rate_headers, refusal
from llm_api.limits.store import Counter, Kind, Store, store_in_use
from llm_api.metering import Caller
from project.exceptions import ServiceError

__all__ = ["Admission", "RateLimited", "admission_take", "admitted", "model_share_held"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Admission:
    """One admitted call: the headers its answer carries, and its token correction."""

    headers: dict[str, str] = field(default_factory=dict)
    store: Store | None = None
    call_id: str = ""
    counters: list[Counter] = field(default_factory=list)
    tokens: int | None = None  # the real usage, once settled
    ended: bool = False

    def settle(self, tokens: int) -> None:
        """Count `tokens` (the real usage) instead of the estimate taken at admission.

        The correction is written when the call ends, with its place in flight (one round trip
        to Redis, not two); a settle after the end is written at once.
        """
        self.tokens = tokens
        if self.ended:
            self._write([c for c in self.counters if c.kind is Kind.TOKENS])

    def end(self, *, failed: bool) -> None:
        """Give back the call's places in flight and write its token correction; once. A call
        that failed before it settled used no tokens."""
        if self.ended:
            return
        self.ended = True
        if failed and self.tokens is None:
            self.tokens = 0
        self._write(self.counters)

    def _write(self, counters: list[Counter]) -> None:
        if self.store is None or not counters:
            return
        try:
            self.store.release(self.call_id, counters, self.tokens)
        except Exception:  # Redis is down: the places expire with their leases
            logger.warning("Could not release the limits of %s.", self.call_id, exc_info=True)


@contextmanager
def admitted(caller: Caller, *, tokens: int) -> Iterator[Admission]:
    """Admit one call of `caller` that may use up to `tokens`; raise 429 over a limit.

    Errors raised inside the block carry the admission's `x-ratelimit-*` headers too.
    """
    # A batch line is capped by its batch's concurrency, not the live rpm/tpm
    limits = [] if caller.batch else limits_for(caller)
    admission = admission_take(limits, tokens=tokens) if limits else Admission()
    try:
        yield admission
    except ServiceError as error:
        for name, value in admission.headers.items():
            error.headers.setdefault(name, value)
        admission.end(failed=True)
        raise
    except BaseException:
        admission.end(failed=True)
        raise
    else:
        admission.end(failed=False)


def admission_take(limits: list[Limit], *, tokens: int) -> Admission:
    """Count a call against `limits`, or raise the refusal (429) of the first it does not fit.

    When Redis is unreachable the call goes ahead unlimited (logged): limits protect the
    gateway and the upstreams, they must not take the gateway down with Redis.
    """
    counters = [limit.counter(tokens) for limit in limits]
    call_id = os.urandom(16).hex()
    try:
        counting = store_in_use()
        outcome = counting.admit(call_id, counters)
    except Exception:
        logger.warning("Rate limits unavailable; not limiting.", exc_info=True)
        return Admission()
    counts = [outcome.counts[counter] for counter in counters]
    if not outcome.admitted:
        raise refusal(limits, counts, tokens=tokens)
    headers = rate_headers(limits, counts)
    return Admission(headers=headers, store=counting, call_id=call_id, counters=counters)


# --- seed 001's model slots, shared fairly ------------------------------------------------------


def slot_share(cap: int) -> int:
    """Return how many of a model's `cap` slots one key may hold (0: no share limit, also
    when the share rounds up to every slot)."""
    share = settings.MODEL_SLOT_SHARE
    if cap <= 0 or not 0 < share < 1:
        return 0
    most = math.ceil(cap * share)
    return most if most < cap else 0


@contextmanager
def model_share_held(caller: Caller, *, role: str, cap: int) -> Iterator[None]:
    """Hold one of the caller's places in its share of the model `role`'s slots for the block;
    raise 429 at once when its share is in use, so that other keys still find slots."""
    most = slot_share(cap)
    if not most:
        yield
        return
    holder = f"key:{caller.api_key.id}" if caller.api_key else f"user:{caller.user_id}"
    limit = Limit(Kind.IN_FLIGHT, role, 0, most, holder=holder)
    admission = admission_take([limit], tokens=0)
    try:
        yield
    finally:
        admission.end(failed=False)
