"""Writes on user accounts."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

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
