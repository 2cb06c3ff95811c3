"""API-key authentication for DRF: `X-API-Key: <key>` or `Authorization: Bearer <key>`.

A bearer value without our key prefix is left to simplejwt's JWTAuthentication (listed next), so
signed-in users keep using their access tokens. A value of the wrong shape is refused before any
lookup; a key is found by its digest in the cache (zero queries) or, at most once per
API_KEY_CACHE_SECONDS, in the database, after its checksum (a mistyped key costs no query).
Expiry, revocation and the owner's `is_active` are checked on every request against that entry,
which every change of the key or of its user replaces at once (`billing.services.api_keys`,
`billing.receivers`).

What a key may do is its scopes: "models" (every key) calls the models and reads the key's own
usage; "manage" also manages keys and the account, as a login token does.
"""

from datetime import UTC

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from billing import keys
from billing.keys import ApiKeyInfo
from billing.selectors import CachedKey, api_key_cache_key, api_key_load
from billing.services import api_key_touch
from project.throttling import Limit, address_ident

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


# Keys are too long to guess, but each wrong one costs a lookup: an address that sends too many
# is refused (429) for the rest of the window, with any key, so guessing learns nothing more.
KEY_FAILURES = Limit("key_failure", "requests with an invalid API key from your address")


def _invalid_key(client: str) -> exceptions.AuthenticationFailed:
    KEY_FAILURES.hit(client)
    return _refuse("Invalid API key.", "invalid_api_key")


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
        client = address_ident(request)
        digest = keys.digest(key) if keys.has_key_shape(key) else None
        # The address's failures and the cached key in one cache round trip.
        cache_key = api_key_cache_key(digest) if digest else None
        read = cache.get_many([*KEY_FAILURES.window_keys(client), *filter(None, [cache_key])])
        KEY_FAILURES.check(client, read)
        if digest is None:
            raise _invalid_key(client)
        # A cached entry is found by the digest of a real key; only a key the cache does not
        # hold has its checksum checked, which refuses a mistyped one before a query.
        entry = read.get(cache_key)
        if entry is None and keys.checksum_matches(key):
            entry = api_key_load(digest=digest)
        if entry is None:
            raise _invalid_key(client)
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


def require_manage_scope(request: Request, *, to: str) -> None:
    """Refuse (403 restricted_api_key) a request made with an API key that lacks the "manage"
    scope; a login token (JWT) or a managing key passes. `to` says what was refused."""
    api_key = api_key_of(request)
    if api_key is not None:
        api_key.require_manage(to=to)


def own_key_only(request: Request) -> ApiKeyInfo | None:
    """Return the request's API key when it may see only itself (no "manage" scope), else None."""
    api_key = api_key_of(request)
    return api_key if api_key is not None and not api_key.can_manage else None
