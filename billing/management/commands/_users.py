"""What the billing commands share: finding a user by name, with a clear error if there is none."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from accounts.services import user_create


def user_named(username: str) -> AbstractBaseUser:
    """Return the user called `username`, or fail the command saying there is no such user."""
    User = get_user_model()
    try:
        return User.objects.get(**{User.USERNAME_FIELD: username})
    except User.DoesNotExist as error:
        raise CommandError(
            f"No user named {username!r}. Sign up at POST /api/signup/, or pass --create-user "
            "to createapikey."
        ) from error


def user_or_new(username: str) -> AbstractBaseUser:
    """Return the user called `username`, creating it (no password, signup credits) if needed."""
    User = get_user_model()
    existing = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
    if existing is not None:
        return existing
    try:
        return user_create(username=username, password=None)
    except ValidationError as error:
        raise CommandError("; ".join(error.messages)) from error
