"""System checks for the operations settings: a METRICS_ALLOWED_IPS entry that is no address."""

from ipaddress import ip_network

from django.conf import settings
from django.core.checks import Error, register


@register()
def metrics_allowed_ips_check(app_configs, **kwargs) -> list[Error]:
    errors = []
    for entry in settings.METRICS_ALLOWED_IPS:
        try:
            ip_network(entry.strip(), strict=False)
        except ValueError:
            errors.append(
                Error(
                    f"METRICS_ALLOWED_IPS: {entry!r} is not an IP address or network.",
                    hint="Write addresses or CIDR networks, comma-separated: 10.0.0.0/8,::1",
                    id="operations.E001",
                )
            )
    return errors


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
