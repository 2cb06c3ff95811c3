"""`manage.py serve`: the production server.

granian in WSGI mode with many blocking threads. A streaming answer holds its thread for as long
as it streams, so the thread count is the number of answers in flight (the target is 1,000
concurrent streams); on this machine this measured well ahead of ASGI (see the README's
"Serving" section and bench/serving.py).
"""

import os
import sys
from argparse import ArgumentParser
from typing import Any

from decouple import config
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.checks import shared_cache_errors

WSGI_TARGET = "project.wsgi:application"


def granian_argv(
    *, host: str, port: int, threads: int, workers: int = 1, access_log: bool = False
) -> list[str]:
    """Return the granian command line that serves the gateway."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        # Admit as many requests per worker as there are threads to run them, and let the
        # kernel queue a burst of new connections beyond that instead of refusing them.
        "--backpressure",
        str(threads),
        "--backlog",
        str(max(2048, threads * 2)),
        "--no-ws",
        "--access-log" if access_log else "--no-access-log",
        "--working-dir",
        str(settings.BASE_DIR),
        WSGI_TARGET,
    ]


def add_server_arguments(parser: ArgumentParser) -> None:
    """Add the options `serve` and `runlocal` share; each defaults to its variable."""
    parser.add_argument(
        "--host", default=config("HOST", default="127.0.0.1"), help="Address to listen on (HOST)."
    )
    parser.add_argument(
        "--port", type=int, default=config("PORT", default=8000, cast=int), help="Port (PORT)."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=config("SERVER_THREADS", default=1100, cast=int),
        help="Blocking threads per worker: requests (streams) served at once (SERVER_THREADS).",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=config("WEB_WORKERS", default=1, cast=int),
        help="Worker processes (WEB_WORKERS).",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        default=config("ACCESS_LOG", default=False, cast=bool),
        help="Log every request (ACCESS_LOG).",
    )


def server_argv(options: dict[str, Any]) -> list[str]:
    """Return the granian command line for parsed `add_server_arguments` options."""
    return granian_argv(
        host=options["host"],
        port=options["port"],
        threads=options["threads"],
        workers=options["workers"],
        access_log=options["access_log"],
    )


class Command(BaseCommand):
    help = "Run the production server (granian, WSGI, blocking threads) on HOST:PORT."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_server_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        # The system checks saw WEB_WORKERS; --workers can ask for more than that.
        errors = shared_cache_errors(workers=options["workers"])
        if errors:
            raise CommandError(f"{errors[0].msg} {errors[0].hint}")
        argv = server_argv(options)
        self.stdout.write(
            f"Serving on http://{options['host']}:{options['port']}/ with granian (WSGI, "
            f"{options['workers']} worker(s), {options['threads']} threads)."
        )
        self.stdout.flush()
        # Become granian: signals (Ctrl-C, SIGTERM) and the exit code are then granian's own.
        os.execv(argv[0], argv)  # noqa: S606 (our own interpreter and arguments)
