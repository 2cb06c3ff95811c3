"""ASGI entry point, kept for completeness.

The gateway is served over WSGI (see the README, "Serving"): its streaming responses use sync
iterators, which Django's ASGI handler would buffer whole before sending the first byte.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_asgi_application()
