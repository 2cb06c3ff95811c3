"""The fake upstream's lock-step streams, on each wire that streams: piece k + 1 goes out only
after the test let it, a wait is bounded, and a client that hangs up during one is noticed."""

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.lockstep import read_in_lockstep

PIECES = [f"piece{k} " for k in range(5)]
HI = [{"role": "user", "content": "Hi"}]
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
# (path, body, the last line of a complete body)
STREAMS = {
    "openai-chat": (
        "/v1/chat/completions",
        {"model": "m", "stream": True, "messages": HI},
        "data: [DONE]",
    ),
    "openai-completions": (
        "/v1/completions",
        {"model": "m", "stream": True, "prompt": "Hi"},
        "data: [DONE]",
    ),
    "gemini": ("/v1beta/models/g:streamGenerateContent?alt=sse", GEMINI_BODY, '"STOP"'),
    "ollama": ("/api/chat", {"model": "m", "messages": HI}, '"done": true'),
}


def stream(fake: FakeUpstream, wire: str, timeout: float = 30) -> httpx.Response:
    path, body, _ = STREAMS[wire]
    client = httpx.Client(timeout=timeout)
    request = client.build_request("POST", fake.url + path, json=body)
    return client.send(request, stream=True)


@pytest.mark.parametrize("wire", STREAMS)
def test_each_piece_waits_for_the_test_to_have_seen_the_one_before(fake_upstream, wire):
    gate = fake_upstream.behave(chunks=PIECES, lockstep=True).gate
    response = stream(fake_upstream, wire)
    try:
        # It reads to the end: what follows the last piece waits for the last release.
        lines = [line for line in read_in_lockstep(response.iter_lines(), gate, PIECES) if line]
    finally:
        response.close()

    assert STREAMS[wire][2] in lines[-1], lines
    assert gate.over.wait(5) and not gate.expired and not gate.abandoned
    assert gate.sent == len(PIECES) + 1


def test_the_end_of_the_stream_waits_for_a_release_too(fake_upstream):
    gate = fake_upstream.behave(chunks=["only "], lockstep=True).gate
    response = stream(fake_upstream, "openai-chat")
    lines = response.iter_lines()
    try:
        assert "only" in next(line for line in lines if line)
        assert gate.holding(0), gate.describe()
        gate.release()
        rest = [line for line in lines if line]
    finally:
        response.close()

    assert rest[-1] == "data: [DONE]"


def test_a_wait_that_lasts_too_long_ends_the_stream_as_an_error(fake_upstream):
    gate = fake_upstream.behave(chunks=PIECES, lockstep=True, lockstep_timeout=0.2).gate
    response = stream(fake_upstream, "ollama")
    lines = response.iter_lines()
    try:
        assert "piece0" in next(lines)
        with pytest.raises(httpx.RemoteProtocolError):  # the body ended before its end
            list(lines)
    finally:
        response.close()

    # The fake marks its stream over once its handler has dropped the connection, which the
    # client may see first.
    assert gate.over.wait(timeout=5)
    assert gate.expired
    assert gate.sent == 1
    assert not fake_upstream.stream_closed_early.is_set()


def test_a_client_that_hangs_up_during_a_wait_is_noticed(fake_upstream):
    gate = fake_upstream.behave(chunks=PIECES, lockstep=True).gate
    response = stream(fake_upstream, "gemini")
    assert "piece0" in next(line for line in response.iter_lines() if line)
    response.close()

    assert fake_upstream.stream_closed_early.wait(10)
    assert gate.over.wait(timeout=5)
    assert gate.abandoned and not gate.expired
    assert gate.sent == 1


def test_an_open_gate_lets_everything_through(fake_upstream):
    gate = fake_upstream.behave(chunks=PIECES, lockstep=True).gate
    gate.open()
    response = stream(fake_upstream, "openai-completions")
    try:
        body = response.read().decode()
    finally:
        response.close()

    assert all(piece.strip() in body for piece in PIECES)
    assert body.endswith("data: [DONE]\n\n")
