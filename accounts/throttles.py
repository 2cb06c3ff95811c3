"""Sign-in limits shared by POST /api/token/, the admin's login and the password change.

Attempts are limited per client address on each route; failed ones are also limited per
username, across all three and from wherever they come, so that one account cannot be guessed at
from many addresses.
"""

import unicodedata

from project.throttling import Limit

SIGN_IN_FAILURES = Limit("login_username", "failed sign-ins for this username")
ADMIN_SIGN_INS = Limit("admin_login", "admin sign-in attempts from your address")


def username_ident(username: object) -> str | None:
    """Return what a submitted username is counted under, or None when it is not a string.

    Every spelling that could reach the same account counts as one: the sign-in forms strip
    whitespace (and the admin's normalizes Unicode), and a database may compare case-blind.
    """
    if not isinstance(username, str) or not username.strip():
        return None
    return unicodedata.normalize("NFKC", username.strip()).casefold()
