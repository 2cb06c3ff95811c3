"""The seed streams stream: on a live server, the first event arrives long before the last.

The Django test client cannot tell a streamed body from a buffered one (DESIGN.md, "the
streaming trap"); a real server and a slow upstream can.
"""

import time

import httpx2
import pytest

from billing.services import api_key_create
from tests.llm_api.seed_support import image_bytes

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("upstream_providers"),
]

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


@pytest.mark.parametrize("path", STREAMS)
def test_the_first_event_arrives_before_the_upstream_is_done(
    path, live_server, alice, fake_upstream, settings
):
    settings.TEXT_MODEL = "openai/gpt-4o-mini"
    settings.IMAGE_MODEL = "openai/gpt-4o"
    fake_upstream.behave(chunks=list("abcdef"), chunk_delay=0.5)
    key = api_key_create(user=alice, name="stream")[1]
    started = time.monotonic()
    with httpx2.stream(
        "POST", live_server.url + path, headers={"X-API-Key": key}, timeout=10, **STREAMS[path]
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_at = time.monotonic() - started
        rest = [line for line in lines if line.startswith("data: ")]
    total = time.monotonic() - started
    # Buffered, the first event would come with the last, 2.5 s of upstream pauses in.
    assert total - first_at >= 2.0, (first_at, total)
    assert first and rest
