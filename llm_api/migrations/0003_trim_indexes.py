"""The usage record's index on user alone, dropped: the (user, created_at) index serves every
query by user, and each index was one more page in every settle's commit. Dropped by name rather
than by AlterField, which on SQLite copies the whole table."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("llm_api", "0002_modelalias_fallbacks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="usagerecord",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX IF EXISTS llm_api_usagerecord_user_id_8c5746a6",
                    reverse_sql="CREATE INDEX IF NOT EXISTS llm_api_usagerecord_user_id_8c5746a6 "
                    "ON llm_api_usagerecord (user_id)",
                )
            ],
        ),
    ]
