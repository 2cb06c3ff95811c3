from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        from operations import (
            admin_site,  # noqa: F401  (adds the dashboard to the admin)
            checks,  # noqa: F401  (registers the system checks)
            metrics,
        )

        metrics.forget_dead_processes()
