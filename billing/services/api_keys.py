"""Writes on API keys: create (the plaintext is returned once, never stored), change, revoke.

Every change replaces the key's cached entry at once, so a revocation, an expiry date or a new
allowlist applies on the key's very next request although authentication reads only the cache
(shared by every worker: see `billing.checks`). Saving a user refreshes the entries of their keys,
which carry the user, so a deactivated user's keys fail at once too.

When an API key (rather than a login token, the admin or the command line) asks for a write, it
needs the "manage" scope and can hand out only what it has itself: no later expiry, no larger
spend cap or limit, no model or scope it lacks. So a leaked key can never mint a wider one.
"""

import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import timezone

from billing import keys
from billing.exceptions import ApiKeyRevoked, RestrictedApiKey
from billing.keys import ApiKeyInfo
from billing.models import ApiKey, is_pattern
from billing.money import format_credits
from billing.selectors import api_key_cache_key, cached_key_of

LIMIT_FIELDS = (
    "spend_cap",
    "rpm_limit",
    "tpm_limit",
    "concurrency_limit",
    "batch_concurrency_limit",
    "batch_tokens_limit",
)
EDITABLE_FIELDS = frozenset({"name", "expires_at", "allowed_models", "scopes", *LIMIT_FIELDS})
LAST_USED_INTERVAL_SECONDS = 60


def _check_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": ["The expiry must be in the future."]})


def _cache_refresh(api_key: ApiKey) -> None:
    """Put the key's new state in the cache (set, not delete: see `api_key_load`)."""
    cache.set(
        api_key_cache_key(api_key.digest), cached_key_of(api_key), settings.API_KEY_CACHE_SECONDS
    )


def _refuse_wider(field: str, has: str, needs: str) -> RestrictedApiKey:
    return RestrictedApiKey(
        f"This API key {has}, so a key it creates or changes {needs}; use a login token "
        "(Authorization: Bearer <access token from POST /api/token/>) to go beyond that.",
        param=field,
    )


def _shown(field: str, value: int) -> str:
    return f"{format_credits(value)} credits" if field == "spend_cap" else str(value)


def _check_expiry_within(acting_key: ApiKeyInfo, expires_at: datetime | None) -> None:
    limit = acting_key.expires_at
    if limit is not None and (expires_at is None or expires_at > limit):
        when = limit.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise _refuse_wider(
            "expires_at",
            f"expires on {when}",
            f"must expire by then too: give expires_at (or expires_in_days) no later than {when}",
        )


def _check_limit_within(acting_key: ApiKeyInfo, field: str, value: int | None) -> None:
    limit = getattr(acting_key, field)
    if limit is not None and (value is None or value > limit):
        shown = _shown(field, limit)
        raise _refuse_wider(
            field,
            f"has {field} {shown}",
            f"needs {field} of at most {shown} (null, no limit, is more than any limit)",
        )


def _within_allowlist(acting_key: ApiKeyInfo, entry: str) -> bool:
    # A pattern only if the acting key has the very same one: patterns are not compared.
    return entry in acting_key.allowed_models or (
        not is_pattern(entry) and acting_key.allows(entry)
    )


def _check_allowlist_within(acting_key: ApiKeyInfo, allowed_models: list[str]) -> None:
    if not acting_key.allowed_models:
        return
    wider = [entry for entry in allowed_models if not _within_allowlist(acting_key, entry)]
    if wider or not allowed_models:
        own = ", ".join(acting_key.allowed_models)
        beyond = f"{wider[0]!r} is not among them" if wider else "an empty list allows every model"
        raise _refuse_wider(
            "allowed_models",
            f"may call only {own}",
            f"needs allowed_models within that list ({beyond})",
        )


def _check_scopes_within(acting_key: ApiKeyInfo, scopes: list[str]) -> None:
    lacking = [scope for scope in scopes if scope not in acting_key.scopes]
    if lacking:
        raise _refuse_wider(
            "scopes", f"lacks the {lacking[0]!r} scope", "cannot be given that scope"
        )


def _check_granted_by(acting_key: ApiKeyInfo | None, data: dict[str, Any], *, to: str) -> None:
    """Refuse an API key without "manage", or one that asks for more than it has itself.

    `data` holds cleaned settings; only the ones given are compared, so a narrow managing key may
    rename a wider key or narrow it, never widen it. None (a login token, the admin, the command
    line) may do anything.
    """
    if acting_key is None:
        return
    acting_key.require_manage(to=to)
    if "expires_at" in data:
        _check_expiry_within(acting_key, data["expires_at"])
    for field in LIMIT_FIELDS:
        if field in data:
            _check_limit_within(acting_key, field, data[field])
    if "allowed_models" in data:
        _check_allowlist_within(acting_key, data["allowed_models"])
    if "scopes" in data:
        _check_scopes_within(acting_key, data["scopes"])


def api_key_create(
    *,
    user: AbstractBaseUser,
    name: str,
    expires_at: datetime | None = None,
    allowed_models: list[str] | tuple[str, ...] = (),
    spend_cap: int | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    concurrency_limit: int | None = None,
    batch_concurrency_limit: int | None = None,
    batch_tokens_limit: int | None = None,
    scopes: list[str] | tuple[str, ...] = keys.DEFAULT_SCOPES,
    acting_key: ApiKeyInfo | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for `user`; return it with the plaintext, which is shown this once only.

    `acting_key` is the API key asking for it, None for a login token, the admin or the command
    line; a key needs the "manage" scope and cannot create a key wider than itself
    (RestrictedApiKey).
    """
    _check_expiry(expires_at)
    granted = {
        "expires_at": expires_at,
        "allowed_models": keys.clean_allowlist(allowed_models),
        "spend_cap": spend_cap,
        "rpm_limit": rpm_limit,
        "tpm_limit": tpm_limit,
        "concurrency_limit": concurrency_limit,
        "batch_concurrency_limit": batch_concurrency_limit,
        "batch_tokens_limit": batch_tokens_limit,
        "scopes": keys.clean_scopes(scopes),
    }
    _check_granted_by(acting_key, granted, to="create API keys")
    new = keys.generate()
    api_key = ApiKey(
        user=user,
        name=name,
        digest=new.digest,
        prefix=new.prefix,
        last4=new.last4,
        **granted,
    )
    api_key.full_clean()
    api_key.save()
    return api_key, new.plaintext


def api_key_update(
    *, api_key: ApiKey, data: dict[str, Any], acting_key: ApiKeyInfo | None = None
) -> ApiKey:
    """Change a key's name, expiry, allowlist, spend cap, limits or scopes (only the fields in
    `data`); `acting_key` as for `api_key_create`: a key cannot widen a key beyond itself.

    A revoked key cannot be changed (ApiKeyRevoked); other fields are not editable at all.
    """
    unknown = set(data) - EDITABLE_FIELDS
    if unknown:
        raise TypeError(f"Not editable on an API key: {', '.join(sorted(unknown))}")
    if "allowed_models" in data:
        data = {**data, "allowed_models": keys.clean_allowlist(data["allowed_models"])}
    if "scopes" in data:
        data = {**data, "scopes": keys.clean_scopes(data["scopes"])}
    _check_granted_by(acting_key, data, to="change API keys")
    if api_key.revoked_at:
        raise ApiKeyRevoked()
    if "expires_at" in data:
        _check_expiry(data["expires_at"])
    for field, value in data.items():
        setattr(api_key, field, value)
    api_key.clean_fields()
    api_key.save(update_fields=list(data))
    _cache_refresh(api_key)
    return api_key


def api_key_revoke(*, api_key: ApiKey, acting_key: ApiKeyInfo | None = None) -> ApiKey:
    """Revoke a key for good; it fails on its very next request. Revoking twice is harmless.

    An API key (`acting_key`) needs the "manage" scope to revoke keys.
    """
    if acting_key is not None:
        acting_key.require_manage(to="revoke API keys")
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    _cache_refresh(api_key)
    return api_key


def api_key_cache_refresh(*, user: AbstractBaseUser) -> None:
    """Refresh the cached entries of the user's keys, which carry the user as it was: after a
    change (deactivation above all) their next request sees the user as it is now."""
    entries = {}
    for api_key in ApiKey.objects.filter(user_id=user.pk, revoked_at__isnull=True):
        api_key.user = user  # the saved instance itself, not a query per key
        entries[api_key_cache_key(api_key.digest)] = cached_key_of(api_key)
    if entries:
        cache.set_many(entries, settings.API_KEY_CACHE_SECONDS)


def api_key_cache_drop(*, user: AbstractBaseUser) -> None:
    """Forget the cached entries of every key of a user who is being deleted (with their keys)."""
    digests = ApiKey.objects.filter(user_id=user.pk).values_list("digest", flat=True)
    cache.delete_many([api_key_cache_key(digest) for digest in digests])


# When this process last asked the cache whether a key's use is due to be written: it asks at
# most once an interval per key, instead of a cache round trip on every request.
_touched: dict[int, float] = {}


def api_key_touch(*, api_key_id: int) -> None:
    """Record that a key was used, writing `last_used_at` at most once a minute per key (the
    shared cache decides which process writes it)."""
    now = time.monotonic()
    if now - _touched.get(api_key_id, -LAST_USED_INTERVAL_SECONDS) < LAST_USED_INTERVAL_SECONDS:
        return
    _touched[api_key_id] = now
    if cache.add(f"billing:apikey-used:{api_key_id}", True, LAST_USED_INTERVAL_SECONDS):
        ApiKey.objects.filter(pk=api_key_id).update(last_used_at=timezone.now())


def api_key_touches_forget() -> None:
    """Forget when this process last recorded each key's use (the tests start afresh)."""
    _touched.clear()
