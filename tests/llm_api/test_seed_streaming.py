"""The seed streams stream: on a live server, each event comes out while the upstream still
holds the next one back.

The Django test client cannot tell a streamed body from a buffered one (DESIGN.md, "the
streaming trap"); a real server and an upstream that streams in lock-step with the test can,
without timing anything (tests/fake_upstream/lockstep.py).
"""

import httpx2
import pytest

from billing.services import api_key_create
from tests.fake_upstream.lockstep import read_in_lockstep
from tests.llm_api.seed_support import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Hi"}]
STREAMS = {
    "/text_model/chat/stream": {"json": {"messages": HI}},
    "/image_model/chat/stream": {
        "files": {"image": ("photo.png", image_bytes("PNG"), "image/png")},
        "data": {"prompt": "What is it?"},
    },
    "/api/v1/generate": {"json": {"prompt": "Hi", "stream": True}},
    "/api/v1/chat": {"json": {"messages": HI, "stream": True}},
    "/api/v1/completions": {"json": {"prompt": "Hi", "stream": True}},
}
PIECES = [f"piece{k} " for k in range(6)]  # words found nowhere else in an event


@pytest.mark.parametrize("path", STREAMS)
def test_each_event_comes_out_before_the_upstream_sends_the_next(
    path, live_server, alice, fake_upstream, settings
):
    # A long read timeout: the upstream is silent between pieces until we have read one (and
    # in a failing run, its own lock-step wait of 30 s should end first).
    settings.LLM_PROVIDERS = fake_upstream.llm_providers(timeout=60)
    settings.TEXT_MODEL = "openai/gpt-4o-mini"
    settings.IMAGE_MODEL = "openai/gpt-4o"
    # The fake sends piece k + 1 only once we have read piece k from the server: buffered, the
    # first event could never come before the upstream gave up waiting (30 s), and this fails.
    gate = fake_upstream.behave(chunks=PIECES, lockstep=True).gate
    key = api_key_create(user=alice, name="stream")[1]
    with httpx2.stream(
        "POST", live_server.url + path, headers={"X-API-Key": key}, timeout=90, **STREAMS[path]
    ) as response:
        assert response.status_code == 200
        lines = read_in_lockstep(response.iter_lines(), gate, PIECES)

    events = [line for line in lines if line.startswith("data: ")]
    assert len(events) > len(PIECES)  # the pieces, then how the route ends its stream
    assert gate.over.wait(10) and not gate.expired, gate.describe()
