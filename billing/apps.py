from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing import (
            checks,  # noqa: F401  (registers the system checks)
            receivers,  # noqa: F401  (a saved or deleted user refreshes their cached keys)
        )
