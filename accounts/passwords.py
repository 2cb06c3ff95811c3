"""What happens on every password change, wherever it is made."""

from typing import Any

from accounts.services import refresh_tokens_revoke


class RefreshTokensRevokedOnChange:
    """An AUTH_PASSWORD_VALIDATORS entry that validates nothing: it is there for its hook.

    Django calls `password_changed` of each validator whenever a user is saved with a new
    password: from the API, the admin's password forms, `manage.py changepassword` or a shell.
    It is the one place all of them pass through, so a changed password always ends the
    sessions a leaked one may have opened.
    """

    def validate(self, password: str, user: Any = None) -> None:
        return None

    def password_changed(self, password: str, user: Any = None) -> None:
        if user is not None and user.pk is not None:
            refresh_tokens_revoke(user=user)

    def get_help_text(self) -> str:
        return "Changing your password signs you out everywhere: refresh tokens stop working."
