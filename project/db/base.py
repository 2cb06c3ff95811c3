"""SQLite whose connections outlive a request: closed connections go back to a small pool.

Opening a SQLite connection costs Django a millisecond or two (it registers some thirty SQL
functions and runs its pragmas), which was a sixth of a request's own time. Keeping one open per
server thread instead (CONN_MAX_AGE=None) would hold a connection for each of the server's
thousand threads. So connections are opened as usual, and "closing" one hands it to a process-wide
pool that the next request on any thread takes it from; at most POOL_SIZE wait there.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from django.db.backends.sqlite3 import base

POOL_SIZE = 16


class _Pool:
    """The idle connections of one database file."""

    def __init__(self) -> None:
        self.idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=POOL_SIZE)


_pools: dict[str, _Pool] = {}
_pools_lock = threading.Lock()


def _pool(name: str) -> _Pool:
    pool = _pools.get(name)
    if pool is None:
        with _pools_lock:
            pool = _pools.setdefault(name, _Pool())
    return pool


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        try:
            return _pool(str(self.settings_dict["NAME"])).idle.get_nowait()
        except queue.Empty:
            return super().get_new_connection(conn_params)

    def _close(self) -> None:
        connection = self.connection
        if connection is None:
            return
        # A connection closed inside a transaction (or after an error) is not reused.
        if self.in_atomic_block or self.errors_occurred or connection.in_transaction:
            with self.wrap_database_errors:
                connection.close()
            return
        try:
            _pool(str(self.settings_dict["NAME"])).idle.put_nowait(connection)
        except queue.Full:
            with self.wrap_database_errors:
                connection.close()


def pools_clear() -> None:
    """Close every pooled connection (a test that deletes a database file calls this first)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        while True:
            try:
                pool.idle.get_nowait().close()
            except queue.Empty:
                break
