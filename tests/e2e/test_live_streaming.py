"""Streams really stream, and a hung-up client stops the upstream and is charged once.

Against real server processes (the production server and runserver), because Django's test
client cannot tell a streamed response from a buffered one (DESIGN.md, "the streaming trap").
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.fake_upstream import wait_until
from tests.live import live_user

pytestmark = pytest.mark.e2e


@contextmanager
def stream_chat(gateway, key: str) -> Iterator[httpx.Response]:
    body = {
        "model": "openai/gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Count to ten"}],
    }
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers={"X-API-Key": key}) as r,
    ):
        yield r


def ledger_state(gateway, request_id: str) -> dict:
    """Read the usage entries and the hold of one request straight from the gateway's database."""
    code = (
        "import json; from billing.models import CreditHold, LedgerEntry; "
        f"rid = {request_id!r}; "
        "entries = list(LedgerEntry.objects.filter(request_id=rid).values('kind', 'amount', "
        "'completion_tokens', 'estimated')); "
        "hold = CreditHold.objects.filter(request_id=rid).values('amount', 'status').first(); "
        "print(json.dumps({'entries': entries, 'hold': hold}))"
    )
    return json.loads(gateway.manage("shell", "-c", code).strip().splitlines()[-1])


@pytest.mark.parametrize("server", ["granian", "runserver"])
def test_the_first_chunk_arrives_long_before_the_last(fake_upstream, live_gateway_factory, server):
    gateway = live_gateway_factory(env=fake_upstream.env(timeout=10), server=server)
    user = live_user(gateway.url, "streamer")
    fake_upstream.behave(chunks=[f"{n} " for n in range(1, 11)], chunk_delay=0.2)

    started = time.monotonic()
    arrivals, texts = [], []
    with stream_chat(gateway, user.key) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - started)
                choices = json.loads(line.removeprefix("data: "))["choices"]
                texts.append(choices[0]["delta"].get("content", "") if choices else "")
    total = time.monotonic() - started

    assert "".join(texts) == "1 2 3 4 5 6 7 8 9 10 "
    assert total >= 1.8, total  # the upstream paused 0.2 s before each of its ten chunks
    # The first chunk comes as soon as the upstream sends it (about 0.15 s here), also on the
    # server's first call: it loaded the views and SDKs at start, not during this request.
    assert arrivals[0] < 0.8, arrivals
    # Chunks arrive spread over the stream as the upstream sends them, not in one burst at the
    # end: buffered, all ten would arrive within milliseconds of each other.
    assert arrivals[-1] - arrivals[0] >= 1.2, arrivals
    assert arrivals[5] - arrivals[0] >= 0.6, arrivals


def test_a_client_that_hangs_up_stops_the_upstream_and_is_charged_once(
    fake_upstream, live_gateway_factory
):
    gateway = live_gateway_factory(env=fake_upstream.env(timeout=10))
    user = live_user(gateway.url, "quitter")
    fake_upstream.behave(chunks=[f"word{n} " for n in range(100)], chunk_delay=0.1)

    chunks = 0
    with stream_chat(gateway, user.key) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunks += 1
                if chunks == 2:
                    break  # hang up after two chunks: leaving the block closes the connection

    assert fake_upstream.stream_closed_early.wait(5), "the upstream stream was not closed"
    assert wait_until(lambda: ledger_state(gateway, request_id)["entries"], timeout=10)
    state = ledger_state(gateway, request_id)
    [entry] = state["entries"]
    assert entry["kind"] == "usage"
    assert entry["estimated"] is True
    assert 0 < -entry["amount"] <= state["hold"]["amount"]
    assert state["hold"]["status"] == "settled"
    assert entry["completion_tokens"] < 100
