"""Writes on API keys: create (the plaintext is returned once, never stored), change, revoke.

Every change replaces the key's cached entry at once, so a revocation, an expiry date or a new
allowlist applies on the key's very next request although authentication reads only the cache.
"""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import timezone

from billing import keys
from billing.exceptions import ApiKeyRevoked
from billing.models import ApiKey
from billing.selectors import api_key_cache_key, cached_key_of

EDITABLE_FIELDS = frozenset(
    {
        "name",
        "expires_at",
        "allowed_models",
        "spend_cap",
        "rpm_limit",
        "tpm_limit",
        "concurrency_limit",
    }
)
LAST_USED_INTERVAL_SECONDS = 60


def _check_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": ["The expiry must be in the future."]})


def _cache_refresh(api_key: ApiKey) -> None:
    """Put the key's new state in the cache (set, not delete: see `api_key_lookup`)."""
    cache.set(
        api_key_cache_key(api_key.digest), cached_key_of(api_key), settings.API_KEY_CACHE_SECONDS
    )


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
) -> tuple[ApiKey, str]:
    """Create a key for `user`; return it with the plaintext, which is shown this once only."""
    _check_expiry(expires_at)
    new = keys.generate()
    api_key = ApiKey(
        user=user,
        name=name,
        digest=new.digest,
        prefix=new.prefix,
        last4=new.last4,
        expires_at=expires_at,
        allowed_models=keys.clean_allowlist(allowed_models),
        spend_cap=spend_cap,
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        concurrency_limit=concurrency_limit,
    )
    api_key.full_clean()
    api_key.save()
    return api_key, new.plaintext


def api_key_update(*, api_key: ApiKey, data: dict[str, Any]) -> ApiKey:
    """Change a key's name, expiry, allowlist, spend cap or limits (only the fields in `data`).

    A revoked key cannot be changed (ApiKeyRevoked); other fields are not editable at all.
    """
    unknown = set(data) - EDITABLE_FIELDS
    if unknown:
        raise TypeError(f"Not editable on an API key: {', '.join(sorted(unknown))}")
    if api_key.revoked_at:
        raise ApiKeyRevoked()
    if "allowed_models" in data:
        data = {**data, "allowed_models": keys.clean_allowlist(data["allowed_models"])}
    if "expires_at" in data:
        _check_expiry(data["expires_at"])
    for field, value in data.items():
        setattr(api_key, field, value)
    api_key.clean_fields()
    api_key.save(update_fields=list(data))
    _cache_refresh(api_key)
    return api_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key for good; it fails on its very next request. Revoking twice is harmless."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    _cache_refresh(api_key)
    return api_key


def api_key_touch(*, api_key_id: int) -> None:
    """Record that a key was used, writing `last_used_at` at most once a minute per key."""
    if cache.add(f"billing:apikey-used:{api_key_id}", True, LAST_USED_INTERVAL_SECONDS):
        ApiKey.objects.filter(pk=api_key_id).update(last_used_at=timezone.now())
