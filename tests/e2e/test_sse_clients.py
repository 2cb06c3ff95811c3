"""Real SSE clients stream from every streaming route: `Accept: text/event-stream` is served.

httpx-sse (which sends `Accept: text/event-stream` and refuses any other content type), curl as
in the issue, and a browser chat front end: a page on an origin of its own that POSTs with
`fetch` and reads the body as a stream. Each proves streaming in lock-step with the fake
upstream (tests/fake_upstream/lockstep.py): piece k + 1 leaves the upstream only once the
client has read piece k, so a buffered answer cannot pass.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream.lockstep import read_in_lockstep
from tests.live import LiveGateway, LiveUser, live_user
from tests.llm_api.seed_support import image_bytes

pytestmark = pytest.mark.e2e

MODEL = "openai/gpt-4o-mini"
HI = [{"role": "user", "content": "Hi"}]
PIECES = ["alpha01 ", "bravo02 ", "charlie03 ", "delta04 "]
# Every route that streams: (path, JSON body); seed 001's image route takes a form (below).
STREAMING = {
    "/v1/chat/completions": {"model": MODEL, "messages": HI, "stream": True},
    "/v1/completions": {"model": MODEL, "prompt": "Hi", "stream": True},
    "/v1/responses": {"model": MODEL, "input": "Hi", "stream": True},
    "/api/chat/completions/?provider=openai": {
        "model": "gpt-4o-mini",
        "messages": HI,
        "stream": True,
    },
    "/text_model/chat/stream": {"messages": HI},
    "/api/v1/generate": {"model": MODEL, "prompt": "Hi", "stream": True},
    "/api/v1/chat": {"model": MODEL, "messages": HI, "stream": True},
    "/api/v1/completions": {"model": MODEL, "prompt": "Hi", "stream": True},
}
# Generous: only there so that a broken stream fails instead of hanging the run (longer than the
# fake's own lock-step wait of 30 s).
TIMEOUT = 90


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


class FrontEnd:
    """A chat front end's page on an origin of its own (another port): a tiny static server."""

    def __init__(self, folder: Path) -> None:
        handler = partial(QuietHandler, directory=str(folder))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def front_end(tmp_path_factory) -> Iterator[FrontEnd]:
    folder = tmp_path_factory.mktemp("front-end")
    (folder / "chat.html").write_text(CHAT_PAGE)
    page = FrontEnd(folder)
    yield page
    page.stop()


@pytest.fixture(scope="module")
def gateway(upstream, front_end, tmp_path_factory) -> Iterator[LiveGateway]:
    env = {
        **upstream.env(timeout=60),
        "TEXT_MODEL": MODEL,
        "IMAGE_MODEL": "openai/gpt-4o",
        "CORS_ALLOWED_ORIGINS": front_end.origin,
    }
    with LiveGateway(env, workdir=tmp_path_factory.mktemp("sse")) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def user(gateway) -> LiveUser:
    return live_user(gateway.url, "sse-client")


@pytest.mark.parametrize("path", STREAMING)
def test_httpx_sse_streams_every_streaming_route(gateway, upstream, user, path):
    gate = upstream.behave(chunks=PIECES, lockstep=True).gate
    with (
        httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as client,
        connect_sse(
            client, "POST", path, json=STREAMING[path], headers={"X-API-Key": user.key}
        ) as source,
    ):
        assert source.response.request.headers["accept"] == "text/event-stream"
        assert source.response.status_code == 200, source.response.read()
        read_in_lockstep((event.data for event in source.iter_sse()), gate, PIECES)
    assert gate.over.wait(10) and not gate.expired, gate.describe()


def test_httpx_sse_streams_the_image_route(gateway, upstream, user):
    gate = upstream.behave(chunks=PIECES, lockstep=True).gate
    with (
        httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as client,
        connect_sse(
            client,
            "POST",
            "/image_model/chat/stream",
            files={"image": ("cat.png", image_bytes("PNG"), "image/png")},
            data={"prompt": "What is this?"},
            headers={"X-API-Key": user.key},
        ) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        read_in_lockstep((event.data for event in source.iter_sse()), gate, PIECES)


def test_a_whole_answer_to_httpx_sse_is_a_406_that_says_how_to_stream(gateway, upstream, user):
    body = {"model": MODEL, "messages": HI}  # no "stream": true
    with (
        httpx.Client(base_url=gateway.url, timeout=TIMEOUT) as client,
        connect_sse(
            client, "POST", "/v1/chat/completions", json=body, headers={"X-API-Key": user.key}
        ) as source,
    ):
        assert source.response.status_code == 406
        error = source.response.read() and source.response.json()["error"]
    assert '"stream": true' in error["message"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_of_the_issue_streams(gateway, upstream, user):
    upstream.behave(chunks=PIECES)
    command = [
        "curl", "-sN", "-H", "Accept: text/event-stream", "-H", f"X-API-Key: {user.key}",
        "-H", "Content-Type: application/json",
        "-d", '{"messages":[{"role":"user","content":"Hi"}],"stream":true}',
        "-w", "\\n%{http_code} %{content_type}",
        f"{gateway.url}/v1/chat/completions",
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT).stdout
    *events, status = output.strip().splitlines()
    assert status.startswith("200 text/event-stream"), output
    assert "data: [DONE]" in events
    assert all(piece.strip() in output for piece in PIECES)


# --- a browser chat front end --------------------------------------------------------------

CHAT_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>chat</title>
<script>
// What a browser chat front end does: POST with fetch, read the body as a stream, and parse
// the SSE `data:` lines as they come.
window.pieces = [];
window.finished = null;
async function chat(url, key) {
  const response = await fetch(url, {
    method: "POST",
    headers: {"Accept": "text/event-stream", "Content-Type": "application/json", "X-API-Key": key},
    body: JSON.stringify({model: "openai/gpt-4o-mini", prompt: "Hi", stream: true}),
  });
  window.answerStatus = response.status;
  window.contentType = response.headers.get("content-type");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\\n\\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\\n")) {
        if (!line.startsWith("data: ")) continue;
        const event = JSON.parse(line.slice(6));
        if (event.response) window.pieces.push(event.response);
        if (event.done) window.finished = event;
      }
    }
  }
  return window.pieces.join("");
}
</script>
"""


def test_a_browser_front_end_reads_the_seed_003_stream_as_it_comes(
    browser, gateway, upstream, user, front_end
):
    gate = upstream.behave(chunks=PIECES, lockstep=True).gate
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{front_end.origin}/chat.html")
        page.evaluate(
            "([url, key]) => { window.answer = chat(url, key); }",
            [f"{gateway.url}/api/v1/generate", user.key],
        )
        for k in range(len(PIECES)):
            page.wait_for_function(f"window.pieces.length > {k}", timeout=TIMEOUT * 1000)
            assert gate.holding(k), f"piece {k} came but not while {k + 1} was held back"
            gate.release()
        text = page.evaluate("window.answer")
        assert text == "".join(PIECES)
        assert page.evaluate("window.answerStatus") == 200
        assert page.evaluate("window.contentType").startswith("text/event-stream")
        assert page.evaluate("window.finished.done") is True
    finally:
        context.close()
