"""Which limits apply to a call, how a refusal reads, and the `x-ratelimit-*` headers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings

from llm_api.limits.store import Count, Counter, Kind
from llm_api.metering import Caller
from project.exceptions import ServiceError

UNITS = {
    Kind.REQUESTS: "requests per minute",
    Kind.TOKENS: "tokens per minute",
    Kind.IN_FLIGHT: "requests in flight at once",
}
KEY_FIELDS = {
    Kind.REQUESTS: "rpm_limit",
    Kind.TOKENS: "tpm_limit",
    Kind.IN_FLIGHT: "concurrency_limit",
}
USER_SETTINGS = {
    Kind.REQUESTS: "DEFAULT_RPM_LIMIT",
    Kind.TOKENS: "DEFAULT_TPM_LIMIT",
    Kind.IN_FLIGHT: "DEFAULT_CONCURRENCY_LIMIT",
}
HEADER_NAMES = {Kind.REQUESTS: "requests", Kind.TOKENS: "tokens", Kind.IN_FLIGHT: "concurrency"}


class RateLimited(ServiceError):
    """A limit of the key or of its user leaves no room for the call now."""

    status_code = 429
    code = "rate_limit_exceeded"
    error_type = "rate_limit_error"
    default_message = "Rate limit reached; try again shortly."


class TooManyInFlight(RateLimited):
    code = "concurrency_limit_exceeded"


class ModelShareUsed(RateLimited):
    """The key already holds its share of a seed 001 model's slots (MODEL_SLOT_SHARE)."""

    code = "model_share_exceeded"


class OverTheLimit(RateLimited):
    """The call alone counts more tokens than a tokens-per-minute limit: no wait lets it in."""

    code = "request_too_large"


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit that applies to a call: what it counts, whose it is, and how much."""

    kind: Kind
    owner: str  # "key", "user", or a seed 001 model role ("text_model") for its slot share
    owner_id: int
    value: int
    holder: str = ""  # a model's slot share: "key:12" or "user:5"

    @property
    def name(self) -> str:
        if self.holder:
            return f"share:{self.owner}:{self.holder}"
        return f"{self.kind}:{self.owner}:{self.owner_id}"

    def counter(self, tokens: int) -> Counter:
        amount = tokens if self.kind is Kind.TOKENS else 1
        return Counter(self.name, self.kind, self.value, amount)

    def describe(self) -> str:
        """Return whose limit this is, how large, and where it is set."""
        amount = f"{self.value:,} {UNITS[self.kind]}"
        if self.owner == "key":
            return (
                f"this API key's limit of {amount} (its {KEY_FIELDS[self.kind]}; the key's "
                f"owner can change it with PATCH /api/keys/{self.owner_id}/)"
            )
        if self.owner == "user":
            return (
                f"your account's limit of {amount} over all its keys together (the gateway's "
                f"{USER_SETTINGS[self.kind]}, set by its operator)"
            )
        cap = getattr(settings, f"{self.owner.upper()}_MAX_CONCURRENCY")
        who = "this API key" if self.holder.startswith("key:") else "your account"
        return (
            f"{who}'s share of the model '{self.owner}': {self.value} of its {cap} concurrent "
            f"calls (MODEL_SLOT_SHARE={settings.MODEL_SLOT_SHARE:g} of "
            f"{self.owner.upper()}_MAX_CONCURRENCY), so that other callers still get slots"
        )


def limits_for(caller: Caller) -> list[Limit]:
    """Return the limits a call counts against: its key's own, and its user's defaults."""
    found = []
    key = caller.api_key
    for kind in Kind:
        if key is not None:
            value = getattr(key, KEY_FIELDS[kind])
            if value and value > 0:
                found.append(Limit(kind, "key", key.id, value))
        default = getattr(settings, USER_SETTINGS[kind])
        if default > 0:
            found.append(Limit(kind, "user", caller.user_id, default))
    return found


# --- refusals ---------------------------------------------------------------------------------


def refusal(limits: list[Limit], counts: list[Count], *, tokens: int) -> RateLimited:
    """Return the 429 of a refused call (`counts`: each limit's count, in order): the limit that
    keeps it out longest, and when to retry."""
    paired = zip(limits, counts, strict=True)
    refused = [(limit, count) for limit, count in paired if not count.fits]
    limit, count = max(refused, key=lambda item: _wait_rank(item[1]))
    headers = rate_headers(limits, counts)
    if count.wait_ms < 0:
        return OverTheLimit(
            f"This request counts {tokens:,} tokens (its prompt, at most one token per byte, "
            f"plus max_tokens), more than {limit.describe()}: lower max_tokens or shorten the "
            "prompt.",
            headers=headers,
        )
    headers["Retry-After"] = str(max(1, math.ceil(count.wait_ms / 1000)))
    if limit.kind is Kind.IN_FLIGHT:
        error_class = ModelShareUsed if limit.holder else TooManyInFlight
        return error_class(
            f"Too many requests at once: {limit.describe()}. Retry when one of them has ended.",
            headers=headers,
        )
    counted = f"{count.used:,} counted in the last minute"
    if limit.kind is Kind.TOKENS:
        counted += f", and this request counts {tokens:,} (its prompt plus max_tokens)"
    return RateLimited(
        f"Rate limit reached: {limit.describe()}; {counted}. Retry in {headers['Retry-After']} s.",
        headers=headers,
    )


def _wait_rank(count: Count) -> float:
    return math.inf if count.wait_ms < 0 else count.wait_ms


# --- headers ----------------------------------------------------------------------------------


def rate_headers(limits: list[Limit], counts: list[Count]) -> dict[str, str]:
    """Return OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (and ours for
    requests in flight) for the limit of each kind nearest to running out (`counts`: each
    limit's count, in order)."""
    nearest: dict[Kind, tuple[int, int, Count]] = {}
    for limit, count in zip(limits, counts, strict=True):
        mine = (limit.value - count.used, limit.value, count)
        best = nearest.get(limit.kind)
        if best is None or mine[:2] < best[:2]:
            nearest[limit.kind] = mine
    headers: dict[str, str] = {}
    for kind, suffix in HEADER_NAMES.items():
        if kind not in nearest:
            continue
        remaining, value, count = nearest[kind]
        headers[f"x-ratelimit-limit-{suffix}"] = str(value)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, remaining))
        if kind is not Kind.IN_FLIGHT:
            headers[f"x-ratelimit-reset-{suffix}"] = duration(count.reset_ms)
    return headers


def duration(ms: int) -> str:
    """Return a duration as OpenAI writes it: "250ms", "1.5s", "1m0s"."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    minutes, seconds = divmod(ms / 1000, 60)
    text = f"{round(seconds, 3):g}s"
    return f"{int(minutes)}m{text}" if minutes else text
