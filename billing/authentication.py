"""API-key authentication for DRF: `X-API-Key: <key>` or `Authorization: Bearer <key>`.

A bearer value without our key prefix is left to simplejwt's JWTAuthentication (listed next), so
signed-in users keep using their access tokens. A malformed key fails its checksum before any
lookup; a well-formed one is found by its digest in the cache (zero queries) or, at most once per
API_KEY_CACHE_SECONDS, in the database. Expiry is checked on every request.
"""

from datetime import UTC

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from billing import keys
from billing.keys import ApiKeyInfo
from billing.selectors import CachedKey, api_key_lookup
from billing.services import api_key_touch

__all__ = ["ApiKeyAuthentication", "ApiKeyInfo", "api_key_of"]


def _presented_key(request: Request) -> str | None:
    """Return the key the request presents, or None when it presents none (or a JWT)."""
    header_key = request.META.get("HTTP_X_API_KEY", "").strip()
    if header_key:
        return header_key
    scheme, _, value = get_authorization_header(request).decode("latin-1").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and keys.looks_like_key(value):
        return value
    return None


def _refuse(message: str, code: str) -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(message, code=code)


def _check_usable(entry: CachedKey) -> None:
    if entry.revoked_at is not None:
        raise _refuse("This API key was revoked.", "api_key_revoked")
    expires_at = entry.info.expires_at
    if expires_at is not None and expires_at <= timezone.now():
        when = expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        raise _refuse(f"This API key expired on {when}.", "api_key_expired")
    if not entry.user.is_active:
        raise _refuse("The account that owns this API key is disabled.", "user_inactive")


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticate a request by API key; `request.auth` is then the key's ApiKeyInfo."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiKeyInfo] | None:
        key = _presented_key(request)
        if key is None:
            return None
        if not keys.is_well_formed(key):
            raise _refuse("Invalid API key.", "invalid_api_key")
        entry = api_key_lookup(digest=keys.digest(key))
        if entry is None:
            raise _refuse("Invalid API key.", "invalid_api_key")
        _check_usable(entry)
        api_key_touch(api_key_id=entry.info.id)
        return entry.user, entry.info

    def authenticate_header(self, request: Request) -> str:
        """Return the WWW-Authenticate value, which makes DRF answer 401 rather than 403."""
        return 'Bearer realm="api"'


def api_key_of(request: Request) -> ApiKeyInfo | None:
    """Return the API key a request was authenticated with, or None (JWT or anonymous)."""
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiKeyInfo) else None
