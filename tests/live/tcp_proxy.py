"""A raw TCP proxy a test can break: refuse new connections, cut open ones, stall, restore.

Put it between a live gateway and its database to play a database that goes away for a moment
(a restart, a failover, a network blip) without touching the database server itself:

    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = proxy.url_for("postgres://postgres@127.0.0.1:5432/db")  # same URL, proxy's port
        ...
        proxy.refuse()  # new connections are refused (ECONNREFUSED), open ones are cut (RST)
        ...
        proxy.restore()  # listening and forwarding again, on the same port

`pause()` stalls instead: connections stay open but no byte goes either way (a hung server)
until `restore()`. Each connection is two threads copying bytes, one per direction.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit


def _reset(sock: socket.socket) -> None:
    """Close `sock` with a RST rather than a FIN: the peer sees its connection cut."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One proxied connection: the client's socket and the upstream's."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()

    def cut(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            _reset(self.client)
            _reset(self.upstream)


class TcpProxy:
    """Forward every TCP connection on a loopback port to `upstream`, until told otherwise."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.accepted = 0  # connections taken while forwarding
        self.refused = 0  # refuse(): how many times
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._forwarding = threading.Event()  # cleared while paused
        self._forwarding.set()
        self._listener: socket.socket | None = None
        self._stopped = False

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the test's controls -------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def url_for(self, url: str) -> str:
        """Return `url` (say a postgres:// URL of the upstream) with the proxy's host and port."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def refuse(self) -> None:
        """Stop listening (new connections get ECONNREFUSED) and cut every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            links = list(self._links)
            self.refused += 1
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for link in links:
            link.cut()

    def pause(self) -> None:
        """Keep every connection (and new ones) open, but forward nothing until `restore()`."""
        self._forwarding.clear()

    def restore(self) -> None:
        """Listen again on the same port (after `refuse`) and forward again (after `pause`)."""
        with self._lock:
            listening = self._listener is not None
        if not listening and not self._stopped:
            self._listen()
        self._forwarding.set()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def stop(self) -> None:
        self._stopped = True
        self._forwarding.set()
        self.refuse()

    # --- inside ----------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same port again after refuse(): its cut connections may still be in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(512)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(
            target=self._accept_loop, args=(listener,), name="tcp-proxy-accept", daemon=True
        ).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # refused or stopped: the listener was shut
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            with self._lock:
                if self._listener is not listener:  # refused while connecting
                    link.cut()
                    return
                self._links.add(link)
                self.accepted += 1
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pipe, args=(link, source, target), name="tcp-proxy", daemon=True
                ).start()

    def _pipe(self, link: _Link, source: socket.socket, target: socket.socket) -> None:
        try:
            while not link.closed.is_set():
                # Poll, so a paused pipe and a cut link are noticed without traffic.
                if not select.select([source], [], [], 0.05)[0]:
                    continue
                self._forwarding.wait()
                if link.closed.is_set():
                    return
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except (OSError, ValueError):
            pass  # cut (a closed socket's fileno is -1: ValueError in select)
        finally:
            # One side ended: end the other side too, as the database or its client would.
            with self._lock:
                self._links.discard(link)
            if not link.closed.is_set():
                link.closed.set()
                for sock in (link.client, link.upstream):
                    with contextlib.suppress(OSError):
                        sock.close()
