"""Real processes for tests: the gateway, llama.cpp with SmolLM2, and a counting proxy.

Tests through Django's test client cannot see what a real server does (streams buffered into
one chunk, threads, process start-up), so tests that need the real thing start it here:

- `LiveGateway(env=...)`: the gateway under granian (`manage.py serve`) or under
  `manage.py runserver --noreload`, on a free loopback port, with a database of its own (a new
  PostgreSQL database when DATABASE_URL names one, else a SQLite file), migrated before start;
- `LlamaServer`: SmolLM2 under llama.cpp's OpenAI-compatible server (the same code as
  `manage.py runlocal`, from `llm_api.localmodel`);
- `CountingProxy(upstream)`: a streaming HTTP proxy that counts the requests it forwards, to
  prove whether a gateway called its upstream;
- `live_user` / `live_api_key`: a user and an API key made over HTTP, as a client would.

Every process runs in a process group of its own and is killed with its group at teardown,
also when the test fails. Fixtures: `llama_server` (session), `live_gateway_factory`. This
package is a pytest plugin (`pytest_plugins` in tests/conftest.py): import the helpers from
`tests.live`; the modules inside are `gateway`, `llama`, `proxy` and `processes`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from llm_api.localmodel import LocalModelError, gguf_path
from tests.live.gateway import (
    PASSWORD,
    LiveDatabase,
    LiveGateway,
    LiveUser,
    live_api_key,
    live_user,
)
from tests.live.llama import LlamaServer
from tests.live.processes import BASE_DIR, free_port, running
from tests.live.proxy import CountingProxy, Exchange

__all__ = [
    "BASE_DIR",
    "PASSWORD",
    "CountingProxy",
    "Exchange",
    "LiveDatabase",
    "LiveGateway",
    "LiveUser",
    "LlamaServer",
    "free_port",
    "live_api_key",
    "live_user",
    "skip_without_local_model",
]


def skip_without_local_model() -> None:
    """Skip the test when llama.cpp or the SmolLM2 package is not installed (fail under CI,
    where `make test` installs them: a missing install must not pass as a skip)."""
    missing = None
    try:
        gguf_path()
    except LocalModelError as error:
        missing = str(error)
    if missing is None and importlib.util.find_spec("llama_cpp") is None:
        missing = "llama-cpp-python is not installed: run `make install-dev`"
    if missing and os.environ.get("CI"):
        pytest.fail(f"The local model is required under CI: {missing}")
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """SmolLM2 under llama.cpp, started once per test session (skipped if not installed)."""
    skip_without_local_model()
    with LlamaServer.running(tmp_path_factory.mktemp("llama")) as server:
        yield server


@pytest.fixture
def live_gateway_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LiveGateway]]:
    """Return `start(env=None, server="granian") -> LiveGateway`; all stop after the test."""
    gateways: list[LiveGateway] = []

    def start(env: Mapping[str, str] | None = None, **options: Any) -> LiveGateway:
        gateway = LiveGateway(env, workdir=tmp_path_factory.mktemp("gateway"), **options)
        gateways.append(gateway)
        return gateway.start()

    try:
        yield start
    finally:
        for gateway in gateways:
            gateway.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Iterator[None] | pytest.TestReport:
    """Add the end of every running live process's output to a failing test's report."""
    report = yield
    if report.failed:
        for process in running:
            report.sections.append((f"{process.name} output (last lines)", process.log_tail(80)))
    return report
