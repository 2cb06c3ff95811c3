"""Every billing write, importable from one place: `from billing.services import credits_hold`.

credits.py moves credits (accounts, grants, holds, settlement, refunds, the stale-hold sweep);
api_keys.py creates, changes and revokes keys; prices.py edits the price table.
"""

from billing.services.api_keys import (
    api_key_create,
    api_key_revoke,
    api_key_touch,
    api_key_update,
)
from billing.services.credits import (
    account_open,
    credits_grant,
    credits_hold,
    credits_hold_renew,
    credits_refund,
    credits_release,
    credits_settle,
    holds_expire,
)
from billing.services.prices import price_delete, price_set

__all__ = [
    "account_open",
    "api_key_create",
    "api_key_revoke",
    "api_key_touch",
    "api_key_update",
    "credits_grant",
    "credits_hold",
    "credits_hold_renew",
    "credits_refund",
    "credits_release",
    "credits_settle",
    "holds_expire",
    "price_delete",
    "price_set",
]
