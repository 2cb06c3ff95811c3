"""Indexes on the ledger that no query uses, dropped: each was one more page in every settle's
commit. The account's entries are found through ledger_account_recent (account, created_at), a
request's through the unique constraints on request_id, an administrator's manual entries through
ledger_by_admin, which holds those entries only.

Dropped by name rather than by AlterField, which on SQLite copies the whole table (and would
lose the index that operations.0001 keeps on it).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# name -> how to make it again (None: PostgreSQL's copy of the request_id index for LIKE)
DROPPED = {
    "billing_ledgerentry_account_id_ac8d6a24": "account_id",
    "billing_ledgerentry_admin_id_07a6bed7": "admin_id",
    "billing_ledgerentry_request_id_0b7b28d9": "request_id",
    "billing_ledgerentry_request_id_0b7b28d9_like": None,
}


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_apikey_batch_limits"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="entries",
                        to="billing.creditaccount",
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="admin",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="The administrator who wrote a manual entry.",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="request_id",
                    field=models.CharField(blank=True, max_length=64),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {name}",
                    reverse_sql=(
                        f"CREATE INDEX IF NOT EXISTS {name} ON billing_ledgerentry ({column})"
                        if column
                        else migrations.RunSQL.noop
                    ),
                )
                for name, column in DROPPED.items()
            ],
        ),
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("admin__isnull", False)),
                fields=["admin"],
                name="ledger_by_admin",
            ),
        ),
    ]
