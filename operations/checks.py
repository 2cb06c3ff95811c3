"""System checks for the operations settings: a METRICS_ALLOWED_IPS entry that is no address."""

from django.conf import settings
from django.core.checks import Error, register

from project.checks import network_list_errors


@register()
def metrics_allowed_ips_check(app_configs, **kwargs) -> list[Error]:
    return network_list_errors("METRICS_ALLOWED_IPS", "operations.E001")


@register()
def log_format_check(app_configs, **kwargs) -> list[Error]:
    if settings.LOG_FORMAT in ("json", "text"):
        return []
    return [
        Error(
            f"LOG_FORMAT must be 'json' or 'text', not {settings.LOG_FORMAT!r}.",
            id="operations.E002",
        )
    ]
