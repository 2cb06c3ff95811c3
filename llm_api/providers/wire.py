"""A small HTTP/1.1 client for the hot path: one chat call, whole or as Server-Sent Events.

Why not httpx (which the SDKs use): per streamed chunk, httpx, httpcore and h11 run a few
layers of pure Python, and their buffering hides whether the next event is already in memory,
so a stream could only send keep-alives while the upstream is silent by reading in a second
thread. Here the gateway owns the buffer: `ready(timeout)` says exactly whether the next event
can be read without waiting, so the server's own thread reads the upstream and speaks during
silence, and a chunk costs a `recv` and a split. Connections are kept alive in a small pool
per upstream; TLS through `ssl`. It speaks to the upstream directly, never through an HTTP
proxy (HTTPS_PROXY and the like do not apply to chat calls; the README says so).

Timeouts (see `timeouts`): a `Deadline` per call bounds each wait: connecting, then the first
byte (the status line of a whole answer, the first event of a stream), then each gap (between
two events, or two reads of a whole body), and all of them by the total.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from llm_api.providers.timeouts import Timeouts

READ_SIZE = 65536
MAX_HEADER_BYTES = 65536
HEX_DIGITS = b"0123456789abcdefABCDEF"


class WireError(Exception):
    """The connection failed or the peer broke the protocol (before or during the body)."""


class WireTimeout(WireError):
    """The peer did not answer within timeout `which`; `answered`: after its first byte."""

    def __init__(self, which: str, *, answered: bool = False) -> None:
        super().__init__(f"the {which} timeout ran out")
        self.which = which
        self.answered = answered


class WireConnectError(WireError):
    """No connection could be made."""


class Deadline:
    """The wait a call is in (`which` timeout, ending `at`), within the call's total."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.end = time.monotonic() + timeouts.total
        self.answered = False
        self.which, self.at = "connect", self.end
        self.wait("connect")

    def wait(self, which: str) -> None:
        """Start a wait bounded by timeout `which`, or by the total when that ends first."""
        at = time.monotonic() + self.timeouts.seconds(which)
        self.which, self.at = (which, at) if at < self.end else ("total", self.end)

    def left(self) -> float:
        """Return the seconds left of the wait; raise WireTimeout when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left

    def expired(self) -> WireTimeout:
        return WireTimeout(self.which, answered=self.answered)


class Upstream:
    """One upstream origin (scheme, host, port) and its idle keep-alive connections.

    `timeout`: the four timeouts, or one number for connect, first byte and gap (no total).
    """

    def __init__(self, base_url: str, *, timeout: float | Timeouts, max_idle: int = 64) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.base_path = parts.path.rstrip("/")
        self.host_header = parts.netloc.rpartition("@")[2]
        self.timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts.uniform(timeout)
        self._idle: list[socket.socket] = []
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._tls_context = ssl.create_default_context() if self.tls else None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Response:
        """Send a POST and return the response once its status and headers have arrived."""
        head = self._head(path, body, headers)
        deadline = Deadline(self.timeouts)
        for attempt in range(2):
            sock, reused = self._connection(deadline, fresh=attempt > 0)
            # Sending the request is part of waiting for its answer.
            deadline.wait("first_byte")
            try:
                sock.settimeout(deadline.left())
                sock.sendall(head + body)
                return Response(self, sock, deadline)._read_head()
            except (OSError, ValueError, WireError) as error:
                _close(sock)
                # A kept-alive connection the upstream had closed meanwhile: once more, fresh.
                if reused and attempt == 0 and not isinstance(error, TimeoutError | WireTimeout):
                    continue
                raise _wire_error(error, deadline) from error
        raise WireError("unreachable")  # pragma: no cover

    def _head(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [
            f"POST {self.base_path}{path} HTTP/1.1",
            f"Host: {self.host_header}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _connection(self, deadline: Deadline, *, fresh: bool = False) -> tuple[socket.socket, bool]:
        with self._lock:
            if self._idle and not fresh:
                return self._idle.pop(), True
        deadline.wait("connect")
        try:
            sock = socket.create_connection((self.host, self.port), timeout=deadline.left())
        except TimeoutError as error:
            raise deadline.expired() from error
        except OSError as error:
            raise WireConnectError(str(error)) from error
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls_context is not None:
            try:  # the TLS handshake is part of connecting
                sock.settimeout(deadline.left())
                sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
            except TimeoutError as error:
                _close(sock)
                raise deadline.expired() from error
            except (OSError, ValueError) as error:
                _close(sock)
                raise WireConnectError(str(error)) from error
        return sock, False

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(sock)
                return
        _close(sock)


class Response:
    """An upstream answer being read: status, headers, then the body (whole or as events)."""

    def __init__(self, upstream: Upstream, sock: socket.socket, deadline: Deadline) -> None:
        self.upstream = upstream
        self.sock: socket.socket | None = sock
        self.deadline = deadline
        self.buffer = bytearray()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self._chunked = False
        self._remaining: int | None = None  # body bytes still to come, when Content-Length
        self._chunk_left = 0  # bytes left in the current chunk, when chunked
        self._body = bytearray()  # decoded body bytes not yet handed out
        self._keep_alive = True

    # --- reading the head -------------------------------------------------------------------

    def _read_head(self) -> Response:
        version = self._status_line()
        # Interim answers (100 Continue, 103 Early Hints) come before the real one: skip them.
        while 100 <= self.status < 200:
            self.headers.clear()
            version = self._status_line()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in self.headers:
            length = self.headers["content-length"]
            if not length.isdigit():
                raise WireError(f"the upstream sent a malformed Content-Length: {length!r}")
            self._remaining = int(length)
        connection = self.headers.get("connection", "").lower()
        self._keep_alive = version == "HTTP/1.1" and connection != "close"
        self._keep_alive &= self._chunked or self._remaining is not None
        self._decode()
        return self

    def _status_line(self) -> str:
        """Read one status line and its headers; return the HTTP version."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise WireError("the upstream's headers are too large")
            self._fill()
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        try:
            version, status, *_ = head[0].split(" ", 2)
            self.status = int(status)
        except ValueError as error:
            raise WireError("the upstream's status line is malformed") from error
        for line in head[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        return version

    # --- the body ---------------------------------------------------------------------------

    def read(self) -> bytes:
        """Return the whole body (then the connection goes back to the pool)."""
        self.deadline.answered = True  # the status line has come
        while not self.complete:
            self.deadline.wait("gap")
            self._fill()
            self._decode()
        body = bytes(self._body)
        self._body.clear()
        self.close()
        return body

    def events(self) -> Iterator[bytes]:
        """Yield the data of each Server-Sent Event as it arrives (multi-line data joined)."""
        data: list[bytes] = []
        while True:
            line = self._line()
            if line is None:
                if self.complete:
                    break
                self._fill()
                self._decode()
                continue
            if not line:
                if data:
                    event, data = b"\n".join(data), []
                    # The wait for the next event starts now (and `ready` waits within it).
                    self.deadline.answered = True
                    self.deadline.wait("gap")
                    yield event
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        if data:
            yield b"\n".join(data)
        self.close()

    def ready(self, timeout: float) -> bool:
        """Return whether the next event (or the end) can be read without waiting, waiting up
        to `timeout` seconds for the upstream to send the rest of it. True also once the call's
        own wait has run out: the read then raises WireTimeout at once."""
        until = min(time.monotonic() + timeout, self.deadline.at)
        while not (self.complete or b"\n\n" in self._body or b"\r\n\r\n" in self._body):
            sock = self.sock
            if sock is None:
                return True
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
            try:
                wait_ms = math.ceil(max(0.0, until - time.monotonic()) * 1000)
                # poll, not select: select refuses a descriptor past 1,023, which a server
                # with a thousand streams open soon hands out.
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                readable = pending or poller.poll(wait_ms)
            except (OSError, ValueError):
                return True  # closed meanwhile: the read will say so
            if not readable:
                return time.monotonic() >= self.deadline.at
            try:
                self._fill()
                self._decode()
            except WireError:
                return True  # the read will raise it again
        return True

    def close(self) -> None:
        """Give a fully read connection back to the pool; cut any other at once."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.complete and self._keep_alive and not self.buffer:
            self.upstream._keep(sock)
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        _close(sock)

    # --- internals --------------------------------------------------------------------------

    def _line(self) -> bytes | None:
        end = self._body.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._body[:end]).rstrip(b"\r")
        del self._body[: end + 1]
        return line

    def _fill(self) -> None:
        sock = self.sock
        if sock is None:
            raise WireError("the connection was closed")
        try:
            sock.settimeout(self.deadline.left())
            data = sock.recv(READ_SIZE)
        except TimeoutError as error:
            raise self.deadline.expired() from error
        except OSError as error:
            raise WireError(str(error)) from error
        if not data:
            if self.status and not self._chunked and self._remaining is None:
                self.complete = True  # a body delimited by the end of the connection
                self._keep_alive = False
                return
            raise WireError("the upstream closed the connection mid-answer")
        self.buffer += data

    def _decode(self) -> None:
        """Move what the buffer holds of the body into `_body`, decoding chunked encoding."""
        if not self._chunked:
            take = len(self.buffer)
            if self._remaining is not None:
                take = min(take, self._remaining)
            self._body += self.buffer[:take]
            del self.buffer[:take]
            if self._remaining is not None:
                self._remaining -= take
                self.complete = self._remaining == 0
            return
        while self.buffer and not self.complete:
            if self._chunk_left > 0:
                take = min(self._chunk_left, len(self.buffer))
                self._body += self.buffer[:take]
                del self.buffer[:take]
                self._chunk_left -= take
                if self._chunk_left:
                    return
                self._chunk_left = -1  # then the CRLF that ends the chunk's data
            if self._chunk_left < 0:
                if len(self.buffer) < 2:
                    return
                if self.buffer[:2] != b"\r\n":
                    raise WireError("a chunk of the upstream's answer is longer than it said")
                del self.buffer[:2]
                self._chunk_left = 0
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            digits = bytes(self.buffer[:end]).split(b";")[0].strip()
            if not digits or digits.strip(HEX_DIGITS):
                raise WireError("the upstream's chunked encoding is malformed")
            size = int(digits, 16)
            if size == 0:
                # The last chunk: wait for the (empty) trailer's CRLF, then the body is done.
                trailer = self.buffer.find(b"\r\n\r\n", end)
                if trailer < 0:
                    return
                del self.buffer[: trailer + 4]
                self.complete = True
                return
            del self.buffer[: end + 2]
            self._chunk_left = size


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _wire_error(error: BaseException, deadline: Deadline) -> WireError:
    if isinstance(error, WireError):
        return error
    if isinstance(error, TimeoutError):
        return deadline.expired()
    return WireError(str(error))
