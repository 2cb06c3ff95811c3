"""Streams really stream, and a hung-up client stops the upstream and is charged once.

Against real server processes (the production server and runserver), because Django's test
client cannot tell a streamed response from a buffered one (DESIGN.md, "the streaming trap").
Streaming is proved in lock-step with the fake upstream, not by timing chunks, so these tests
pass however busy the machine is (tests/fake_upstream/lockstep.py).
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.fake_upstream import wait_until
from tests.fake_upstream.lockstep import read_in_lockstep
from tests.live import live_user

pytestmark = pytest.mark.e2e


@contextmanager
def stream_chat(gateway, key: str, model: str = "openai/gpt-4o-mini") -> Iterator[httpx.Response]:
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "Count to ten"}],
    }
    # Generous: only there so that a broken stream fails instead of hanging the run. It is
    # longer than the fake's lock-step wait (30 s), after which a buffered body would come.
    with (
        httpx.Client(base_url=gateway.url, timeout=90) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers={"X-API-Key": key}) as r,
    ):
        yield r


def delta_text(line: str) -> str:
    """Return the text a `data: {chunk}` line of /v1/chat/completions carries ("" for none)."""
    if not line.startswith("data: {"):
        return ""
    choices = json.loads(line.removeprefix("data: ")).get("choices")
    return (choices[0]["delta"].get("content") or "") if choices else ""


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


# The gateway's read timeout on the fake: between pieces the fake is silent until we have read
# the last one, and in a failing run its own lock-step wait (30 s) should end first.
UPSTREAM_TIMEOUT = 60
# One model per wire the fake upstream streams: OpenAI's SSE, Gemini's SSE, Ollama's NDJSON.
MODELS = ["openai/gpt-4o-mini", "gemini/gemini-2.0-flash", "ollama/llama3"]


@pytest.mark.parametrize("server", ["granian", "runserver"])
def test_each_chunk_comes_through_before_the_upstream_sends_the_next(
    fake_upstream, live_gateway_factory, server
):
    """Lock-step, not a stopwatch: the fake upstream sends chunk k + 1 only after we have read
    chunk k through the gateway. A gateway (or server) that buffered would hold chunk 0 back
    until the upstream's answer ended, which it cannot do before we have read chunk 0: the
    upstream gives up after 30 s and ends the stream, and `read_in_lockstep` fails."""
    gateway = live_gateway_factory(env=fake_upstream.env(timeout=UPSTREAM_TIMEOUT), server=server)
    user = live_user(gateway.url, "streamer")
    pieces = [f"count{n:02d} " for n in range(1, 11)]  # words found nowhere else in a chunk

    for model in MODELS:
        gate = fake_upstream.behave(chunks=pieces, lockstep=True).gate
        with stream_chat(gateway, user.key, model) as response:
            assert response.status_code == 200, (model, response.read())
            lines = read_in_lockstep(response.iter_lines(), gate, pieces)

        events = [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]", (model, lines[-5:])
        texts = [delta_text(line) for line in events]
        assert "".join(texts) == "".join(pieces), (model, texts)
        assert gate.over.wait(10) and not gate.expired, (model, gate.describe())


def test_a_client_that_hangs_up_stops_the_upstream_and_is_charged_once(
    fake_upstream, live_gateway_factory
):
    # Heartbeats every 0.2 s while the upstream is silent: writing one is how the gateway
    # notices a client that hung up while the upstream had nothing to say.
    env = {**fake_upstream.env(timeout=UPSTREAM_TIMEOUT), "STREAM_HEARTBEAT_SECONDS": "0.2"}
    gateway = live_gateway_factory(env=env)
    user = live_user(gateway.url, "quitter")
    gate = fake_upstream.behave(chunks=[f"word{n} " for n in range(100)], lockstep=True).gate

    chunks = 0
    with stream_chat(gateway, user.key) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if delta_text(line):
                chunks += 1
                if chunks == 2:
                    break  # hang up after two chunks: leaving the block closes the connection
                gate.release()  # let the second chunk come; the third never is

    # The upstream, still waiting to send the third chunk, sees the gateway close its stream.
    assert fake_upstream.stream_closed_early.wait(30), gate.describe()
    assert gate.abandoned and not gate.expired and gate.sent == 2, gate.describe()
    assert wait_until(lambda: ledger_state(gateway, request_id)["entries"], timeout=30)
    state = ledger_state(gateway, request_id)
    [entry] = state["entries"]
    assert entry["kind"] == "usage"
    assert entry["estimated"] is True
    assert 0 < -entry["amount"] <= state["hold"]["amount"]
    assert state["hold"]["status"] == "settled"
    assert entry["completion_tokens"] < 100
