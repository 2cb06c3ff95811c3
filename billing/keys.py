"""The API key format: `sk-llm-` + 33 base62 characters (192 random bits) + a 6-character checksum.

The checksum is a truncated HMAC of the body under the server secret, so a mistyped or forged
key is refused by arithmetic alone, before any cache or database lookup. Only a keyed digest of
the whole key (HMAC-SHA256, hex) is stored, plus its first and last characters for display.
What a key may do is its scopes (SCOPES): every key calls the models, "manage" is opt-in.
"""

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from billing.exceptions import RestrictedApiKey

PREFIX = "sk-llm-"
ALPHABET = string.digits + string.ascii_letters
BODY_LENGTH = 33  # 62**33 > 2**192, so 24 random bytes always fit
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = len(PREFIX) + 4
_ALLOWED = frozenset(ALPHABET)
MAX_ALLOWLIST_ENTRIES = 100

# What a key may do. Every key calls the models; "manage" is opt-in, so a key that leaks from a
# script or a laptop cannot mint, change or revoke keys, read the whole account or change it.
SCOPE_MODELS = "models"
SCOPE_MANAGE = "manage"
SCOPES = {
    SCOPE_MODELS: "call the models and read this key's own usage",
    SCOPE_MANAGE: "also create, change and revoke keys, read the whole account's ledger and "
    "usage, and change the account",
}
DEFAULT_SCOPES = (SCOPE_MODELS,)
HOW_TO_MANAGE = (
    "use a login token (Authorization: Bearer <access token from POST /api/token/>) or an "
    'API key created with "scopes": ["models", "manage"]'
)


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: the plaintext (shown once) and what is stored instead of it."""

    plaintext: str
    digest: str
    prefix: str
    last4: str


def _base62(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, remainder = divmod(number, 62)
        chars.append(ALPHABET[remainder])
    return "".join(reversed(chars))


def _mac(message: str) -> bytes:
    return hmac.new(settings.API_KEY_SECRET.encode(), message.encode(), hashlib.sha256).digest()


def _checksum(body: str) -> str:
    return _base62(int.from_bytes(_mac(f"checksum:{body}")[:8], "big"), CHECKSUM_LENGTH)


def digest(key: str) -> str:
    """Return the stored form of a key: HMAC-SHA256 under API_KEY_SECRET, as hex."""
    return hmac.new(settings.API_KEY_SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()


def generate() -> NewKey:
    """Return a new random key with its digest and display parts."""
    body = _base62(int.from_bytes(secrets.token_bytes(24), "big"), BODY_LENGTH)
    plaintext = f"{PREFIX}{body}{_checksum(body)}"
    return NewKey(
        plaintext=plaintext,
        digest=digest(plaintext),
        prefix=plaintext[:DISPLAY_PREFIX_LENGTH],
        last4=plaintext[-4:],
    )


def is_well_formed(key: str) -> bool:
    """Return whether `key` has our prefix, length, alphabet and a matching checksum."""
    return has_key_shape(key) and checksum_matches(key)


def has_key_shape(key: str) -> bool:
    """Return whether `key` has our prefix, length and alphabet (its checksum unchecked)."""
    return (
        len(key) == KEY_LENGTH
        and key.startswith(PREFIX)
        and _ALLOWED.issuperset(key[len(PREFIX) :])
    )


def checksum_matches(key: str) -> bool:
    """Return whether the checksum of a key of our shape matches its body (a mistyped key's
    does not, so it is refused without a lookup)."""
    rest = key[len(PREFIX) :]
    body, checksum = rest[:BODY_LENGTH], rest[BODY_LENGTH:]
    return hmac.compare_digest(checksum, _checksum(body))


def looks_like_key(value: str) -> bool:
    """Return whether `value` claims to be one of our keys (has the prefix), valid or not."""
    return value.startswith(PREFIX)


def clean_allowlist(entries: Any) -> list[str]:
    """Return allowlist entries trimmed, lower-cased and without duplicates, or refuse them."""
    if isinstance(entries, str) or not all(isinstance(entry, str) for entry in entries):
        raise ValidationError({"allowed_models": ["Give a list of provider/model names."]})
    cleaned = list(dict.fromkeys(entry.strip().lower() for entry in entries))
    if "" in cleaned or any(len(entry) > 200 for entry in cleaned):
        raise ValidationError({"allowed_models": ["Each entry is 1 to 200 characters long."]})
    if len(cleaned) > MAX_ALLOWLIST_ENTRIES:
        raise ValidationError(
            {"allowed_models": [f"At most {MAX_ALLOWLIST_ENTRIES} entries are allowed."]}
        )
    return cleaned


def default_scopes() -> list[str]:
    """Return the scopes of a key created without any: the models only."""
    return list(DEFAULT_SCOPES)


def clean_scopes(entries: Any) -> list[str]:
    """Return scopes known, without duplicates, in a fixed order and always with "models"."""
    if not isinstance(entries, list | tuple) or not all(isinstance(e, str) for e in entries):
        raise ValidationError({"scopes": ['Give a list of scopes, e.g. ["models", "manage"].']})
    unknown = sorted(set(entries) - set(SCOPES))
    if unknown:
        raise ValidationError(
            {"scopes": [f"Unknown scope {unknown[0]!r}; the scopes are: {', '.join(SCOPES)}."]}
        )
    return [scope for scope in SCOPES if scope == SCOPE_MODELS or scope in entries]


def masked(prefix: str, last4: str) -> str:
    """Return how a stored key is shown: its first and last characters around an ellipsis."""
    return f"{prefix}…{last4}"


@dataclass(frozen=True)
class ApiKeyInfo:
    """What a request authenticated by an API key knows about its key (never the key itself)."""

    id: int
    user_id: int
    name: str
    prefix: str
    allowed_models: tuple[str, ...] = ()
    spend_cap: int | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    concurrency_limit: int | None = None
    batch_concurrency_limit: int | None = None
    batch_tokens_limit: int | None = None
    expires_at: datetime | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES

    def allows(self, model: str) -> bool:
        """Return whether this key may call `model` ("provider/model"); no allowlist allows all."""
        if not self.allowed_models:
            return True
        name = model.lower()
        return any(name == entry or fnmatchcase(name, entry) for entry in self.allowed_models)

    @property
    def can_manage(self) -> bool:
        """Return whether this key may manage keys and the account, as a login token may."""
        return SCOPE_MANAGE in self.scopes

    def require_manage(self, *, to: str) -> None:
        """Refuse (RestrictedApiKey, 403) unless this key has the "manage" scope."""
        if not self.can_manage:
            raise RestrictedApiKey(
                "This API key may only call the models and read its own usage (scope "
                f'"{SCOPE_MODELS}"); to {to}, {HOW_TO_MANAGE}.'
            )
