"""WSGI entry point, served by the production server (granian, WSGI mode) and runserver."""

import gc
import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()


def warm_up() -> None:
    """Load before the first request what it would otherwise wait for: the URLconf with every
    view, and the providers' SDKs and clients (measured: over a second on a cold process); then
    set the worker's interpreter switch interval (SERVER_SWITCH_INTERVAL)."""
    from django.conf import settings
    from django.urls import get_resolver

    from llm_api import pending
    from llm_api.providers import providers

    get_resolver().url_patterns  # noqa: B018 (importing the views is the point)
    providers.warm_up()
    # Writes a process that died left queued are retried by the next one to start.
    pending.resume()
    # What start-up loaded stays for the process's life: keep the garbage collector from
    # walking it again on every full collection (measured: 10 % of a request's CPU).
    gc.freeze()
    sys.setswitchinterval(settings.SERVER_SWITCH_INTERVAL)


warm_up()
