"""Reads: prices, balances, the ledger, usage totals and API keys (cached for authentication)."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate

from billing.exceptions import ApiKeyNotFound, PriceMissing
from billing.keys import ApiKeyInfo
from billing.models import ApiKey, CreditAccount, LedgerEntry, ModelPrice, is_pattern
from billing.money import MICRO
from project.timed import TimedCache

# --- Prices ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """A model's price in micro-credits, and what a call costs under it."""

    per_request: int
    per_1k_prompt: int
    per_1k_completion: int
    source: str = "default"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Return the cost of one call in micro-credits, rounded up to the micro-credit."""
        per_1k = prompt_tokens * self.per_1k_prompt + completion_tokens * self.per_1k_completion
        return self.per_request + -(-per_1k // 1000)


DEFAULT_PRICE = Price(per_request=MICRO, per_1k_prompt=0, per_1k_completion=0)


def is_catch_all(pattern: str) -> bool:
    """Return whether a price pattern matches every model (`*`, `*/*`): a default, not a price
    of the model's own."""
    return set(pattern) <= {"*", "/"}


def _specificity(pattern: str) -> tuple[int, str]:
    return (-sum(char not in "*?[]" for char in pattern), pattern)


@dataclass(frozen=True)
class _LoadedPrices:
    exact: dict[str, Price]
    patterns: list[tuple[str, Price]]  # most specific first


def _load_prices() -> _LoadedPrices:
    prices = {row.model.lower(): _price_of(row) for row in ModelPrice.objects.all()}
    patterns = [(model, price) for model, price in prices.items() if is_pattern(model)]
    return _LoadedPrices(
        exact={model: price for model, price in prices.items() if not is_pattern(model)},
        patterns=sorted(patterns, key=lambda item: _specificity(item[0])),
    )


class PriceTable:
    """The whole price table, loaded in one query and kept for PRICE_CACHE_SECONDS.

    A price an admin saves applies at once in the process that saved it (the admin clears this
    table) and within PRICE_CACHE_SECONDS everywhere else.
    """

    def __init__(self) -> None:
        self._table: TimedCache[_LoadedPrices] = TimedCache(lambda: settings.PRICE_CACHE_SECONDS)

    def clear(self) -> None:
        self._table.clear()

    def lookup(self, name: str) -> Price:
        """Return the price of `name`: the exact row, else the most specific pattern, else the
        default; with PRICE_REQUIRED, neither the default nor a catch-all row (`*`) applies."""
        loaded = self._table.get(_load_prices)
        if name in loaded.exact:
            return loaded.exact[name]
        required = settings.PRICE_REQUIRED
        for pattern, price in loaded.patterns:
            if fnmatchcase(name, pattern) and not (required and is_catch_all(pattern)):
                return price
        if required:
            raise PriceMissing(
                f"'{name}' has no price, and this gateway serves priced models only "
                "(PRICE_REQUIRED is on). An administrator can set one at "
                "/admin/billing/modelprice/add/."
            )
        return DEFAULT_PRICE


def _price_of(row: ModelPrice) -> Price:
    return Price(row.per_request, row.per_1k_prompt, row.per_1k_completion, source=row.model)


price_table = PriceTable()


def price_for(*, provider: str, model: str) -> Price:
    """Return the price of `provider/model`: the exact row, else the most specific pattern,
    else the default of one credit per request (PriceMissing, 403, with PRICE_REQUIRED).
    Served from the process's price table."""
    return price_table.lookup(f"{provider}/{model}".lower())


# --- Balances, ledger, usage -------------------------------------------------------------------


def account_balance(*, user: AbstractBaseUser) -> dict[str, int]:
    """Return the user's balance, held and available micro-credits, and what the account owes
    (zeros without an account)."""
    account = CreditAccount.objects.filter(pk=user.pk).values("balance", "held", "debt").first()
    balance, held, debt = (
        (account["balance"], account["held"], account["debt"]) if account else (0, 0, 0)
    )
    return {"balance": balance, "held": held, "available": balance - held, "debt": debt}


def _day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def ledger_list(
    *,
    user: AbstractBaseUser,
    kinds: list[str] | None = None,
    since: date | None = None,
    until: date | None = None,
    api_key: ApiKey | None = None,
) -> QuerySet[LedgerEntry]:
    """Return the user's entries, newest first, filtered by kind, days (inclusive) and key."""
    entries = LedgerEntry.objects.filter(account_id=user.pk).select_related("api_key")
    if kinds:
        entries = entries.filter(kind__in=kinds)
    if since:
        entries = entries.filter(created_at__gte=_day_start(since))
    if until:
        entries = entries.filter(created_at__lt=_day_start(until + timedelta(days=1)))
    if api_key:
        entries = entries.filter(api_key=api_key)
    return entries.order_by("-created_at", "-id")


def _totals() -> dict[str, Any]:
    return {
        "requests": Count("id"),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "spent": Coalesce(-Sum("amount"), 0),  # usage entries are negative
    }


def _grouped(entries: QuerySet[LedgerEntry], *fields: str) -> list[dict[str, Any]]:
    return list(entries.values(*fields).annotate(**_totals()).order_by(*fields))


def usage_summary(
    *, user: AbstractBaseUser, since: date, until: date, api_key: ApiKey | None = None
) -> dict[str, Any]:
    """Return usage totals over the days since..until (inclusive): overall, per day (UTC),
    per model and per key; `spent` is in micro-credits."""
    entries = ledger_list(
        user=user, kinds=[LedgerEntry.Kind.USAGE], since=since, until=until, api_key=api_key
    ).order_by()
    return {
        "total": entries.aggregate(**_totals()),
        "by_day": _grouped(entries.annotate(date=TruncDate("created_at", tzinfo=UTC)), "date"),
        "by_model": _grouped(entries, "model"),
        "by_key": _grouped(entries, "api_key", "api_key__name", "api_key__prefix"),
    }


# --- API keys --------------------------------------------------------------------------------


def api_key_list(*, user: AbstractBaseUser, only_id: int | None = None) -> QuerySet[ApiKey]:
    """Return the user's keys, newest first, revoked and expired ones included (or only the
    key `only_id`: what a key without the "manage" scope may see)."""
    api_keys = ApiKey.objects.filter(user_id=user.pk)
    if only_id is not None:
        api_keys = api_keys.filter(pk=only_id)
    return api_keys.order_by("-created_at", "-id")


def api_key_get(*, user: AbstractBaseUser, pk: int) -> ApiKey:
    """Return the user's key `pk`; another user's key is as absent as a missing one (404)."""
    api_key = ApiKey.objects.filter(user_id=user.pk, pk=pk).select_related("user").first()
    if api_key is None:
        raise ApiKeyNotFound(f"No API key with id {pk}.")
    return api_key


@dataclass(frozen=True)
class CachedKey:
    """What authentication needs about a key, as kept in the cache under its digest."""

    info: ApiKeyInfo
    user: AbstractBaseUser
    revoked_at: datetime | None


def api_key_cache_key(digest: str) -> str:
    # v2: entries carry the key's scopes; an older process's entries (without) are never read.
    return f"billing:apikey:v2:{digest}"


def cached_key_of(api_key: ApiKey) -> CachedKey:
    """Return the cache entry for a key row (its `user` must be loaded or loadable)."""
    info = ApiKeyInfo(
        id=api_key.pk,
        user_id=api_key.user_id,
        name=api_key.name,
        prefix=api_key.prefix,
        allowed_models=tuple(api_key.allowed_models),
        spend_cap=api_key.spend_cap,
        rpm_limit=api_key.rpm_limit,
        tpm_limit=api_key.tpm_limit,
        concurrency_limit=api_key.concurrency_limit,
        batch_concurrency_limit=api_key.batch_concurrency_limit,
        batch_tokens_limit=api_key.batch_tokens_limit,
        expires_at=api_key.expires_at,
        scopes=tuple(api_key.scopes),
    )
    return CachedKey(info=info, user=api_key.user, revoked_at=api_key.revoked_at)


def api_key_load(*, digest: str) -> CachedKey | None:
    """Return the key with this digest from the database, and cache it.

    `cache.add`, not `set`: if a revocation wrote its fresher entry meanwhile, this stale read
    must not overwrite it.
    """
    api_key = ApiKey.objects.select_related("user").filter(digest=digest).first()
    if api_key is None:
        return None
    entry = cached_key_of(api_key)
    cache.add(api_key_cache_key(digest), entry, settings.API_KEY_CACHE_SECONDS)
    return entry
