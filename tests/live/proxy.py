"""A streaming HTTP proxy that counts what it forwards: did the gateway call its upstream?"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

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
            received = bytearray()
            while piece := response.read1(65536):
                self.wfile.write(piece)
                self.wfile.flush()
                received += piece
            self.server.exchanged(
                Exchange(self.command, path, body, response.status, bytes(received))
            )
        finally:
            upstream.close()


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
        self.lock = threading.Lock()

    def record(self, method: str, path: str) -> None:
        with self.lock:
            self.requests[(method, path)] += 1

    def exchanged(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)


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

    def exchanges(self, method: str, path: str) -> list[Exchange]:
        """Return the completed `method path` exchanges, oldest first."""
        with self._server.lock:
            return [e for e in self._server.exchanges if (e.method, e.path) == (method, path)]
