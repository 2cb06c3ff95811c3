"""`manage.py runlocal` (what `make run` calls): both servers start, both stop, no crash hidden."""

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llm_api.localmodel import ServerProcess, http_status
from tests.live import BASE_DIR, free_port, skip_without_local_model
from tests.live.gateway import SECRETS

pytestmark = pytest.mark.e2e


@dataclass
class RunLocal:
    process: ServerProcess
    gateway_url: str
    model_url: str

    def output(self) -> str:
        return self.process.log_tail(200)

    def child_pid(self, pattern: str) -> int:
        match = re.search(pattern, self.output())
        assert match, self.output()
        return int(match.group(1))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output()}"
            time.sleep(0.1)

    def exit_code(self) -> int:
        return self.process.process.wait(30)


@pytest.fixture
def runlocal(tmp_path: Path) -> Iterator[RunLocal]:
    """`manage.py runlocal` on free ports, started and ready (its gateway answers /health)."""
    skip_without_local_model()
    port, model_port = free_port(), free_port()
    env = {
        **SECRETS,
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "INHOUSE_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
        "SERVER_THREADS": "8",
    }
    argv = [sys.executable, "manage.py", "runlocal"]
    process = ServerProcess.start(
        "runlocal", argv, env=env, log_path=tmp_path / "runlocal.log", cwd=BASE_DIR
    )
    run = RunLocal(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{model_port}/v1")
    try:
        process.wait_until_ready(f"{run.gateway_url}/health", timeout=120)
        run.wait_for("Press Ctrl-C")
        yield run
    finally:
        process.stop()
        # Its children live in sessions of their own: make sure none outlives a failed test.
        for pattern in (r"model is ready: pid (\d+)", r"gateway pid (\d+)"):
            if match := re.search(pattern, run.output()):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(match.group(1)), signal.SIGKILL)


def test_it_serves_the_gateway_in_front_of_the_local_model(runlocal):
    assert http_status(f"{runlocal.model_url}/models") == 200
    assert http_status(f"{runlocal.gateway_url}/health") == 200


def test_ctrl_c_stops_both_servers(runlocal):
    os.kill(runlocal.process.process.pid, signal.SIGINT)

    assert runlocal.exit_code() == 0, runlocal.output()
    assert http_status(f"{runlocal.gateway_url}/health") is None
    assert http_status(f"{runlocal.model_url}/models") is None


def test_a_crash_of_the_model_server_stops_the_gateway_and_fails_naming_it(runlocal):
    os.kill(runlocal.child_pid(r"model is ready: pid (\d+)"), signal.SIGKILL)

    assert runlocal.exit_code() == 1
    assert "The llama.cpp server was killed by SIGKILL" in runlocal.output()
    assert http_status(f"{runlocal.gateway_url}/health") is None


def _group_gone(pgid: int, timeout: float = 5) -> bool:
    """Return whether process group `pgid` empties within `timeout` s (SIGKILL takes a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_crash_of_the_gateway_stops_the_model_server_and_fails_with_its_code(runlocal):
    granian = runlocal.child_pid(r"gateway pid (\d+)")
    os.kill(granian, signal.SIGKILL)  # its main process only: its worker is left behind

    assert runlocal.exit_code() == 1
    assert "The gateway was killed by SIGKILL" in runlocal.output()
    assert http_status(f"{runlocal.model_url}/models") is None
    assert _group_gone(granian), "the gateway's worker outlived runlocal"
