"""Writes on user accounts."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.exceptions import WrongPassword
from billing.services import account_open

User = get_user_model()


def user_create(*, username: str, password: str | None, email: str = "") -> AbstractUser:
    """Create a user, with a credit account and the signup grant, after every check passes.

    `create_user` alone does not run Django's password validators, so they run here; every
    failure is a ValidationError naming its field (`username`, `password` or `email`). A user
    created with `password=None` cannot sign in (API keys only) until a password is set.
    """
    user = User(username=username, email=email)
    user.set_unusable_password()
    user.full_clean(exclude=["password"])
    if password is not None:
        try:
            validate_password(password, user=user)
        except ValidationError as error:
            raise ValidationError({"password": error.messages}) from error
        user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
            account_open(user=user)
    except IntegrityError as error:  # a concurrent signup took the name after full_clean
        raise ValidationError(
            {"username": ["A user with that username already exists."]}
        ) from error
    return user


def user_update(*, user: AbstractUser, email: str | None = None) -> AbstractUser:
    """Change what a user may change about themselves: only the email address."""
    if email is not None:
        user.email = email
        user.full_clean(exclude=["password"])
        user.save(update_fields=["email"])
    return user


def user_password_change(
    *, user: AbstractUser, current_password: str, new_password: str
) -> AbstractUser:
    """Change `user`'s password, given the current one, after Django's password validators.

    Saving the new password revokes every refresh token of the user (accounts.passwords hooks
    every password save), so whoever signed in with the old password is out at their next
    refresh; both happen in one transaction.
    """
    if not user.check_password(current_password):
        raise WrongPassword(param="current_password")
    try:
        validate_password(new_password, user=user)
    except ValidationError as error:
        raise ValidationError({"new_password": error.messages}) from error
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
    return user


def refresh_tokens_revoke(*, user: AbstractUser) -> int:
    """Blacklist every unexpired refresh token of `user` not blacklisted yet; return how many."""
    outstanding = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    ).only("id")
    revoked = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
    )
    return len(revoked)
