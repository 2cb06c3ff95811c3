"""`wire`, the gateway's own HTTP/1.1 client, against a raw TCP server that sends exactly the
bytes each test scripts, cut into TCP writes where the test says (TCP_NODELAY, a short pause
after every write, so each part is a separate read on the client's side).

Then the same failures through the OpenAI provider, and heartbeats during an upstream's silence
sent from the server's own thread (no pump thread) through the API.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from llm_api.providers import wire
from llm_api.providers.base import ChatRequest, Message, ProviderError
from llm_api.providers.openai import OpenAIProvider
from tests.llm_api.conftest import chat

PAUSE = 0.02  # after each scripted TCP write: enough for the client to read it on its own
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
LAST = b"0\r\n\r\n"
OK = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sized(body: bytes, *extra: bytes) -> bytes:
    """A whole Content-Length response."""
    head = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# --- the raw server ---------------------------------------------------------------------------


class Peer:
    """The server's side of one accepted connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.requests: list[bytes] = []
        self.client_closed = threading.Event()  # set once this side has read the client's EOF

    def request(self, timeout: float = 5.0) -> bytes | None:
        """Return the next whole request (head and Content-Length body); None at EOF."""
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.buffer:
            if not self._recv():
                self.client_closed.set()
                return None
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            if not self._recv():
                self.client_closed.set()
                return None
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        request = head + b"\r\n\r\n" + rest[:length]
        self.requests.append(request)
        return request

    def send(self, *parts: bytes, pause: float = PAUSE) -> None:
        """Send each part in a TCP write of its own, pausing after each."""
        for part in parts:
            self.sock.sendall(part)
            time.sleep(pause)

    def eof(self, timeout: float) -> bool:
        """Return whether the client closed the connection within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except OSError:
            pass  # reset: closed too
        self.client_closed.set()
        return True

    def hang_up(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _recv(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)


class RawServer:
    """A TCP server on 127.0.0.1 running `script(peer)` on each connection it accepts."""

    def __init__(self, script: Callable[[Peer], None]) -> None:
        self.script = script
        self.peers: list[Peer] = []
        self.failures: list[BaseException] = []
        self.stopping = threading.Event()
        raw = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peer = Peer(self.request)
                raw.peers.append(peer)
                try:
                    raw.script(peer)
                except OSError:
                    pass
                except BaseException as error:
                    raw.failures.append(error)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def accepted(self) -> int:
        return len(self.peers)

    def upstream(self, timeout: float = 2.0) -> wire.Upstream:
        return wire.Upstream(f"{self.url}/v1", timeout=timeout)

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        for peer in self.peers:
            peer.hang_up()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[Peer], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Callable[[Peer], None]) -> RawServer:
        servers.append(RawServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        assert not server.failures, server.failures


def answers(*responses: Sequence[bytes], pause: float = PAUSE) -> Callable[[Peer], None]:
    """A script answering the requests, on whatever connection they come, with `responses` in
    turn, each sent as its parts; it waits for the client's next request until it hangs up."""
    queue = list(responses)

    def script(peer: Peer) -> None:
        while queue and peer.request() is not None:
            peer.send(*queue.pop(0), pause=pause)
        peer.eof(5)

    return script


def post(upstream: wire.Upstream) -> wire.Response:
    return upstream.post("/chat/completions", b'{"stream":true}', {"X-Test": "1"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- 1. bodies, however they are cut ---------------------------------------------------------

A26 = b"abcdefghijklmnopqrstuvwxyz"  # 0x1a bytes
SPLIT_BODIES = {
    "the head's blank line": ([HEAD[:-3], HEAD[-3:] + chunk(b"hello") + LAST], b"hello"),
    "the size line, before its CRLF": ([HEAD + b"1", b"a\r\n" + A26 + b"\r\n" + LAST], A26),
    "the size line, between CR and LF": ([HEAD + b"1a\r", b"\n" + A26 + b"\r\n" + LAST], A26),
    "the chunk's data": ([HEAD + b"5\r\nhel", b"lo\r\n" + LAST], b"hello"),
    "between the data and its CRLF": ([HEAD + b"5\r\nhello", b"\r\n" + LAST], b"hello"),
    "inside the data's CRLF": ([HEAD + b"5\r\nhello\r", b"\n" + LAST], b"hello"),
    "the last chunk, after its 0": ([HEAD + chunk(b"hello") + b"0", b"\r\n\r\n"], b"hello"),
    "the last chunk, after 0 CRLF": ([HEAD + chunk(b"hello") + b"0\r\n", b"\r\n"], b"hello"),
    "the last chunk, inside its CRLF CRLF": (
        [HEAD + chunk(b"hello") + b"0\r\n\r", b"\n"],
        b"hello",
    ),
    "every chunk on its own": ([HEAD, chunk(b"hel"), chunk(b"lo"), chunk(b"!"), LAST], b"hello!"),
    "chunk extensions": (
        [HEAD + b'5;x=y\r\nhello\r\n6;name="q"\r\n world\r\n0;z\r\n\r\n'],
        b"hello world",
    ),
    "inside a chunk extension": ([HEAD + b"5;x", b"=y\r\nhello\r\n" + LAST], b"hello"),
    "a trailer": ([HEAD + chunk(b"hello") + b"0\r\nX-Trailer: 1\r\n", b"\r\n"], b"hello"),
    "upper-case hex sizes": ([HEAD + b"1A\r\n" + A26 + b"\r\n" + LAST], A26),
    "several parts of a Content-Length body": (
        [b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhel", b"lo wo", b"rld"],
        b"hello world",
    ),
    "a Content-Length head": (
        [b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 11\r\n\r", b"\nhello world"],
        b"hello world",
    ),
    "an empty Content-Length body": ([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], b""),
}


@pytest.mark.parametrize(("parts", "body"), SPLIT_BODIES.values(), ids=SPLIT_BODIES.keys())
def test_it_reads_the_exact_body_however_it_is_cut(raw_server, parts, body):
    server = raw_server(answers(parts, OK))
    upstream = server.upstream()
    response = post(upstream)
    assert response.status == 200
    assert response.read() == body
    # The body ended exactly where it should: the connection serves the next call.
    assert post(upstream).read() == b"ok"
    assert server.accepted == 1


def test_it_reads_a_chunked_body_sent_one_byte_at_a_time(raw_server):
    whole = HEAD + b"3;ext=1\r\nabc\r\n" + chunk(A26) + chunk(b"\r\n") + b"0\r\nX-T: 1\r\n\r\n"
    server = raw_server(answers([bytes([byte]) for byte in whole], OK, pause=0.001))
    upstream = server.upstream()
    assert post(upstream).read() == b"abc" + A26 + b"\r\n"
    assert post(upstream).read() == b"ok"
    assert server.accepted == 1


def test_it_reads_a_body_delimited_by_the_end_of_the_connection(raw_server):
    def script(peer: Peer) -> None:
        peer.request()
        peer.send(b"HTTP/1.1 200 OK\r\n\r\nhello", b" world")
        peer.hang_up()

    server = raw_server(script)
    assert post(server.upstream()).read() == b"hello world"


def test_it_sends_the_request_it_was_given(raw_server):
    server = raw_server(answers(OK))
    upstream = wire.Upstream(f"{server.url}/v1/", timeout=2.0)
    upstream.post("/chat/completions", b'{"a":1}', {"Authorization": "Bearer k"}).read()
    [request] = server.peers[0].requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Host: 127.0.0.1:%d" % server.port in lines
    assert b"Content-Length: 7" in lines
    assert b"Authorization: Bearer k" in lines
    assert body == b'{"a":1}'


# --- 2. events --------------------------------------------------------------------------------

EVENT_PARTS = [
    HEAD + chunk(b": keep-alive\n\n"),  # a comment: no event
    chunk(b"event: message\ndata: one\n\ndata: two\n\n"),  # two events in one chunk
    chunk(b"data: thr"),  # one event across three chunks
    chunk(b"ee\n"),
    chunk(b"\n"),
    chunk(b"id: 7\nretry: 10\ndata: line 1\ndata: line 2\n\n"),  # multi-line data
    chunk(b": keep-alive\n\ndata:no space\r\n\r\n"),  # CRLF lines, no space after the colon
    chunk(b'data: {"x": "a\\nb"}\n\ndata: [DONE]\n\n'),
    LAST,
]
EVENTS = [b"one", b"two", b"three", b"line 1\nline 2", b"no space", b'{"x": "a\\nb"}', b"[DONE]"]


def test_it_yields_each_event_once_in_order(raw_server):
    server = raw_server(answers(EVENT_PARTS, OK))
    upstream = server.upstream()
    response = post(upstream)
    assert list(response.events()) == EVENTS
    assert post(upstream).read() == b"ok"  # read to its end: the connection was kept
    assert server.accepted == 1


def test_it_yields_the_events_of_a_stream_sent_one_byte_at_a_time(raw_server):
    whole = b"".join(EVENT_PARTS)
    server = raw_server(answers([bytes([byte]) for byte in whole], pause=0.001))
    assert list(post(server.upstream()).events()) == EVENTS


def test_it_yields_the_events_of_a_body_delimited_by_the_end_of_the_connection(raw_server):
    def script(peer: Peer) -> None:
        peer.request()
        peer.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n: hi\n\ndata: one\n\n",
            b"data: t",
            b"wo\n\ndata: [DONE]\n\n",
        )
        peer.hang_up()

    server = raw_server(script)
    assert list(post(server.upstream()).events()) == [b"one", b"two", b"[DONE]"]


def test_it_yields_the_events_of_a_content_length_body(raw_server):
    body = b"data: one\n\n: c\n\ndata: two\n\n"
    server = raw_server(answers([sized(body)[:-9], sized(body)[-9:]]))
    assert list(post(server.upstream()).events()) == [b"one", b"two"]


# --- 3. ready ---------------------------------------------------------------------------------


def test_it_is_not_ready_while_the_upstream_is_silent(raw_server):
    server = raw_server(answers([HEAD + chunk(b"data: one\n\n")]))
    response = post(server.upstream())
    events = response.events()
    assert next(events) == b"one"
    started = time.monotonic()
    assert response.ready(0.3) is False
    assert 0.2 <= time.monotonic() - started < 3


def test_it_waits_for_a_silent_upstream_on_a_descriptor_past_1023(raw_server):
    """A server with a thousand streams open hands out descriptors past select()'s 1,023."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"needs 1,200 open files, the limit is {soft}")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        server = raw_server(answers([HEAD + chunk(b"data: one\n\n")]))
        response = post(server.upstream())
        assert response.sock.fileno() > 1023
        events = response.events()
        assert next(events) == b"one"
        started = time.monotonic()
        assert response.ready(0.3) is False
        assert 0.2 <= time.monotonic() - started < 3
    finally:
        for fd in filler:
            os.close(fd)


def test_it_is_ready_at_once_when_the_next_event_is_already_buffered(raw_server):
    go = threading.Event()

    def script(peer: Peer) -> None:
        peer.request()
        peer.send(HEAD + chunk(b"data: one\n\ndata: two\n\n"))  # one TCP write
        go.wait(5)
        peer.send(LAST)
        peer.eof(5)

    server = raw_server(script)
    response = post(server.upstream())
    events = response.events()
    assert next(events) == b"one"
    assert response.ready(0) is True  # "two" is in memory: no new data needed
    assert next(events) == b"two"
    assert response.ready(0.2) is False
    go.set()
    assert response.ready(2) is True
    assert list(events) == []


def test_it_is_ready_as_soon_as_the_next_event_arrives(raw_server):
    def script(peer: Peer) -> None:
        peer.request()
        peer.send(HEAD)
        time.sleep(0.3)
        peer.send(chunk(b"data: late\n\n") + LAST)
        peer.eof(5)

    server = raw_server(script)
    response = post(server.upstream())
    started = time.monotonic()
    assert response.ready(5) is True
    assert time.monotonic() - started < 3
    assert list(response.events()) == [b"late"]


def test_it_is_ready_when_the_body_is_complete(raw_server):
    server = raw_server(answers([HEAD + chunk(b"data: only\n\n") + LAST]))
    response = post(server.upstream())
    events = response.events()
    assert next(events) == b"only"
    assert response.ready(0) is True  # the end: reading it does not wait
    assert list(events) == []
    assert response.ready(0) is True


def test_it_is_not_ready_when_only_part_of_the_next_event_has_arrived(raw_server):
    go = threading.Event()

    def script(peer: Peer) -> None:
        peer.request()
        peer.send(HEAD + chunk(b"data: one\n\n"), chunk(b"data: tw"))
        go.wait(5)
        peer.send(chunk(b"o\n\n") + LAST)
        peer.eof(5)

    server = raw_server(script)
    response = post(server.upstream())
    events = response.events()
    assert next(events) == b"one"
    time.sleep(0.1)  # "data: tw" has arrived
    try:
        assert response.ready(0.2) is False
    finally:
        go.set()
        assert list(events) == [b"two"]


# --- 4. keep-alive ----------------------------------------------------------------------------


def test_it_reuses_one_connection_for_calls_read_to_their_end(raw_server):
    stream = [HEAD + chunk(b"data: one\n\n"), chunk(b"data: [DONE]\n\n") + LAST]
    server = raw_server(answers(OK, stream, OK))
    upstream = server.upstream()
    assert post(upstream).read() == b"ok"
    assert list(post(upstream).events()) == [b"one", b"[DONE]"]
    assert post(upstream).read() == b"ok"
    assert server.accepted == 1
    assert len(server.peers[0].requests) == 3


def test_it_cuts_a_connection_whose_answer_was_not_read_to_its_end(raw_server):
    seen_eof = threading.Event()
    go = threading.Event()

    def script(peer: Peer) -> None:
        if peer.request() is None:
            return
        if server.accepted > 1:
            peer.send(*OK)
            peer.eof(5)
            return
        peer.send(HEAD + chunk(b"data: one\n\n"))
        go.wait(5)
        peer.send(chunk(b"data: two\n\n"))
        if peer.eof(5):
            seen_eof.set()

    server = raw_server(script)
    upstream = server.upstream()
    response = post(upstream)
    events = response.events()
    assert next(events) == b"one"
    response.close()
    go.set()
    assert seen_eof.wait(3), "the server never saw the connection end"
    assert post(upstream).read() == b"ok"
    assert server.accepted == 2


def test_it_cuts_a_connection_whose_events_were_read_but_not_its_end(raw_server):
    go, seen_eof = threading.Event(), threading.Event()

    def script(peer: Peer) -> None:
        peer.request()
        peer.send(HEAD + chunk(b"data: one\n\n"))  # the end ("0\r\n\r\n") is not sent yet
        go.wait(5)
        peer.send(LAST)
        if peer.eof(3):
            seen_eof.set()

    server = raw_server(script)
    response = post(server.upstream())
    assert next(response.events()) == b"one"
    response.close()
    go.set()
    assert seen_eof.wait(3), "the server never saw the connection end"


@pytest.mark.parametrize(
    "answer",
    [
        sized(b"ok", b"Connection: close"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["Connection: close", "HTTP/1.0"],
)
def test_it_does_not_keep_a_connection_the_upstream_will_not_keep(raw_server, answer):
    server = raw_server(answers([answer], OK))
    upstream = server.upstream()
    assert post(upstream).read() == b"ok"
    assert server.peers[0].client_closed.wait(2)  # the client closed it at once
    assert post(upstream).read() == b"ok"
    assert server.accepted == 2


def test_it_opens_a_fresh_connection_when_the_upstream_closed_an_idle_one(raw_server):
    closed = threading.Event()

    def script(peer: Peer) -> None:
        if peer.request() is None:
            return
        peer.send(sized(b"ok"))  # kept alive, as far as the client knows
        peer.hang_up()
        closed.set()

    server = raw_server(script)
    upstream = server.upstream()
    assert post(upstream).read() == b"ok"
    assert closed.wait(2)
    time.sleep(0.05)  # the FIN has reached the client
    assert post(upstream).read() == b"ok"
    assert server.accepted == 2


# --- 5. errors --------------------------------------------------------------------------------


def test_it_raises_a_connect_error_when_the_connection_is_refused():
    upstream = wire.Upstream(f"http://127.0.0.1:{free_port()}/v1", timeout=2.0)
    with pytest.raises(wire.WireConnectError):
        post(upstream)


def test_it_times_out_when_the_upstream_never_answers(raw_server):
    server = raw_server(lambda peer: (peer.request(), peer.eof(5)))
    started = time.monotonic()
    with pytest.raises(wire.WireTimeout):
        post(server.upstream(timeout=0.3))
    assert 0.2 <= time.monotonic() - started < 3


def test_it_times_out_when_the_upstream_falls_silent_mid_body(raw_server):
    server = raw_server(answers([HEAD + chunk(b"data: one\n\n")]))
    response = post(server.upstream(timeout=0.3))
    with pytest.raises(wire.WireTimeout):
        response.read()


# What the upstream sends before it hangs up, and the events a reader gets before the error.
DROPS = {
    "inside a chunk's data": (HEAD + b"9\r\ndata:", []),
    "inside a size line": (HEAD + chunk(b"data: one\n\n") + b"1", [b"one"]),
    "before the last chunk": (HEAD + chunk(b"data: one\n\n"), [b"one"]),
    "inside the last chunk": (HEAD + chunk(b"data: one\n\n") + b"0\r\n", [b"one"]),
    "short of its Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ndata: one\n\n",
        [b"one"],
    ),
}


def dropping(data: bytes) -> Callable[[Peer], None]:
    def script(peer: Peer) -> None:
        peer.request()
        peer.send(data)
        peer.hang_up()

    return script


@pytest.mark.parametrize(("data", "events"), DROPS.values(), ids=DROPS.keys())
def test_it_raises_when_the_connection_drops_mid_body(raw_server, data, events):
    server = raw_server(dropping(data))
    with pytest.raises(wire.WireError) as raised:
        post(server.upstream()).read()
    assert not isinstance(raised.value, wire.WireTimeout)


@pytest.mark.parametrize(("data", "events"), DROPS.values(), ids=DROPS.keys())
def test_it_raises_when_the_connection_drops_mid_stream(raw_server, data, events):
    server = raw_server(dropping(data))
    seen = []
    with pytest.raises(wire.WireError) as raised:
        for payload in post(server.upstream()).events():
            seen.append(payload)
    assert not isinstance(raised.value, wire.WireTimeout)
    assert seen == events


def test_it_raises_when_the_connection_drops_inside_the_head(raw_server):
    server = raw_server(dropping(b"HTTP/1.1 200 OK\r\nContent-Le"))
    with pytest.raises(wire.WireError):
        post(server.upstream())


MALFORMED = {
    "a size that is not hex": HEAD + b"zz\r\nhello\r\n" + LAST,
    "an empty size line": HEAD + b"\r\nhello\r\n" + LAST,
    "a size after a good chunk": HEAD + chunk(b"hello") + b"5g\r\nhello\r\n" + LAST,
    "a status line without a status": b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
    "a status line without a space": b"HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_it_raises_on_a_malformed_answer(raw_server, data):
    server = raw_server(answers([data]))
    with pytest.raises(wire.WireError):
        post(server.upstream()).read()


def test_it_raises_when_the_headers_are_too_large(raw_server):
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    head = b"HTTP/1.1 200 OK\r\n" + line * 100  # 100 KB, and no end of the head yet
    server = raw_server(answers([head, b"Content-Length: 0\r\n\r\n"]))
    with pytest.raises(wire.WireError):
        post(server.upstream())


def test_it_raises_a_wire_error_on_a_malformed_content_length(raw_server):
    server = raw_server(answers([b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nxyz"]))
    with pytest.raises(wire.WireError):
        post(server.upstream())


def test_it_raises_when_a_chunk_is_longer_than_its_size(raw_server):
    server = raw_server(answers([HEAD + b"3\r\nabcd\r\n" + LAST]))
    with pytest.raises(wire.WireError):
        post(server.upstream()).read()


def test_it_skips_an_interim_1xx_answer(raw_server):
    server = raw_server(answers([b"HTTP/1.1 100 Continue\r\n\r\n" + sized(b"ok")]))
    response = post(server.upstream(timeout=0.5))
    assert response.status == 200
    assert response.read() == b"ok"


# --- through the provider ---------------------------------------------------------------------


def provider(url: str, timeout: float = 2.0) -> OpenAIProvider:
    options = {"api_key": "sk-x", "base_url": f"{url}/v1"}
    return OpenAIProvider("openai", options, timeout=timeout)


def request() -> ChatRequest:
    return ChatRequest(model="gpt-4o-mini", messages=[Message("user", "hi")], max_tokens=16)


def delta(text: str) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


def test_the_provider_streams_text_cut_anywhere_and_reuses_the_connection(raw_server):
    body = delta("Hel") + delta("lo") + delta(" world") + b"data: [DONE]\n\n"
    whole = HEAD + chunk(body[:30]) + chunk(body[30:]) + LAST
    server = raw_server(answers([bytes([byte]) for byte in whole], OK, pause=0.001))
    openai = provider(server.url)
    stream = openai.chat_stream(request())
    assert "".join(item.text for item in stream) == "Hello world"
    assert openai._upstream.post("/x", b"", {}).read() == b"ok"
    assert server.accepted == 1


@pytest.mark.parametrize("call", ["chat", "chat_stream"])
def test_the_provider_reports_a_refused_connection_as_unreachable(call):
    openai = provider(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderError) as raised:
        getattr(openai, call)(request())
    assert (raised.value.code, raised.value.status_code) == ("upstream_unreachable", 502)


@pytest.mark.parametrize("call", ["chat", "chat_stream"])
def test_the_provider_reports_an_upstream_that_never_answers_as_a_timeout(raw_server, call):
    server = raw_server(lambda peer: (peer.request(), peer.eof(5)))
    openai = provider(server.url, timeout=0.3)
    with pytest.raises(ProviderError) as raised:
        getattr(openai, call)(request())
    assert (raised.value.code, raised.value.status_code) == ("upstream_timeout", 504)


def test_the_provider_reports_a_stream_dropped_after_its_first_chunk(raw_server):
    server = raw_server(dropping(HEAD + chunk(delta("Hel")) + b"40\r\ndata: {"))
    stream = provider(server.url).chat_stream(request())
    chunks = iter(stream)
    assert next(chunks).text == "Hel"
    with pytest.raises(ProviderError) as raised:
        next(chunks)
    assert (raised.value.code, raised.value.status_code) == ("upstream_error", 502)


def test_the_provider_reports_an_answer_dropped_mid_body(raw_server):
    server = raw_server(dropping(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{"))
    with pytest.raises(ProviderError) as raised:
        provider(server.url).chat(request())
    assert raised.value.status_code == 502


# --- 6. heartbeats without a thread -----------------------------------------------------------


def stream_watching_threads(key_api) -> tuple[list[bytes], set[str]]:
    """Stream a chat through the API; return its pieces and every thread name seen meanwhile."""
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    assert response.status_code == 200
    pieces, names = [], set()
    for piece in response.streaming_content:
        pieces.append(piece)
        names.update(thread.name for thread in threading.enumerate())
    response.close()
    return pieces, names


def texts(pieces: list[bytes]) -> list[str]:
    found = []
    for piece in pieces:
        for line in piece.decode().splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices") or []:
                    found.append(choice["delta"].get("content") or "")
    return [text for text in found if text]


def test_it_sends_heartbeats_during_silence_without_a_pump_thread(
    key_api, upstream_providers, settings
):
    settings.STREAM_HEARTBEAT_SECONDS = 0.2
    upstream_providers.behave(chunks=["slow", " answer"], chunk_delay=0.45)
    pieces, names = stream_watching_threads(key_api)
    assert "llm-stream-pump" not in names
    assert "".join(texts(pieces)) == "slow answer"
    first = next(n for n, piece in enumerate(pieces) if b'"slow"' in piece)
    second = next(n for n, piece in enumerate(pieces) if b'" answer"' in piece)
    assert b": keep-alive\n\n" in pieces[first + 1 : second]
    assert pieces[-1].endswith(b"data: [DONE]\n\n")


def test_the_thread_watch_does_see_a_pump_thread(
    key_api, upstream_providers, settings, monkeypatch
):
    """The control of the test above: a stream that cannot tell is read by a pump thread,
    and watching the threads while streaming sees it."""
    settings.STREAM_HEARTBEAT_SECONDS = 0.2
    monkeypatch.setattr("llm_api.providers.openai.WireChatStream.ready", lambda self, t: None)
    upstream_providers.behave(chunks=["slow", " answer"], chunk_delay=0.1)
    pieces, names = stream_watching_threads(key_api)
    assert "llm-stream-pump" in names
    assert "".join(texts(pieces)) == "slow answer"
