"""Django's Redis cache, with one client and one connection pool per process instead of one
client per operation and one pool per thread.

Django builds a new `redis.Redis` for every cache call (`RedisCacheClient.get_client`), and
building one fills its table of some five hundred response callbacks: about a tenth of a
millisecond each time, several times per request (the key lookup, the throttles, the limits).
And `django.core.cache.caches` is one backend object per thread, each with pools of its own:
under the server's thousand threads that made a thousand pools, and a new connection (with a
look-up of redis-py's installed version) whenever a request landed on a thread that had none
yet. A client holds no connection of its own (it borrows one from the pool per command) and,
like the pool, is safe to share between threads: one of each per server and options is kept
for the whole process.

Each new connection would also look up redis-py's installed version on disk (for CLIENT SETINFO),
some milliseconds of CPU: a thousand streams opening their connections at once spent seconds on
it. The version is looked up once.

Both caches, this one and the local one of the embedded defaults (`LocMemCache`), skip Django's
check of every key against memcached's rules (`OwnKeys`).
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends import locmem, redis
from redis.driver_info import DriverInfo

_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()
_driver_info: DriverInfo | None = None


class SharedClientRedisCacheClient(redis.RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mine: dict[int, Any] = {}  # this object's clients, by pool index: no lookup after

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        index = self._get_connection_pool_index(write)
        client = self._mine.get(index)
        if client is None:
            client = self._mine[index] = self._shared(index)
        return client

    def _shared(self, index: int) -> Any:
        """Return the process's client for this server and these options, made once."""
        shared = (self._servers[index], repr(sorted(self._pool_options.items())))
        with _clients_lock:
            client = _clients.get(shared)
            if client is None:
                global _driver_info
                _driver_info = _driver_info or DriverInfo()  # looks the version up
                options = {"driver_info": _driver_info, **self._pool_options}
                pool = self._pool_class.from_url(self._servers[index], **options)
                client = _clients[shared] = self._client(connection_pool=pool)
        return client


class OwnKeys:
    """Every key is made by this project (a prefix and digests, ids or addresses), and neither
    Redis nor the local cache restricts keys as memcached does: Django's check of each key
    against memcached's rules, a loop over its characters on every cache call (three to five
    calls a request), is left out."""

    def validate_key(self, key: str) -> None:
        return None


class LocMemCache(OwnKeys, locmem.LocMemCache):
    pass


class RedisCache(OwnKeys, redis.RedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
