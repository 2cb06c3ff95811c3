"""How fast the admin dashboard answers with 100,000 usage records (and the user's admin page).

    uv run --frozen python bench/dashboard.py                      # SQLite, in a temporary folder
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/ops_bench \\
        uv run --frozen python bench/dashboard.py                  # PostgreSQL (database made
                                                                   # and dropped here)
    BENCH_RECORDS=20000 uv run --frozen python bench/dashboard.py  # another size

It seeds a throwaway database (50 users, 100 keys, BENCH_RECORDS usage records spread over 30
days, 3 providers, 6 models, 5% errors), then times GET /admin/dashboard/ for the last 14 and 30
days and a user's admin page, through Django's test client signed in as a superuser: the whole
page, queries and template. Each is run 7 times; it prints the best and the median. Figures,
not an assertion: the goal is under a second at 100,000 records.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from run import reset_postgres  # bench/run.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
RECORDS = int(os.environ.get("BENCH_RECORDS", "100000"))
RUNS = 7


def setup() -> str | None:
    """Point Django at a throwaway database; return the PostgreSQL URL to drop afterwards."""
    sys.path.insert(0, str(ROOT))
    data_dir = tempfile.mkdtemp(prefix="bench-dashboard-")
    os.environ.update(DATA_DIR=data_dir, DEBUG="True", LOG_LEVEL="WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    url = os.environ.get("BENCH_DATABASE_URL")
    os.environ.pop("REDIS_URL", None)
    if url:
        reset_postgres(url)
        os.environ["DATABASE_URL"] = url
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{data_dir}/bench.sqlite3"
    import django

    django.setup()
    return url


def seed() -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from billing.models import ApiKey
    from llm_api.models import UsageRecord

    call_command("migrate", verbosity=0)
    user_model = get_user_model()
    user_model.objects.create_superuser("bench-admin", "b@example.com", "bench-password-123")
    users = user_model.objects.bulk_create(
        user_model(username=f"user{n}", email=f"user{n}@example.com") for n in range(50)
    )
    keys = ApiKey.objects.bulk_create(
        ApiKey(user=users[n % 50], name=f"key{n}", prefix=f"sk-llm-{n:04d}", last4="abcd",
               digest=f"{n:064d}")
        for n in range(100)
    )  # fmt: skip
    models = [
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4o"),
        ("gemini", "gemini-2.0-flash"),
        ("gemini", "gemini-1.5-pro"),
        ("ollama", "llama3"),
        ("ollama", "qwen2.5"),
    ]
    rng = random.Random(1)
    started = time.perf_counter()
    for start in range(0, RECORDS, 5000):
        batch = []
        for n in range(start, min(start + 5000, RECORDS)):
            provider, model = rng.choice(models)
            key = rng.choice(keys)
            failed = rng.random() < 0.05
            batch.append(UsageRecord(
                request_id=f"bench_{n}", user_id=key.user_id, api_key=key,
                route="chat.completions", provider=provider, model=model,
                stream=rng.random() < 0.5, prompt_tokens=0 if failed else rng.randint(5, 4000),
                completion_tokens=0 if failed else rng.randint(1, 1500),
                credits=0 if failed else rng.randint(100, 2_000_000),
                status="upstream_error" if failed else "ok",
                error_code="upstream_error" if failed else "",
                latency_ms=rng.randint(30, 20000), ttft_ms=rng.randint(10, 3000)))  # fmt: skip
        UsageRecord.objects.bulk_create(batch)
    # Spread them over 30 days (created_at is set to now on insert).
    now = timezone.now()
    first = UsageRecord.objects.order_by("id").values_list("id", flat=True).first()
    per_day = RECORDS // 30 + 1
    for day in range(30):
        low = first + day * per_day
        UsageRecord.objects.filter(id__gte=low, id__lt=low + per_day).update(
            created_at=now - timedelta(days=day, minutes=rng.randint(0, 600))
        )
    print(f"seeded {RECORDS:,} usage records in {time.perf_counter() - started:.1f} s")


def timed(client, url: str) -> tuple[float, float, int]:
    """Return the best and median milliseconds of RUNS GETs of `url` and the page's size."""
    times, size = [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        size = len(response.content)
    return min(times), statistics.median(times), size


def measure(label: str) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    client = Client(SERVER_NAME="localhost")
    client.force_login(get_user_model().objects.get(username="bench-admin"))
    today = timezone.now().date()
    user = get_user_model().objects.get(username="user7")
    pages = {
        "dashboard, last 14 days": "/admin/dashboard/",
        "dashboard, last 30 days": f"/admin/dashboard/?since={today - timedelta(days=29)}"
        f"&until={today}",
        "a user's admin page": f"/admin/auth/user/{user.pk}/change/",
    }
    print(f"\n{label} ({connection.vendor}, {RECORDS:,} records, {RUNS} runs)")
    print("| page | best ms | median ms | KB |\n|---|---:|---:|---:|")
    for name, url in pages.items():
        best, median, size = timed(client, url)
        print(f"| {name} | {best:.0f} | {median:.0f} | {size // 1024} |")


def main() -> None:
    url = setup()
    try:
        seed()
        measure("GET through Django's test client")
    finally:
        shutil.rmtree(os.environ["DATA_DIR"], ignore_errors=True)
        if url:
            from django.db import connections

            connections.close_all()
            reset_postgres(url, create=False)


if __name__ == "__main__":
    main()
