"""An index for range queries on another app's table (the ledger).

Written as SQL (both SQLite and PostgreSQL take it) so that the models, which belong to
llm_api and billing, need not change: the autodetector never sees these indexes.
"""

from django.db import migrations

# The dashboard's scans of usage records use the index on created_at that UsageRecord already
# has (one range scan per GROUP BY, measured in bench/dashboard.py); per-user pages use
# (user, created_at). Indexes on (provider, created_at) and (api_key, created_at) were tried
# and dropped: SQLite then walked them for GROUP BY provider / api_key across the whole table,
# slower than the range scan. What remains: the ledger by kind over a range of days (the
# ledger admin's kind filter and date hierarchy, and checking the dashboard against it).
INDEXES = {
    "ops_ledger_kind_created": ("billing_ledgerentry", "kind, created_at"),
}


class Migration(migrations.Migration):
    dependencies = [
        ("llm_api", "0002_modelalias_fallbacks"),
        ("billing", "0003_creditaccount_debt"),
    ]

    operations = [
        migrations.RunSQL(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})",
            reverse_sql=f"DROP INDEX IF EXISTS {name}",
        )
        for name, (table, columns) in INDEXES.items()
    ]
