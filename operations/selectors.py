"""What the admin dashboard shows, aggregated in the database over a range of days (UTC).

Every figure comes from the usage records, one per LLM request: GROUP BY queries over the
range, so the page costs a few queries whatever the number of records.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, DateField, F, Func, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from llm_api.models import UsageRecord

PERCENTILES = (50, 95, 99)
TOP = 10


def usage_in_range(*, since: date, until: date, user_id: int | None = None) -> QuerySet:
    """Return the usage records created on the days since..until (inclusive, UTC)."""
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    records = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
    if user_id is not None:
        records = records.filter(user_id=user_id)
    return records.order_by()


def _totals() -> dict[str, Any]:
    return {
        "requests": Count("id"),
        "tokens": Sum(F("prompt_tokens") + F("completion_tokens")),
        "credits": Sum("credits"),
    }


class UtcDay(Func):
    """The UTC day of a timestamp, computed by the database itself.

    Django's TruncDate runs a Python function per row on SQLite (seconds at 100,000 rows);
    SQLite stores UTC text, whose first ten characters are the day, and PostgreSQL casts.
    """

    output_field = DateField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="substr(%(expressions)s, 1, 10)")

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, template="((%(expressions)s) AT TIME ZONE 'UTC')::date"
        )

    def as_sql(self, compiler, connection, template=None, **extra):
        if template is None:  # any other database: Django's own, portable truncation
            return TruncDate(*self.source_expressions, tzinfo=UTC).as_sql(compiler, connection)
        return super().as_sql(compiler, connection, template=template, **extra)


def usage_by_day(records: QuerySet, *, split: str) -> list[dict]:
    """Return rows of date, `split` (model or user), requests, errors, tokens and credits."""
    fields = ["provider", "model"] if split == "model" else ["user_id"]
    rows = (
        records.annotate(date=UtcDay("created_at"))
        .values("date", *fields)
        .annotate(**_totals(), errors=Count("id", filter=~Q(status="ok")))
        .order_by("date", *fields)
    )
    return list(rows)


def usage_by(records: QuerySet, field: str, *extra: str, top: int = TOP) -> list[dict]:
    """Return the `top` values of `field` by credits spent, with their totals."""
    rows = records.values(field).annotate(**_totals()).order_by("-credits", "-requests")[:top]
    rows = list(rows)
    if extra:  # the names of the few rows shown, not joined into the scan of every record
        model = records.model._meta.get_field(field).related_model
        names = model.objects.in_bulk([row[field] for row in rows if row[field] is not None])
        for row in rows:
            found = names.get(row[field])
            row.update({name: getattr(found, name.split("__")[-1], None) for name in extra})
    return rows


def rolled_up(rows: list[dict], *fields: str) -> list[dict]:
    """Add up per-day rows by `fields`, biggest spender first."""
    totals: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[field] for field in fields)
        total = totals.setdefault(
            key,
            {
                **dict(zip(fields, key, strict=True)),
                "requests": 0,
                "errors": 0,
                "tokens": 0,
                "credits": 0,
            },
        )
        for name in ("requests", "errors", "tokens", "credits"):
            total[name] += row[name] or 0
    return sorted(totals.values(), key=lambda total: (-total["credits"], -total["requests"]))


def latency_percentiles(records: QuerySet) -> dict[str, dict[str, int]]:
    """Return {provider: {"p50": ms, "p95": ms, "p99": ms}}: exact nearest-rank percentiles from
    one GROUP BY of (provider, latency), which the database counts without sorting rows out."""
    counts: dict[str, list[tuple[int, int]]] = {}
    grouped = records.values_list("provider", "latency_ms").annotate(n=Count("id"))
    for provider, latency, n in grouped.order_by():
        counts.setdefault(provider, []).append((latency, n))
    found = {}
    for provider, pairs in counts.items():
        pairs.sort()
        total = sum(n for _, n in pairs)
        ranks = {f"p{p}": max(1, -(-total * p // 100)) for p in PERCENTILES}
        found[provider], seen = {}, 0
        for latency, n in pairs:
            seen += n
            for name, rank in ranks.items():
                if name not in found[provider] and seen >= rank:
                    found[provider][name] = latency
    return found


def recent_requests(records: QuerySet, *, limit: int = 50) -> list[UsageRecord]:
    """Return the latest requests (no prompt text: the records hold none)."""
    return list(records.select_related("user", "api_key").order_by("-created_at", "-id")[:limit])


def dashboard_data(*, since: date, until: date, user_id: int | None = None) -> dict[str, Any]:
    """Return everything the dashboard shows for the days since..until (UTC): a few GROUP BY
    scans of the range, rolled up here."""
    records = usage_in_range(since=since, until=until, user_id=user_id)
    by_day_model = usage_by_day(records, split="model")
    by_day_user = usage_by_day(records, split="user") if user_id is None else []
    usernames = dict(
        get_user_model()
        .objects.filter(pk__in={row["user_id"] for row in by_day_user})
        .values_list("pk", "username")
    )
    for row in by_day_model:
        row["name"] = f"{row['provider']}/{row['model']}"
    for row in by_day_user:
        row["name"] = usernames.get(row["user_id"], row["user_id"])
    by_user = rolled_up(by_day_user, "user_id", "name")[:TOP]
    (total,) = rolled_up([{**row, "all": True} for row in by_day_model], "all") or [
        {"requests": 0, "errors": 0, "tokens": 0, "credits": 0}
    ]
    percentiles = latency_percentiles(records)
    providers = sorted(rolled_up(by_day_model, "provider"), key=lambda row: row["provider"])
    for row in providers:
        row["error_rate"] = row["errors"] / row["requests"] if row["requests"] else 0.0
        row.update(percentiles.get(row["provider"], {}))
    return {
        "total": total,
        "by_day_model": by_day_model,
        "by_day_user": by_day_user,
        "by_model": rolled_up(by_day_model, "provider", "model")[:TOP],
        "by_user": [{**row, "user__username": row["name"]} for row in by_user],
        "top_keys": usage_by(records, "api_key", "api_key__name", "api_key__prefix"),
        "providers": providers,
        "recent": recent_requests(records),
    }
