"""`manage.py grantcredits USERNAME AMOUNT [--note TEXT]`: add (or, if negative, deduct) credits.

AMOUNT is in credits, with up to six decimal places. A deduction takes only what is available
(the balance minus credits held by calls in progress); the balance never goes below zero.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.management.commands._users import user_named
from billing.money import format_credits, to_micro
from billing.selectors import account_balance
from billing.services import credits_grant
from project.exceptions import ServiceError


class Command(BaseCommand):
    help = "Grant credits to a user (a negative AMOUNT deducts, never below zero)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("amount", help="Credits, e.g. 100 or 2.5; negative deducts.")
        parser.add_argument("--note", default="", help="Why, recorded in the ledger entry.")

    def handle(self, *args: Any, username: str, amount: str, note: str, **options: Any) -> None:
        user = user_named(username)
        try:
            micro = to_micro(amount)
            entry = credits_grant(user=user, amount=micro, note=note or "grantcredits")
        except ServiceError as error:
            raise CommandError(error.message) from error
        balance = account_balance(user=user)["balance"]
        verb = "Granted" if entry.amount > 0 else "Deducted"
        self.stdout.write(
            f"{verb} {format_credits(abs(entry.amount))} credits "
            f"{'to' if entry.amount > 0 else 'from'} {username}; "
            f"the balance is now {format_credits(balance)}."
        )
