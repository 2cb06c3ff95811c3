"""`make run` (manage.py runlocal) starts the batch worker beside the gateway and the local
model, supervised like them: a crash of the worker stops the rest and is reported by name."""

import os
import signal

import pytest

from llm_api.localmodel import http_status
from tests.e2e.test_runlocal import runlocal  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e


def test_a_crash_of_the_batch_worker_stops_the_servers_and_fails_naming_it(runlocal):  # noqa: F811
    worker = runlocal.child_pid(r"batch worker: pid (\d+)")
    os.kill(worker, signal.SIGKILL)

    assert runlocal.exit_code() == 1
    assert "The batch worker was killed by SIGKILL" in runlocal.output()
    assert http_status(f"{runlocal.gateway_url}/health") is None
