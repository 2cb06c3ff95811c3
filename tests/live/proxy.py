"""A streaming HTTP proxy that counts what it forwards: did the gateway call its upstream?

It can also hold a stream back after its first piece of text until the test has seen that
piece come out of the gateway: the proof, without a stopwatch, that a gateway in front of a
real model streams (`CountingProxy.hold_after_first_piece`).
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.fake_upstream.lockstep import Gate

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}


class _ProxyHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection and a body that ends when the connection closes,
    # so a streamed answer can be passed on piece by piece without re-chunking it.
    protocol_version = "HTTP/1.0"
    server: _ProxyServer

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        path = urlsplit(self.path).path
        self.server.record(self.command, path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=300)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP | {"server", "date"}:
                    self.send_header(name, value)
            self.end_headers()
            gate = None
            if "text/event-stream" in (response.getheader("Content-Type") or ""):
                gate = self.server.take_hold(self.command, path)
            received = self._pass_on(response, gate) if gate else self._pass_all(response)
            self.server.exchanged(
                Exchange(self.command, path, body, response.status, bytes(received))
            )
        finally:
            upstream.close()

    def _pass_all(self, response: http.client.HTTPResponse) -> bytearray:
        """Pass the answer on as it comes; return it."""
        received = bytearray()
        while piece := response.read1(65536):
            self.wfile.write(piece)
            self.wfile.flush()
            received += piece
        return received

    def _pass_on(self, response: http.client.HTTPResponse, gate: Gate) -> bytearray:
        """Pass an SSE answer on event by event, in two lock-step steps: up to and with its
        first event carrying text (step 0), then, once the test released the gate, the rest
        (step 1). If the release does not come in time, end the answer there. Return what was
        received from the upstream."""
        received = bytearray()
        first_sent = released = False
        try:
            for event in _sse_events(response, received):
                if first_sent and not released:
                    if not gate.wait_turn(1, hung_up=self._peer_closed):
                        return received
                    released = True
                if not first_sent and _has_text(event):
                    gate.wait_turn(0)  # at once: counts the first piece as sent
                    first_sent = True
                self.wfile.write(event)
                self.wfile.flush()
            if first_sent and not released:  # the end of the answer is news too
                gate.wait_turn(1, hung_up=self._peer_closed)
        finally:
            gate.finished()
        return received

    def _peer_closed(self) -> bool:
        """Return True when the gateway hung up (it sends nothing while it waits)."""
        if not select.select([self.connection], [], [], 0)[0]:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def _sse_events(response: http.client.HTTPResponse, received: bytearray) -> Iterator[bytes]:
    """Yield an SSE body's events as they arrive (each with its blank line), then any rest;
    everything read is also added to `received`."""
    pending = b""
    while piece := response.read1(65536):
        received += piece
        pending += piece
        while match := _EVENT_END.search(pending):
            yield pending[: match.end()]
            pending = pending[match.end() :]
    if pending:
        yield pending


def _has_text(event: bytes) -> bool:
    """Return True for an OpenAI chat chunk event with some text in its first choice."""
    for line in event.splitlines():
        if line.startswith(b"data: {"):
            try:
                choices = json.loads(line[len(b"data: ") :]).get("choices") or []
            except ValueError:
                return False
            return bool(choices and (choices[0].get("delta") or {}).get("content"))
    return False


@dataclass(frozen=True)
class Exchange:
    """One request the proxy forwarded and the whole answer it passed back."""

    method: str
    path: str
    request_body: bytes
    status: int
    response_body: bytes


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.requests: Counter[tuple[str, str]] = Counter()
        self.exchanges: list[Exchange] = []
        self.holds: dict[tuple[str, str], Gate] = {}
        self.lock = threading.Lock()

    def record(self, method: str, path: str) -> None:
        with self.lock:
            self.requests[(method, path)] += 1

    def exchanged(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def take_hold(self, method: str, path: str) -> Gate | None:
        with self.lock:
            return self.holds.pop((method, path), None)


class CountingProxy:
    """Forward every request to `upstream` (streams pass through as they come), counting them.

    Point a gateway at `proxy.url_for(path)` instead of the upstream and read
    `proxy.count("POST", "/v1/chat/completions")` to know how often it was called, or
    `proxy.exchanges(...)` for what was asked and answered (e.g. the usage the upstream
    reported).
    """

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._server = _ProxyServer((parts.hostname or "127.0.0.1", parts.port or 80))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url_for(self, path: str) -> str:
        """Return the proxy's URL for an upstream path, e.g. "/v1"."""
        return f"{self.url}{path}"

    def count(self, method: str, path: str) -> int:
        """Return how many `method path` requests arrived so far (counted as they arrive)."""
        with self._server.lock:
            return self._server.requests[(method, path)]

    def hold_after_first_piece(self, method: str, path: str, timeout: float = 30.0) -> Gate:
        """Hold the next streamed (SSE) answer to `method path` back after its first event
        carrying text, until the test calls `release()` on the returned gate.

        When the test has that first piece in hand through the gateway, `gate.holding(0)`
        must be true: the gateway got nothing after it yet, so it passed the piece on without
        waiting for the rest. A gateway that buffered never hands the piece over while it is
        held; after `timeout` seconds the proxy ends the answer there (`gate.expired`).
        """
        gate = Gate(timeout)
        with self._server.lock:
            self._server.holds[(method, path)] = gate
        return gate

    def exchanges(self, method: str, path: str) -> list[Exchange]:
        """Return the completed `method path` exchanges, oldest first."""
        with self._server.lock:
            return [e for e in self._server.exchanges if (e.method, e.path) == (method, path)]
