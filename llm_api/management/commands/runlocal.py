"""`manage.py runlocal` (what `make run` calls): the gateway plus a local model.

Starts SmolLM2-135M-Instruct under llama.cpp's OpenAI-compatible server where INHOUSE_BASE_URL
points (http://127.0.0.1:8081/v1 by default), waits until it answers, then starts the production
server (the `serve` command's granian) in front of it. Ctrl-C stops both. If either one stops on
its own, the other is stopped too and the command fails with that one's exit code.
"""

import os
import signal
import sys
import time
from argparse import ArgumentParser
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from llm_api.localmodel import (
    MODEL_CONTEXT,
    LocalModelError,
    ServerProcess,
    gguf_path,
    http_status,
    is_loopback,
    llama_ready,
    start_llama_server,
)
from llm_api.management.commands.serve import add_server_arguments, server_argv


class Stop(Exception):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Ignore the next ones: `uv run` and a terminal can both deliver a Ctrl-C, and a second
    # Stop raised while stopping would leave the children running.
    _ignore_stop_signals()
    raise Stop(signal.Signals(signum).name)


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _local_url(host: str, port: int) -> str:
    """Return the URL that reaches a server listening on host:port from this machine."""
    address = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


class Command(BaseCommand):
    help = "Serve the gateway in front of a local llama.cpp server running SmolLM2 (make run)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_server_arguments(parser)
        parser.add_argument("--n-ctx", type=int, default=MODEL_CONTEXT, help="Model context size.")
        parser.add_argument(
            "--start-timeout", type=float, default=120.0, help="Seconds to wait for each server."
        )

    def _say(self, message: str, *, error: bool = False) -> None:
        """Write a line and flush it: under a supervisor or in a log file, stdout is buffered."""
        stream = self.stderr if error else self.stdout
        stream.write(message)
        stream.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        inhouse = urlsplit(settings.INHOUSE_BASE_URL)
        if not is_loopback(inhouse.hostname):
            self._say(
                f"INHOUSE_BASE_URL is {settings.INHOUSE_BASE_URL}, not this machine: "
                "no local model is started."
            )
            return self._serve_alone(options)
        models_url = f"{settings.INHOUSE_BASE_URL.rstrip('/')}/models"
        if http_status(models_url) == 200:
            self._say(f"A model server already answers at {settings.INHOUSE_BASE_URL}.")
            return self._serve_alone(options)
        for signum in STOP_SIGNALS:
            signal.signal(signum, _raise_stop)
        self._run_both(inhouse.hostname or "127.0.0.1", inhouse.port or 80, options)

    def _serve_alone(self, options: dict[str, Any]) -> None:
        serve_options = {key: options[key] for key in ("host", "port", "threads", "workers")}
        worker = self._start_worker([])  # batches: the queue's consumer beside the gateway
        try:
            call_command("serve", access_log=options["access_log"], **serve_options)
        finally:
            worker.stop()

    def _start_worker(self, children: list[ServerProcess]) -> ServerProcess:
        """Start the batch worker (`manage.py run_huey`), which runs /v1/batches' lines."""
        log_path = settings.DATA_DIR / "batch-worker.log"
        argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_huey"]
        worker = ServerProcess.start("batch worker", argv, env=dict(os.environ), log_path=log_path)
        children.append(worker)
        self._say(f"Started the batch worker: pid {worker.process.pid} (log: {log_path}).")
        return worker

    def _run_both(self, host: str, port: int, options: dict[str, Any]) -> None:
        children: list[ServerProcess] = []
        try:
            # Each child joins `children` before it is waited for, so a Ctrl-C during the
            # wait still stops it.
            self._start_model(host, port, options, children)
            self._start_gateway(options, children)
            self._start_worker(children)
            self._supervise(children)
        except Stop as stop:
            self._say(f"\n{stop} received: stopping.")
        except LocalModelError as error:
            raise CommandError(str(error)) from error
        finally:
            self._stop_all(children)

    def _start_model(
        self, host: str, port: int, options: dict[str, Any], children: list[ServerProcess]
    ) -> None:
        log_path = settings.DATA_DIR / "llama-server.log"
        self._say(
            f"Starting llama.cpp with {gguf_path().name} at {settings.INHOUSE_BASE_URL} "
            f"(log: {log_path})..."
        )
        server = start_llama_server(host=host, port=port, log_path=log_path, n_ctx=options["n_ctx"])
        children.append(server)
        seconds = llama_ready(server, settings.INHOUSE_BASE_URL, timeout=options["start_timeout"])
        self._say(
            self.style.SUCCESS(
                f"The local model is ready: pid {server.process.pid}, {seconds:.1f} s."
            )
        )

    def _start_gateway(self, options: dict[str, Any], children: list[ServerProcess]) -> None:
        base = _local_url(options["host"], options["port"])
        self._say(f"Starting the gateway on http://{options['host']}:{options['port']}/")
        env = {**os.environ, "INHOUSE_BASE_URL": settings.INHOUSE_BASE_URL}
        gateway = ServerProcess.start("gateway", server_argv(options), env=env)
        children.append(gateway)
        gateway.wait_until_ready(f"{base}/health", timeout=options["start_timeout"], ok=None)
        status = http_status(f"{base}/health")
        if status != 200:
            self._say(f"The gateway answers, but GET {base}/health says {status}.", error=True)
        self._say(
            self.style.SUCCESS(
                f"Ready: {base}/ (gateway pid {gateway.process.pid})  ·  "
                f"OpenAI base URL {base}/v1  ·  docs {base}/docs"
            )
        )
        self._say("Press Ctrl-C to stop both servers.")

    def _supervise(self, children: list[ServerProcess]) -> None:
        """Return never: wait for a stop signal, or fail when a child stops on its own."""
        while True:
            for child in children:
                if child.returncode is not None:
                    self._report_crash(child)
            time.sleep(0.25)

    def _report_crash(self, child: ServerProcess) -> None:
        self._say(
            f"The {child.name} {child.describe_exit()}: stopping the other server.", error=True
        )
        tail = child.log_tail()
        where = f"\nLast lines of {child.log_path}:\n{tail}" if tail else ""
        code = child.returncode or 0
        raise CommandError(
            f"The {child.name} {child.describe_exit()}.{where}", returncode=code if code > 0 else 1
        )

    def _stop_all(self, children: list[ServerProcess]) -> None:
        # A second Ctrl-C must not interrupt the stopping; `stop` escalates to SIGKILL itself.
        _ignore_stop_signals()
        for child in reversed(children):
            if child.returncode is None:
                self._say(f"Stopping the {child.name}...")
            child.stop()  # also whatever a crashed one left in its group (granian's workers)
