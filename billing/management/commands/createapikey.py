"""`manage.py createapikey USERNAME [--name LABEL] [--expires-days N] [--create-user]`: print a
new API key.

The key alone goes to stdout (so `KEY=$(manage.py createapikey alice)` works); the notes go to
stderr. It is never stored and cannot be shown again.
"""

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from billing.management.commands._users import user_named, user_or_new
from billing.services import api_key_create


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Create an API key for a user and print it (it is shown this once only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="A label for the key (default: cli).")
        parser.add_argument(
            "--expires-days",
            type=positive_int,
            help="Expire the key after N days (default: never).",
        )
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create the user first when there is none (API keys only, no password).",
        )

    def handle(
        self,
        *args: Any,
        username: str,
        name: str,
        expires_days: int | None,
        create_user: bool,
        **options: Any,
    ) -> None:
        user = user_or_new(username) if create_user else user_named(username)
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        api_key, plaintext = api_key_create(user=user, name=name, expires_at=expires_at)
        expiry = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
        self.stderr.write(
            f"Created API key {api_key.name!r} (id {api_key.pk}) for {username}{expiry}. "
            "Copy it now: it cannot be shown again."
        )
        self.stdout.write(plaintext)
