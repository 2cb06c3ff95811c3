"""The metering journal: a settle the database refuses is kept on disk and written once later.

The database really refuses here, on both backends, rather than the metering code being
patched (that would test the patch). PostgreSQL: the server is told to refuse new connections
to the test database (`ALTER DATABASE … ALLOW_CONNECTIONS false`) and to end the open ones
(`pg_terminate_backend`), the pool's idle connections included, as in a restart or failover.
SQLite: another connection holds the database's write lock, as a long writer would. Only how
long a write waits for the database is shortened for the outage (the pool's timeout, SQLite's
busy timeout), so that it fails in a fraction of a second instead of a minute; that is
configuration, not the code under test.

A stream goes through the real pipeline (Django's test client, the fake upstream): its hold is
written, then the database goes away while it streams, so its settle fails and is journalled.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import DatabaseError, connection

from billing.models import ApiKey, CreditAccount, CreditHold, LedgerEntry
from billing.services import credits_hold, credits_release, rows
from llm_api import pending
from llm_api.models import UsageRecord
from project.db.base import pools_clear
from tests.llm_api.conftest import chat, sse_events

pytestmark = [
    pytest.mark.django_db(transaction=True),  # threads and closed connections, no test atomic
    pytest.mark.usefixtures("upstream_providers"),
]

PIECES = ["Hel", "lo", " there"]
OUTAGE_WAIT_SECONDS = 0.3  # how long a write waits for the database during an outage


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def retry_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "metering-retry" and t.is_alive()]


class Outage:
    """The test database refusing writes between `begin()` and `end()`, for real.

    Meanwhile a write waits OUTAGE_WAIT_SECONDS for the database, not a minute: the wait
    limit is an option of the connection (SQLite's busy timeout) or of the pool (PostgreSQL),
    so it is set here and the connections renewed; `end()` puts the configured limit back.
    """

    def __init__(self) -> None:
        self.down = False

    def begin(self) -> None:
        self._set_wait(OUTAGE_WAIT_SECONDS)
        self.down = True
        self._refuse()

    def end(self) -> None:
        self._accept()
        self.down = False
        self._set_wait(self._configured_wait)

    def close(self) -> None:
        if self.down:
            self.end()

    def _set_wait(self, seconds: float) -> None:
        raise NotImplementedError

    def _refuse(self) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        raise NotImplementedError


class PostgresOutage(Outage):
    """The server refuses the test database: it ends the open connections (the pool's idle ones
    too) and accepts no new ones, as during a restart or a failover."""

    def __init__(self) -> None:
        super().__init__()
        self.params = connection.settings_dict
        self.pool_options = self.params["OPTIONS"]["pool"]
        self._configured_wait = self.pool_options.get("timeout")

    def _set_wait(self, seconds: float) -> None:
        self.pool_options["timeout"] = seconds
        # The pool is made with its options: the next connection comes from a new one. That
        # also leaves none of the connections the server ended to the test's reads after
        # `end()` (this pool does not check them; what the gateway does with such dead
        # connections is for tests/e2e/test_database_faults.py).
        connection.close()
        connection.close_pool()
        connection.ensure_connection()  # open it: idle connections for the server to end
        connection.close()

    def _refuse(self) -> None:
        self._admin("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false")
        self._admin(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            self.params["NAME"],
        )

    def _accept(self) -> None:
        self._admin("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true")

    def _admin(self, statement: str, *args: object) -> None:
        import psycopg
        from psycopg import sql

        keys = {"HOST": "host", "PORT": "port", "USER": "user", "PASSWORD": "password"}
        params = {name: self.params[key] for key, name in keys.items() if self.params.get(key)}
        query = sql.SQL(statement).format(sql.Identifier(self.params["NAME"]))
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(query, args or None)


class SqliteOutage(Outage):
    """Another connection holds SQLite's write lock: every write is refused ("locked")."""

    def __init__(self) -> None:
        super().__init__()
        self.options = connection.settings_dict["OPTIONS"]
        self._configured_wait = self.options.get("timeout")
        self.locker: sqlite3.Connection | None = None

    def _set_wait(self, seconds: float) -> None:
        self.options["timeout"] = seconds
        connection.close()
        rows.writer_close()  # the money writes' connection too: it reopens with the new wait
        pools_clear()  # project.db keeps closed connections, each with its busy timeout

    def _refuse(self) -> None:
        self.locker = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        self.locker.execute("BEGIN EXCLUSIVE")

    def _accept(self) -> None:
        assert self.locker is not None
        self.locker.execute("ROLLBACK")
        self.locker.close()
        self.locker = None


@pytest.fixture
def journal(settings, tmp_path) -> Iterator[Path]:
    """A folder of the test's own for the journal, retried soon; no retrier outlives the test."""
    settings.PENDING_DIR = tmp_path / "pending"
    settings.PENDING_RETRY_SECONDS = 0.1
    wait_for(lambda: not retry_threads(), 35, "an earlier test's retry thread to end")
    yield settings.PENDING_DIR
    # Before `settings` is restored: a retrier left running would drain the real folder.
    wait_for(lambda: not retry_threads(), 35, "the retry thread to end")


@pytest.fixture
def outage(journal) -> Iterator[Outage]:
    down = PostgresOutage() if connection.vendor == "postgresql" else SqliteOutage()
    try:
        yield down
    finally:
        down.close()


def stream_during_outage(key_api, outage) -> str:
    """Stream one answer whose hold is written before the database goes away and whose settle
    comes while it is away; check the client got it all; return the request id."""
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)
    assert response.status_code == 200
    request_id = response["x-request-id"]
    assert CreditHold.objects.get(request_id=request_id).status == "held"
    outage.begin()
    events = sse_events(response)  # the stream runs on, and its settle fails, in here
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "".join(PIECES)
    return request_id


def charges(request_id: str) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(request_id=request_id, kind=LedgerEntry.Kind.USAGE))


def assert_charged_once(request_id: str, user) -> None:
    [entry] = charges(request_id)
    assert (entry.prompt_tokens, entry.completion_tokens, entry.estimated) == (11, 7, False)
    [record] = UsageRecord.objects.filter(request_id=request_id)
    assert record.credits == -entry.amount > 0
    assert record.status == UsageRecord.Status.OK
    assert CreditHold.objects.get(request_id=request_id).status == CreditHold.Status.SETTLED
    account = CreditAccount.objects.get(user=user)
    assert account.held == 0
    entries = LedgerEntry.objects.filter(account=account).values_list("amount", flat=True)
    assert account.balance == sum(entries)


def test_a_settle_the_database_refuses_is_journalled_then_drained_once(
    key_api, alice, fake_upstream, outage, journal
):
    fake_upstream.behave(chunks=PIECES, prompt_tokens=11, completion_tokens=7)
    request_id = stream_during_outage(key_api, outage)

    # The client got its whole answer; its charge waits on disk (that nothing of it reached the
    # database meanwhile is shown by the resume test, where no retrier can write it).
    [path] = pending.waiting()
    entry = json.loads(path.read_text())
    assert (entry["kind"], entry["arguments"]["request_id"]) == ("settle", request_id)
    outage.end()

    assert pending.drain() == 0  # written now, by this call or by the retrier just before
    assert list(journal.glob("*")) == []
    assert_charged_once(request_id, alice)
    balance = CreditAccount.objects.get(user=alice).balance

    assert pending.drain() == 0  # a second drain finds nothing and writes nothing
    assert_charged_once(request_id, alice)
    assert CreditAccount.objects.get(user=alice).balance == balance


def test_a_journalled_settle_already_written_is_removed_without_a_second_charge(
    key_api, alice, fake_upstream, outage, journal
):
    """The same settle twice: say the database committed it but the answer to COMMIT was lost,
    so it was journalled too, or two processes retried one folder."""
    fake_upstream.behave(chunks=PIECES, prompt_tokens=11, completion_tokens=7)
    request_id = stream_during_outage(key_api, outage)
    [path] = pending.waiting()
    copy = path.read_bytes()
    outage.end()
    assert pending.drain() == 0  # written now, by this call or by the retrier just before
    assert_charged_once(request_id, alice)
    balance = CreditAccount.objects.get(user=alice).balance

    again = journal / f"{time.time_ns():020d}-again.json"
    again.write_bytes(copy)
    assert pending.drain() == 0
    assert not again.exists()
    assert_charged_once(request_id, alice)
    assert CreditAccount.objects.get(user=alice).balance == balance


def test_resume_retries_the_files_a_dead_process_left(
    key_api, alice, fake_upstream, outage, journal, tmp_path
):
    fake_upstream.behave(chunks=PIECES, prompt_tokens=11, completion_tokens=7)
    request_id = stream_during_outage(key_api, outage)
    # The process dies with its settle journalled: take the file away from this process's
    # retrier, which then finds its folder empty and ends (before the database is back, so it
    # cannot have written it).
    left_behind = tmp_path / "left-behind"
    left_behind.mkdir()
    [path] = pending.waiting()
    path.rename(left_behind / path.name)
    wait_for(lambda: not retry_threads(), 35, "the retry thread to end")
    outage.end()
    assert charges(request_id) == []
    assert not UsageRecord.objects.filter(request_id=request_id).exists()
    assert CreditHold.objects.get(request_id=request_id).status == CreditHold.Status.HELD

    # A new process starts on the folder the dead one left: it retries it by itself.
    journal.rmdir()
    left_behind.rename(journal)
    pending.resume()
    wait_for(lambda: not pending.waiting(), 10, "resume() to write the journalled settle")
    assert_charged_once(request_id, alice)


def test_resume_with_an_empty_journal_starts_nothing(journal):
    pending.resume()
    assert retry_threads() == []


def test_a_write_journalled_while_the_retrier_is_stopping_is_still_retried(journal):
    """The retrier stops when a drain leaves nothing. A write that fails just then, after the
    drain looked but before the retrier ended, sees a retrier still alive and starts none: it
    must not be left in the folder until the next failure or the next start of the server.

    The moment is made exact, without a stopwatch: a trace function stops the retry thread
    when its drain() returns 0, and the other write happens then. The writes are of a kind
    registered here, refused by a set of numbers instead of a database (the retrier's logic
    does not depend on what a write does)."""
    refused = {1, 2}
    written: list[int] = []

    def probe(number: int) -> None:
        if number in refused:
            raise DatabaseError(f"probe {number} refused")
        written.append(number)

    pending.register("probe", probe)
    stopped_once = threading.Event()

    def on_drain(frame, event, arg):
        retrier = threading.current_thread().name == "metering-retry"
        if retrier and event == "return" and arg == 0 and not stopped_once.is_set():
            stopped_once.set()
            # The retrier found nothing left; now another thread's write is refused.
            other = threading.Thread(target=pending.write, args=("probe",), kwargs={"number": 2})
            other.start()
            other.join()
            refused.discard(2)
        return on_drain

    def tracer(frame, event, arg):
        return on_drain if frame.f_code is pending.drain.__code__ else None

    threading.settrace(tracer)  # for the threads started from now on: the retrier
    try:
        assert pending.write("probe", number=1) is False  # journalled, the retrier started
        refused.discard(1)  # the database is back: the retrier writes 1, drain() returns 0
        wait_for(stopped_once.is_set, 10, "the retrier's drain to find nothing left")
    finally:
        threading.settrace(None)
    wait_for(lambda: 2 in written, 10, "the write journalled meanwhile to be retried")
    assert written == [1, 2]
    assert pending.waiting() == []


@pytest.fixture
def small_pool() -> Iterator[object]:
    """PostgreSQL's pool with three connections (two for requests, one for the money writes'
    own), handed out within 2 s (else PoolTimeout)."""
    options = connection.settings_dict["OPTIONS"]["pool"]
    configured = dict(options)

    def new_pool() -> None:
        connection.close()
        rows.writer_close()  # the writer's connection comes from the new pool too
        connection.close_pool()

    options.update(min_size=1, max_size=3, timeout=2.0)
    new_pool()
    try:
        yield connection.pool
    finally:
        options.clear()
        options.update(configured)
        new_pool()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only: its pool")
def test_a_settle_is_not_stuck_behind_requests_that_keep_a_connection(
    key_api, alice, fake_upstream, small_pool, journal
):
    """Two requests whose API key was not cached have each read it (and keep their pooled
    connection, as Django does until the request ends) and now hold credits, while a stream
    settles. The pool's other connection is the money writes' own: the settle is written on it
    at once, without asking the pool for one, not journalled."""
    fake_upstream.behave(chunks=PIECES, prompt_tokens=11, completion_tokens=7)
    response = chat(key_api, model="openai/gpt-4o-mini", stream=True)  # its hold is written
    assert response.status_code == 200
    request_id = response["x-request-id"]
    both_read = threading.Barrier(3, timeout=10)
    go = threading.Event()
    failures: list[BaseException] = []

    def request(number: int) -> None:
        try:
            ApiKey.objects.filter(user=alice).first()  # the key's lookup: a connection, kept
            both_read.wait()
            go.wait(10)
            credits_hold(user_id=alice.pk, amount=1, request_id=f"req_other{number}")
        except BaseException as error:
            failures.append(error)
        finally:
            connection.close()

    requests = [threading.Thread(target=request, args=(n,)) for n in (1, 2)]
    for thread in requests:
        thread.start()
    both_read.wait()  # the pool's connections are taken: the writer's and the two requests'
    assert small_pool.get_stats()["pool_available"] == 0
    asked = small_pool.get_stats().get("requests_num", 0)
    events = sse_events(response)  # the stream ends: its settle
    assert small_pool.get_stats().get("requests_num", 0) == asked  # no connection asked for
    go.set()
    for thread in requests:
        thread.join(15)
    assert events[-1] == "[DONE]"
    assert failures == []
    assert pending.waiting() == [], "the settle was journalled: it could not be written at once"
    for number in (1, 2):  # the two other requests end without output
        assert credits_release(request_id=f"req_other{number}")
    assert_charged_once(request_id, alice)


def test_a_journalled_write_the_database_refuses_for_good_is_set_aside(
    key_api, alice, fake_upstream, outage, journal
):
    """A file the database answers but will never take (a row it names is gone) must not
    block the writes behind it: it is set aside as `.refused`, and the next one is written."""
    fake_upstream.behave(chunks=PIECES, prompt_tokens=11, completion_tokens=7)
    request_id = stream_during_outage(key_api, outage)
    [path] = pending.waiting()
    outage.end()
    entry = json.loads(path.read_text())
    entry["arguments"]["record"]["user_id"] = 10**9  # no such user: the record cannot be written
    poison = journal / f"{0:020d}-poison.json"  # sorts first
    poison.write_text(json.dumps(entry))

    assert pending.drain() == 0
    assert poison.with_suffix(".refused").exists()
    assert_charged_once(request_id, alice)


def test_while_writes_wait_a_new_one_joins_them_without_trying_the_database(
    key_api, alice, fake_upstream, outage, journal, caplog
):
    fake_upstream.behave(chunks=PIECES, prompt_tokens=11, completion_tokens=7)
    first = stream_during_outage(key_api, outage)
    assert len(pending.waiting()) == 1
    outage.end()  # the database is back, but the journal has not been drained yet

    with caplog.at_level("WARNING", logger="llm_api.pending"):
        pending.write(
            "release",
            request_id="req_never_held",
            record={"request_id": "req_never_held", "user_id": alice.pk},
        )
    assert "joins the writes waiting" in caplog.text
    assert len(pending.waiting()) in (1, 2)  # the retrier may have drained the first already

    assert pending.drain() == 0
    assert_charged_once(first, alice)
