"""The live processes of a test run, and the ports they listen on."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from pathlib import Path

from llm_api.localmodel import ServerProcess

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# The processes running now: a failing test's report shows the end of each one's output.
running: list[ServerProcess] = []


def track(process: ServerProcess) -> None:
    """Count `process` among the running ones (see `stop`)."""
    running.append(process)
    # A run ended by SIGTERM (a CI timeout, `timeout`) would skip every teardown and leave
    # servers behind; as a KeyboardInterrupt it runs them, as Ctrl-C does.
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: ServerProcess) -> None:
    """Stop a tracked process and its whole process group."""
    with contextlib.suppress(ValueError):
        running.remove(process)
    process.stop(timeout=10)
