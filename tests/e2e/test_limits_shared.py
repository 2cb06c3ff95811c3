"""Rate limits shared by two live gateway processes through Redis.

Two real servers (granian, `manage.py serve`) share one database, one Redis (REDIS_URL) and one
CACHE_KEY_PREFIX, as the workers of one deployment do; every test sends half of its calls to
each. A limit that each process counted on its own would let twice the limit through.

The streams share one lock-step gate of the fake upstream: each sends its first piece at once
and the rest only when the test opens the gate, so every admitted stream is still in flight
while the others are refused, whatever the speed of the machine.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.live import LiveDatabase, LiveGateway, LiveUser, live_user

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"), reason="needs Redis shared by the gateways: set REDIS_URL"
    ),
]

MODEL = "openai/gpt-4o-mini"
HI = [{"role": "user", "content": "Hi"}]
LEASE_SECONDS = 1  # how long a place in flight outlives a process that died holding it


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def shared_env(upstream: FakeUpstream) -> dict[str, str]:
    """The environment of every gateway of a test: the same keys in the same Redis."""
    return {
        **upstream.env(),
        "CACHE_KEY_PREFIX": f"limits-{uuid.uuid4().hex[:8]}",
        "CONCURRENCY_LEASE_SECONDS": str(LEASE_SECONDS),
    }


def beside(gateway: LiveGateway, env: dict[str, str], workdir: Path) -> LiveGateway:
    """Return (not started) another gateway on the same database and Redis keys as `gateway`."""
    other = LiveGateway(env, workdir=workdir)
    assert gateway.database is not None
    other.database = LiveDatabase(url=gateway.database.url)  # the same one: not dropped by it
    return other


@pytest.fixture(scope="module")
def gateways(
    shared_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LiveGateway]]:
    first = LiveGateway(shared_env, workdir=tmp_path_factory.mktemp("first"))
    started = [first]
    try:
        first.start()
        second = beside(first, shared_env, tmp_path_factory.mktemp("second"))
        started.append(second)
        second.start()
        yield started
    finally:
        for gateway in reversed(started):
            gateway.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: FakeUpstream) -> None:
    upstream.reset()


def limited_user(gateway: LiveGateway, **limits: int) -> LiveUser:
    """Return a new user whose one API key has `limits`, set over HTTP as its owner would."""
    user = live_user(gateway.url, f"limits-{uuid.uuid4().hex[:10]}")
    with httpx.Client(base_url=gateway.url, headers=user.jwt_headers, timeout=30) as client:
        [key] = client.get("/api/keys/").json()
        changed = client.patch(f"/api/keys/{key['id']}/", json=limits)
    assert changed.status_code == 200, changed.text
    return user


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(0..count-1) in as many threads released at once; return their results."""
    barrier = threading.Barrier(count)
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(lambda n=n: (barrier.wait(), work(n))[1]) for n in range(count)]
        return [future.result(timeout=60) for future in futures]


@dataclass
class Stream:
    """One streamed chat call read on a thread of its own: `answered` is set once its status
    is known and, for a 200, its first piece has come; `done` once it has ended."""

    url: str
    key: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    error: BaseException | None = None
    answered: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        payload = {"model": MODEL, "messages": HI, "stream": True}
        try:
            with (
                httpx.Client(base_url=self.url, timeout=60) as client,
                client.stream(
                    "POST", "/v1/chat/completions", json=payload, headers={"X-API-Key": self.key}
                ) as response,
            ):
                self.status, self.headers = response.status_code, dict(response.headers)
                for line in response.iter_lines():
                    self.body += line + "\n"
                    if line.startswith("data: "):
                        self.answered.set()
        except BaseException as error:  # reported by the test, not lost on the thread
            self.error = error
        finally:
            self.answered.set()
            self.done.set()


def wait_all(events: list[threading.Event], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for event in events:
        assert event.wait(max(0.0, deadline - time.monotonic())), "timed out"


def chat(url: str, key: str, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": HI, **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, headers={"X-API-Key": key})


# --- the tests ----------------------------------------------------------------------------------


def test_fifty_calls_on_two_processes_get_exactly_ten_in_flight(gateways, upstream):
    user = limited_user(gateways[0], concurrency_limit=10, rpm_limit=1000, tpm_limit=1_000_000)
    gate = upstream.behave(chunks=["one", "two"], lockstep=True).gate
    streams = [Stream(gateways[n % 2].url, user.key) for n in range(50)]

    with ThreadPoolExecutor(max_workers=50) as pool:
        for stream in streams:
            pool.submit(stream.run)
        wait_all([stream.answered for stream in streams])
        statuses = sorted(stream.status for stream in streams)
        reached = len(upstream.requests)
        gate.open()
        wait_all([stream.done for stream in streams])

    assert [stream.error for stream in streams if stream.error] == []
    assert statuses == [200] * 10 + [429] * 40
    assert reached == 10  # exactly ten at once upstream, though each process could take ten
    for stream in streams:
        if stream.status == 200:
            assert stream.body.endswith("data: [DONE]\n\n") or "data: [DONE]" in stream.body
            assert stream.headers["x-ratelimit-limit-concurrency"] == "10"
            continue
        assert json.loads(stream.body)["error"]["code"] == "concurrency_limit_exceeded"
        assert stream.headers["retry-after"] == "1"
        assert stream.headers["x-ratelimit-limit-requests"] == "1000"
        assert stream.headers["x-ratelimit-remaining-concurrency"] == "0"
    # Every place came back, in both processes' eyes.
    for gateway in gateways:
        again = chat(gateway.url, user.key)
        assert again.status_code == 200, again.text
        assert again.headers["x-ratelimit-remaining-concurrency"] == "9"


def test_a_requests_per_minute_limit_is_exact_across_two_processes(gateways, upstream):
    user = limited_user(gateways[0], rpm_limit=7)

    responses = in_threads(20, lambda n: chat(gateways[n % 2].url, user.key))

    ok = [response for response in responses if response.status_code == 200]
    refused = [response for response in responses if response.status_code == 429]
    assert (len(ok), len(refused)) == (7, 13)
    assert len(upstream.requests) == 7
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(7))
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_per_minute_are_shared_and_corrected_across_two_processes(gateways, upstream):
    # A call counts 46 tokens at admission ("Hi": 6, max_tokens: 40) and 18 once settled.
    user = limited_user(gateways[0], tpm_limit=70)
    first = chat(gateways[0].url, user.key, max_tokens=40)
    second = chat(gateways[1].url, user.key, max_tokens=40)  # 18 + 46: the correction counts
    third = chat(gateways[0].url, user.key, max_tokens=40)  # 18 + 18 + 46 = 82: over
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert second.headers["x-ratelimit-remaining-tokens"] == str(70 - 18 - 46)
    assert third.headers["x-ratelimit-remaining-tokens"] == str(70 - 36)


def test_a_killed_gateways_places_come_free_within_their_lease(
    gateways, shared_env, upstream, tmp_path
):
    user = limited_user(gateways[0], concurrency_limit=1)
    doomed = beside(gateways[0], shared_env, tmp_path)
    try:
        doomed.start()
        gate = upstream.behave(chunks=["one", "two"], lockstep=True).gate
        stream = Stream(doomed.url, user.key)
        threading.Thread(target=stream.run, daemon=True).start()
        wait_all([stream.answered])
        assert stream.status == 200, stream.body
        time.sleep(2.5 * LEASE_SECONDS)  # past two leases: the doomed keeper renews its place
        assert chat(gateways[1].url, user.key).status_code == 429

        assert doomed.process is not None
        os.killpg(doomed.process.process.pid, signal.SIGKILL)
        gate.open()
        deadline = time.monotonic() + LEASE_SECONDS + 2
        while (answer := chat(gateways[1].url, user.key)).status_code == 429:
            assert time.monotonic() < deadline, "the killed process's place never came free"
            time.sleep(0.1)
        assert answer.status_code == 200, answer.text
    finally:
        doomed.stop()
