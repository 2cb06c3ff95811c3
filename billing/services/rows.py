"""The metering writes as SQL compiled once, instead of by the ORM on every request.

A hold and a settle run on every LLM call; building their queries through the ORM (lookups,
expressions, compilers) measured about a third of the gateway's own time per request. The
statements are the same conditional UPDATEs the ORM would send, written here once, with table
and column names read from the models so they follow any migration (which is also why the
statements are built as strings: no value a client sends is ever part of them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from billing.models import ApiKey, CreditAccount, CreditHold

M = TypeVar("M", bound=models.Model)
PLAIN = frozenset({int, str, bool, type(None)})


def run(statement: str, params: list[Any]) -> Any:
    """Run one statement on the driver's connection and return the driver's cursor.

    Straight to the driver: Django's cursor wrapper (debug hooks, placeholder conversion)
    costs more than the statement. The transaction is still Django's (`ledger_run`), and a
    driver error still becomes Django's (IntegrityError, OperationalError…).
    """
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: each proxy lookup costs a µs
    if db.queries_logged or db.execute_wrappers:
        # Someone is watching the queries (DEBUG, a test, instrumentation): let them see it.
        cursor = db.cursor()
        cursor.execute(statement, params)
        return cursor
    db.ensure_connection()
    if db.vendor == "sqlite":
        statement = _qmarks(statement)
    with db.wrap_database_errors:
        return db.connection.execute(statement, params)


@cache
def _qmarks(statement: str) -> str:
    """Return the statement with SQLite's own placeholders (`?`)."""
    return statement.replace("%s", "?")


@contextlib.contextmanager
def atomic() -> Iterator[None]:
    """Run the block as one transaction, begun and ended on the driver's connection.

    Django's `atomic` costs more than the statements it wraps (autocommit switches, its own
    cursor); it is still used inside another transaction (a savepoint) and while someone
    watches the queries. The block must use this module's statements or plain ORM reads and
    updates, nothing that opens an `atomic` of its own.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if db.in_atomic_block or db.queries_logged or db.execute_wrappers:
        with transaction.atomic():
            yield
        return
    db.ensure_connection()
    driver = db.connection
    with db.wrap_database_errors:
        driver.execute("BEGIN IMMEDIATE" if db.vendor == "sqlite" else "BEGIN")
    try:
        yield
        with db.wrap_database_errors:
            driver.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            driver.execute("ROLLBACK")
        raise


# --- the writer's connection --------------------------------------------------------------------

_writer_db: BaseDatabaseWrapper | None = None
_writer_pid = 0


@contextlib.contextmanager
def on_writer_connection() -> Iterator[None]:
    """Run the block on the process's one connection for money writes, kept open between them.

    The caller holds the lock that makes it the only thread writing money (`ledger_run`), so
    one connection serves every write, whichever thread leads it: no write opens a connection
    and hands it back (on SQLite a pooled connection's setup each time, on PostgreSQL a pool
    checkout and its reset), twice a request. The connection is swapped in as the thread's
    default one for the block, so the ORM and `run` both use it. After a database error (the
    server restarted, the connection broke) it is closed, and the next write opens another.
    """
    global _writer_db, _writer_pid
    if _writer_db is None or _writer_pid != os.getpid():  # none yet, or a forked copy
        _writer_db = connections.create_connection(DEFAULT_DB_ALIAS)
        _writer_db.inc_thread_sharing()  # used by whichever thread leads
        _writer_pid = os.getpid()
    writer, own = _writer_db, connections[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS] = writer
    try:
        yield
    finally:
        connections[DEFAULT_DB_ALIAS] = own
        if writer.errors_occurred:  # not set by an IntegrityError: the connection is fine
            writer_close()


def writer_close() -> None:
    """Close the writer's connection (a test database about to be dropped, a file deleted)."""
    if _writer_db is not None:
        with contextlib.suppress(Exception):
            _writer_db.close()


@contextlib.contextmanager
def savepoint() -> Iterator[None]:
    """Run the block in a savepoint of the transaction `atomic` began: an exception rolls back
    the block's own statements only (and is raised)."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.in_atomic_block:  # Django's transaction (see `atomic`): its nested atomic is one
        with transaction.atomic():
            yield
        return
    driver = db.connection
    with db.wrap_database_errors:
        driver.execute("SAVEPOINT money_write")
    try:
        yield
    except BaseException:
        with db.wrap_database_errors:
            driver.execute("ROLLBACK TO SAVEPOINT money_write")
            driver.execute("RELEASE SAVEPOINT money_write")
        raise
    with db.wrap_database_errors:
        driver.execute("RELEASE SAVEPOINT money_write")


def execute(statement: str, params: list[Any]) -> int:
    """Run one statement; return how many rows it changed."""
    return run(statement, params).rowcount


def fetch_one(statement: str, params: list[Any]) -> tuple | None:
    return run(statement, params).fetchone()


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type[models.Model], field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


@cache
def statements(vendor: str) -> dict[str, str]:
    """Return the metering statements for this database (quoting differs by vendor)."""
    account, key, hold = _table(CreditAccount), _table(ApiKey), _table(CreditHold)
    account_pk, key_pk = _column(CreditAccount, "user"), _column(ApiKey, "id")
    return {
        # An account in debt holds nothing until credits added have paid the debt.
        "reserve_account": f"UPDATE {account} SET held = held + %s "
        f"WHERE {account_pk} = %s AND balance >= held + %s AND debt = 0",
        "reserve_key": f"UPDATE {key} SET held = held + %s WHERE {key_pk} = %s "
        "AND (spend_cap IS NULL OR spend_cap >= spent + held + %s)",
        # Claims the request's hold in the status given, in one statement (RETURNING: SQLite
        # 3.35 or later, PostgreSQL), and says what it held.
        "hold_claim": f"UPDATE {hold} SET status = %s, closed_at = %s "
        "WHERE request_id = %s AND status = %s RETURNING amount, account_id, api_key_id, model",
        "charge_account": f"UPDATE {account} SET balance = balance - %s, held = held - %s "
        f"WHERE {account_pk} = %s AND balance >= held - %s + %s",
        # When the cost is more than what is held and available: read the account, locked,
        # then take what there is (SQLite's BEGIN IMMEDIATE has locked it already).
        "account_read": f"SELECT balance, held FROM {account} WHERE {account_pk} = %s"
        + (" FOR UPDATE" if vendor == "postgresql" else ""),
        "charge_at_most": f"UPDATE {account} SET balance = balance - %s, held = held - %s "
        f"WHERE {account_pk} = %s",
        # When the cost is more than what is held: what the key's spend cap leaves (locked).
        "key_read": f"SELECT spend_cap, spent, held FROM {key} WHERE {key_pk} = %s"
        + (" FOR UPDATE" if vendor == "postgresql" else ""),
        "debt_add": f"UPDATE {account} SET debt = debt + %s WHERE {account_pk} = %s",
        "charge_key": f"UPDATE {key} SET held = held - %s, spent = spent + %s WHERE {key_pk} = %s",
    }


def sql(name: str) -> str:
    return statements(connections[DEFAULT_DB_ALIAS].vendor)[name]


@cache
def _insert_statement(model: type[models.Model], vendor: str) -> tuple[str, tuple]:
    fields = tuple(
        field for field in model._meta.concrete_fields if not isinstance(field, models.AutoField)
    )
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    statement = f"INSERT INTO {_table(model)} ({columns}) VALUES ({placeholders})"
    if connection.features.can_return_columns_from_insert:
        statement += f" RETURNING {_column(model, 'id')}"
    return statement, fields


def insert(model: type[models.Model], /, **values: Any) -> int:
    """Insert one row of `model` and return its primary key: `values` by attribute name
    (`account_id`), defaults for the rest, `auto_now_add` dates set now; each value prepared
    as the ORM would for a save."""
    db = connections[DEFAULT_DB_ALIAS]
    statement, fields = _insert_statement(model, db.vendor)
    now = timezone.now()
    params = []
    for field in fields:
        if field.attname in values:
            value = values[field.attname]
        elif getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
            value = now
        else:
            value = field.get_default()
        # Plain numbers, text and NULL go to the driver as they are (what the ORM's
        # preparation returns for them anyway); dates, JSON and the like are prepared.
        if type(value) not in PLAIN:
            value = field.get_db_prep_save(value, db)
        params.append(value)
    cursor = run(statement, params)
    if db.features.can_return_columns_from_insert:
        return cursor.fetchone()[0]
    return cursor.lastrowid


def saved(model: type[M], pk: int, /, **values: Any) -> M:
    """Return the instance of a row just inserted with `insert`, as if the ORM had saved it."""
    instance = model(pk=pk, **values)
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance
