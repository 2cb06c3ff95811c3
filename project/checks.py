"""System checks: a production start without its secrets, or with a bad proxy list or throttle
rate, fails at start-up rather than on the first request (or, for a secret, on the first
restart, when a secret made up at start-up would change and void every JWT and API key)."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from rest_framework.settings import api_settings

from project.clients import bad_network_entries
from project.throttling import parse_rate, rate_setting

SECRETS = {
    "SECRET_KEY": ("project.E001", "signs sessions and JWTs"),
    "API_KEY_SECRET": ("project.E002", "keys the digests of API keys"),
}


@register()
def check_secrets(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """With DEBUG off, SECRET_KEY and API_KEY_SECRET come from the environment (or .env)."""
    if settings.DEBUG:
        return []
    return [
        Error(
            f"{name} is not set, and DEBUG is off: a production server needs its own.",
            hint=(
                f"Set {name} (it {purpose}) in the environment or .env to a long random value "
                'that stays the same across restarts, e.g. the output of `python -c "import '
                'secrets; print(secrets.token_urlsafe(50))"`. For local development set '
                "DEBUG=True, or use `make run`, which keeps generated ones in data/."
            ),
            id=check_id,
        )
        for name, (check_id, purpose) in SECRETS.items()
        if name in settings.UNSET_SECRETS
    ]


def network_list_errors(setting: str, check_id: str) -> list[Error]:
    """Return an error for each entry of the address-list `setting` that is neither an IP
    address nor a CIDR network."""
    return [
        Error(
            f"{setting} entry {entry!r} is not an IP address or network.",
            hint="List addresses or CIDR networks, comma-separated: 10.0.0.5,10.1.0.0/16.",
            id=check_id,
        )
        for entry in bad_network_entries(getattr(settings, setting))
    ]


@register()
def check_trusted_proxies(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every TRUSTED_PROXIES entry is an IP address or a CIDR network."""
    return network_list_errors("TRUSTED_PROXIES", "project.E003")


@register()
def check_throttle_rates(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every throttle rate reads as "number/period"."""
    errors = []
    for scope, rate in api_settings.DEFAULT_THROTTLE_RATES.items():
        try:
            parse_rate(rate)
        except ValueError as error:
            errors.append(Error(f"{rate_setting(scope)}: {error}.", id="project.E004"))
    return errors


@register()
def check_switch_interval(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """SERVER_SWITCH_INTERVAL is a number of seconds Python accepts, and a sensible one."""
    value = settings.SERVER_SWITCH_INTERVAL
    if 0 < value <= 1:
        return []
    return [
        Error(
            f"SERVER_SWITCH_INTERVAL is {value:g}: give seconds above 0 and at most 1.",
            hint="The default, 0.05, suits a server with many streams open; Python's own is 0.005.",
            id="project.E005",
        )
    ]
