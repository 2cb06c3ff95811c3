"""The indexes every settle writes: the ledger and the usage record keep the ones their queries
use and no other (each index is one more page in every settle's commit)."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from billing.models import LedgerEntry
from llm_api.models import UsageRecord


def indexes(table: str) -> set[tuple[tuple[str, ...], bool]]:
    """Return the table's indexes and unique constraints as (columns, unique), leaving out its
    primary key and PostgreSQL's LIKE copies of an index (`..._like`)."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, table)
    return {
        (tuple(info["columns"]), bool(info["unique"]))
        for name, info in found.items()
        if (info["index"] or info["unique"])
        and not info["primary_key"]
        and not name.endswith("_like")
    }


@pytest.mark.django_db
def test_the_ledger_keeps_only_the_indexes_its_queries_use():
    assert indexes(LedgerEntry._meta.db_table) == {
        (("account_id", "created_at"), False),  # an account's entries, newest first
        (("admin_id",), False),  # an administrator's manual entries only
        (("api_key_id",), False),  # a key's entries
        (("created_at",), False),  # the admin's date hierarchy
        (("kind", "created_at"), False),  # the admin's kind filter over days
        (("request_id",), True),  # one usage entry per request
        (("request_id",), True),  # one refund per request
    }


@pytest.mark.django_db
def test_the_usage_record_keeps_only_the_indexes_its_queries_use():
    assert indexes(UsageRecord._meta.db_table) == {
        (("request_id",), True),
        (("api_key_id",), False),
        (("created_at",), False),  # the dashboard's ranges
        (("user_id", "created_at"), False),  # a user's records, also by user alone
    }


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner names its index")
def test_the_ledgers_queries_find_their_index():
    by_account = LedgerEntry.objects.filter(account_id=1).explain()
    by_admin = LedgerEntry.objects.filter(admin_id=1).explain()
    assert "ledger_account_recent" in by_account
    assert "ledger_by_admin" in by_admin


@pytest.mark.django_db
def test_the_migrations_describe_the_models():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)  # exits 1 on a change
    assert "No changes detected" in out.getvalue()
