"""The fake upstream's HTTP server: a real socket, one thread per connection.

Streams use chunked transfer encoding and flush every event, so a connection dropped mid-body
is an error the client can see, and a client that hangs up is noticed (`stream_closed_early`),
also while a lock-step stream waits for the test's go-ahead.
"""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fake_upstream.lockstep import Gate
from tests.fake_upstream.wires import (
    Behaviour,
    GeminiWire,
    JsonReply,
    OllamaWire,
    OpenAIWire,
    RawReply,
    RecordedRequest,
    Reply,
    StreamReply,
)

GEMINI_CALL = re.compile(r"^/(?P<version>v1\w*)/models/(?P<model>[^:/]+):(?P<method>\w+)$")
GEMINI_METHODS = {"generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents"}


class FakeUpstream:
    """The server: start it, `behave(...)`, call it, read `requests`, stop it."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.behaviour = Behaviour()
        self.stream_closed_early = threading.Event()
        self.openai, self.gemini, self.ollama = OpenAIWire(), GeminiWire(), OllamaWire()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        # A short poll interval: stopping waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def last(self) -> RecordedRequest:
        """Return the most recent request."""
        return self.requests[-1]

    def behave(self, **knobs: Any) -> Behaviour:
        """Answer the next calls this way (see `Behaviour` for the knobs); unset knobs reset."""
        self.behaviour = Behaviour(**knobs)
        return self.behaviour

    def reset(self) -> None:
        self.requests.clear()
        self.behaviour = Behaviour()
        self.stream_closed_early.clear()

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def env(self, timeout: float | None = None) -> dict[str, str]:
        """Return the environment that points a gateway subprocess's providers here."""
        env = {
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "OPENAI_API_KEY": "sk-fake-openai-key",
            "GEMINI_BASE_URL": self.url,
            "GEMINI_API_KEY": "fake-gemini-key",
            "OLLAMA_HOST": self.url,
            "INHOUSE_BASE_URL": f"{self.url}/v1",
        }
        return {**env, "LLM_TIMEOUT": str(timeout)} if timeout else env

    def llm_providers(self, timeout: float = 5.0, **extra: Any) -> dict[str, dict[str, Any]]:
        """Return an LLM_PROVIDERS setting with all four providers pointed here; `extra`
        options (e.g. gap_timeout=0.3) go to every provider."""
        env, module = self.env(), "llm_api.providers"

        def entry(backend: str, **options: Any) -> dict[str, Any]:
            options = {**options, "timeout": timeout, **extra}
            return {"BACKEND": f"{module}.{backend}", "OPTIONS": options}

        return {
            "openai": entry(
                "openai.OpenAIProvider",
                api_key=env["OPENAI_API_KEY"],
                base_url=env["OPENAI_BASE_URL"],
            ),
            "gemini": entry(
                "gemini.GeminiProvider",
                api_key=env["GEMINI_API_KEY"],
                base_url=env["GEMINI_BASE_URL"],
            ),
            "ollama": entry("ollama.OllamaProvider", host=env["OLLAMA_HOST"]),
            "inhouse": entry(
                "inhouse.InhouseProvider", api_key="", base_url=env["INHOUSE_BASE_URL"]
            ),
        }

    def route(self, request: RecordedRequest) -> tuple[Any, Any, tuple[Any, ...]]:
        """Return (wire, handler, args) for a request, or (wire, None, ()) when unknown."""
        method, path, body = request.method, request.path, request.body
        match = GEMINI_CALL.match(path)
        if match and match["method"] in GEMINI_METHODS and method == "POST":
            return self.gemini, getattr(self.gemini, match["method"]), (body, match["model"])
        if method == "GET" and re.fullmatch(r"/v1\w*/models", path):
            is_gemini = "x-goog-api-key" in request.headers or path != "/v1/models"
            wire = self.gemini if is_gemini else self.openai
            return wire, wire.models, (body,)
        routes = {
            ("POST", "/v1/chat/completions"): (self.openai, self.openai.chat),
            ("POST", "/v1/completions"): (self.openai, self.openai.completions),
            ("POST", "/v1/embeddings"): (self.openai, self.openai.embeddings),
            ("POST", "/api/chat"): (self.ollama, self.ollama.chat),
            ("POST", "/api/embed"): (self.ollama, self.ollama.embed),
            ("GET", "/api/tags"): (self.ollama, self.ollama.tags),
        }
        wire, handler = routes.get((method, path), (self.openai, None))
        return wire, handler, (body,)

    def answer(self, request: RecordedRequest) -> Reply:
        """Return the reply the current behaviour gives to `request`."""
        b = self.behaviour
        wire, handler, args = self.route(request)
        if handler is None:
            return JsonReply(wire.error(404, f"No route {request.path}", None), 404)
        model = (request.body or {}).get("model") or (args[-1] if len(args) > 1 else "")
        if b.model_not_found:
            return JsonReply(b.error_body or wire.not_found(str(model)), 404)
        if b.raw_body is not None:
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            return RawReply(b.raw_body, b.status, b.raw_content_type, headers)
        if b.status != 200:
            body = b.error_body or wire.error(b.status, f"Fake upstream error {b.status}.", None)
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            return JsonReply(body, b.status, headers)
        return handler(b, *args)

    def sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up are part of the tests, not errors worth a traceback."""


def _handler_for(fake: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        upstream = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Small writes go out at once, as from a real upstream (Nagle would hold them for an ACK).
    disable_nagle_algorithm = True
    upstream: FakeUpstream

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        request = self._record()
        fake = self.upstream
        reply = fake.answer(request)
        fake.sleep(fake.behaviour.delay)
        if fake.behaviour.reset_before_answer:
            return self._reset()
        try:
            if isinstance(reply, JsonReply):
                self._send_json(reply)
            elif isinstance(reply, RawReply):
                self._send_raw(reply)
            else:
                self._send_stream(reply)
        except OSError:
            self.close_connection = True
        finally:
            request.ended = time.monotonic()

    def _record(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=json.loads(raw) if raw else None,
        )
        self.upstream.requests.append(request)
        return request

    def _send_json(self, reply: JsonReply) -> None:
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_raw(self, reply: RawReply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _send_stream(self, reply: StreamReply) -> None:
        behaviour = self.upstream.behaviour
        try:
            self._send_events(reply, behaviour)
        finally:
            behaviour.gate.finished()

    def _send_events(self, reply: StreamReply, behaviour: Behaviour) -> None:
        fake, gate = self.upstream, behaviour.gate
        # Lock-step: the event that starts step k (k >= 1) waits for the test's k-th go-ahead.
        steps = reply.steps() if behaviour.lockstep else {}
        self.send_response(200)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for count, event in enumerate(reply.events):
            if behaviour.drop_after is not None and count >= behaviour.drop_after:
                return self._drop()
            if behaviour.stall_after is not None and count >= behaviour.stall_after:
                return self._stall()
            if behaviour.reset_after is not None and count >= behaviour.reset_after:
                return self._reset()
            if behaviour.end_after is not None and count >= behaviour.end_after:
                break
            if behaviour.garbage is not None and count == behaviour.garbage_at:
                self._write_chunk(behaviour.garbage)
            fake.sleep(behaviour.chunk_delay if count else behaviour.first_event_delay)
            if count in steps and not self._wait_turn(gate, steps[count]):
                return None
            if not self._write_chunk(event):
                self.close_connection = True
                fake.stream_closed_early.set()
                return None
        end = len(reply.events)
        if end in steps and not self._wait_turn(gate, steps[end]):
            return None
        self._write_chunk(b"")
        return None

    def _wait_turn(self, gate: Gate, step: int) -> bool:
        """Wait for the test to let step `step` go; on False the stream has been ended."""
        fake = self.upstream
        if gate.wait_turn(step, hung_up=lambda: fake.stopping or self._peer_closed()):
            return True
        self.close_connection = True
        if gate.abandoned:
            fake.stream_closed_early.set()
        else:  # it waited too long: end mid-body, which the client sees as an error
            self._drop()
        return False

    def _write_chunk(self, data: bytes) -> bool:
        """Write one chunk and flush it; return False when the client has hung up."""
        if self._peer_closed():
            return False
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True

    def _peer_closed(self) -> bool:
        # A client waiting for the response sends nothing, so readable means it hung up.
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stall(self) -> None:
        """Send nothing more, keeping the connection open, until the client hangs up."""
        fake = self.upstream
        while not fake.stopping and not self._peer_closed():
            fake.sleep(0.02)
        self.close_connection = True
        if not fake.stopping:
            fake.stream_closed_early.set()

    def _reset(self) -> None:
        """Reset the connection (TCP RST, as from an upstream that crashed): the client's next
        read fails with ECONNRESET, not a clean end."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the socket's last reference but its own: closing it sends the RST
        self.connection.close()

    def _drop(self) -> None:
        """Close mid-body: the chunked body never ends, which the client sees as an error."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def closed_port_url() -> str:
    """Return the URL of a local port nobody listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def unanswered_url() -> Iterator[str]:
    """Yield the URL of a local port where a connection never completes, as on a host that
    drops packets: it listens without accepting, and its queue is kept full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = [socket.socket() for _ in range(3)]
    try:
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(address)
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def wait_until(predicate: Any, timeout: float = 2.0) -> bool:
    """Return True as soon as `predicate()` holds, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())
