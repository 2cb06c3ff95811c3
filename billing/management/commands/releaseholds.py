"""`manage.py releaseholds`: release credit holds past their expiry (a request that died).

The gateway also does this by itself, at most once a minute, while it takes new holds.
"""

from typing import Any

from django.core.management.base import BaseCommand

from billing.services import holds_expire


class Command(BaseCommand):
    help = "Release credit holds that are past their expiry."

    def handle(self, *args: Any, **options: Any) -> None:
        released = holds_expire()
        self.stdout.write(f"Released {released} expired hold(s).")
