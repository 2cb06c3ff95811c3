"""Metering writes that must not be lost: written at once, or journalled to disk and retried.

A delivered answer must be charged even when the database cannot take the write just then (it
restarts, refuses connections, its pool is exhausted). Each write is tried at once; if the
database fails it, the write is saved as a file in PENDING_DIR (written whole, then renamed,
then synced) and a background thread retries the folder's files until they are written. The
writes are idempotent (a settle claims its hold once), so a file written twice, or retried by
two processes, charges once. A process that dies leaves its files for the next process that
starts on the same PENDING_DIR (`resume`); what a crash can lose is only a write that was in
neither the database nor the folder: one that failed and whose file could not be written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError

logger = logging.getLogger(__name__)

_writers: dict[str, Callable[..., object]] = {}
_retrying = threading.Lock()  # one retry pass at a time in this process
_thread_lock = threading.Lock()
_thread: threading.Thread | None = None
# The journal folders where this process has writes waiting (normally just PENDING_DIR).
_backlogged: set[str] = set()


def register(kind: str, writer: Callable[..., object]) -> None:
    """Name a write function: `write(kind, **arguments)` calls it with JSON-able arguments."""
    _writers[kind] = writer


def write(kind: str, **arguments: Any) -> bool:
    """Write now; on a database failure journal the write for retry. Return whether written.

    While earlier writes wait in the journal, a new one joins them at once rather than wait
    out the database's timeout itself (so an outage delays no answer by minutes); the retrier
    writes them in order once the database answers again.
    """
    if str(settings.PENDING_DIR) in _backlogged:
        logger.warning("A %s joins the writes waiting for the database; queued for retry.", kind)
    else:
        try:
            _writers[kind](**arguments)
            return True
        except DatabaseError as error:
            logger.warning("A %s could not be written now (%s); queued for retry.", kind, error)
    try:
        _journal(kind, arguments)
    except OSError:
        logger.exception("A %s could not be queued either; it is lost: %s", kind, arguments)
        return False
    _backlogged.add(str(settings.PENDING_DIR))
    _retry_soon()
    return False


def folder() -> Path:
    path = Path(settings.PENDING_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def waiting() -> list[Path]:
    """Return the journalled writes not yet written, oldest first."""
    return sorted(folder().glob("*.json"))


def _journal(kind: str, arguments: dict[str, Any]) -> None:
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    path = folder() / f"{name}.json"
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump({"kind": kind, "arguments": arguments}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def drain() -> int:
    """Write every journalled write the database takes now; return how many are left."""
    with _retrying:
        for path in waiting():
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # another process wrote it and removed the file, or it is being written
            try:
                _writers[entry["kind"]](**entry["arguments"])
            except (IntegrityError, DataError):
                # The database answers but will never take this one (a row it names is gone, a
                # value it cannot store):
                # set it aside for an administrator rather than block every write behind it.
                logger.exception("A queued metering write was refused for good: %s", path.name)
                path.replace(path.with_suffix(".refused"))
                continue
            except DatabaseError as error:
                logger.warning("Queued metering writes still wait for the database: %s", error)
                break
            path.unlink(missing_ok=True)
        left = len(waiting())
        if left == 0:
            _backlogged.discard(str(settings.PENDING_DIR))
        return left


def resume() -> None:
    """Start retrying if writes are waiting (a process starting after one that died)."""
    if waiting():
        _backlogged.add(str(settings.PENDING_DIR))
        _retry_soon()


def _retry_soon() -> None:
    global _thread
    with _thread_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_retry_loop, name="metering-retry", daemon=True)
            _thread.start()


def _retry_loop() -> None:
    global _thread
    delay = settings.PENDING_RETRY_SECONDS
    while True:
        time.sleep(delay)
        try:
            if drain() == 0:
                # Stop only if nothing came meanwhile, deciding under the lock `_retry_soon`
                # takes: a write journalled after the drain looked, whose `_retry_soon` found
                # this thread still alive, is seen here; one journalled after this starts a
                # new thread. (Stopping on drain() == 0 alone left such a write on disk until
                # the next failure or the next start of the server.)
                with _thread_lock:
                    if not waiting():
                        _thread = None
                        return
                delay = settings.PENDING_RETRY_SECONDS
                continue
        except Exception:  # never let the retrier die with writes waiting
            logger.exception("Retrying queued metering writes failed")
        delay = min(delay * 2, 30.0)
