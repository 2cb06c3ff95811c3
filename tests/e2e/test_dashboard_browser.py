"""Operations on a real server: the admin dashboard in a real headless Chromium (charts drawn,
nothing fetched from elsewhere, a screenshot kept), and /metrics counting right across worker
processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.browser import offline_page
from tests.fake_upstream import FakeUpstream
from tests.live import LiveGateway, live_user

pytestmark = pytest.mark.e2e

TOKEN = "live-metrics-token"
ADMIN, PASSWORD = "ops-admin", "ops-admin-password-123"
SEED = f"""
import random
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from llm_api.models import UsageRecord
User = get_user_model()
User.objects.create_superuser({ADMIN!r}, "ops@example.com", {PASSWORD!r})
users = [User.objects.create_user(f"seeded{{n}}", password="x-unused-123") for n in range(4)]
models = [("openai", "gpt-4o-mini"), ("gemini", "gemini-2.0-flash"), ("ollama", "llama3")]
rng = random.Random(7)
now = timezone.now()
records = []
for n in range(600):
    provider, model = rng.choice(models)
    records.append(UsageRecord(
        request_id=f"seed_{{n}}", user=rng.choice(users), route="chat.completions",
        provider=provider, model=model, prompt_tokens=rng.randint(10, 900),
        completion_tokens=rng.randint(5, 400), credits=rng.randint(1000, 900000),
        status="ok" if rng.random() > 0.05 else "upstream_error",
        latency_ms=rng.randint(40, 4000), ttft_ms=rng.randint(20, 800)))
UsageRecord.objects.bulk_create(records)
for n, record in enumerate(UsageRecord.objects.filter(request_id__startswith="seed_")):
    UsageRecord.objects.filter(pk=record.pk).update(created_at=now - timedelta(days=n % 14))
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory) -> Iterator[LiveGateway]:
    # Two workers need a shared cache (billing.E001): with Redis, prove the counts add up.
    workers = "2" if os.environ.get("REDIS_URL") else "1"
    env = {**fake.env(timeout=10), "METRICS_TOKEN": TOKEN, "WEB_WORKERS": workers}
    with LiveGateway(env, workdir=tmp_path_factory.mktemp("ops")) as gateway:
        gateway.manage("shell", "-c", SEED)
        yield gateway


def test_the_dashboard_renders_its_charts_in_a_real_browser(browser, gateway, tmp_path):
    with offline_page(browser, gateway.url, viewport={"width": 1400, "height": 1800}) as (
        page,
        traffic,
    ):
        page.goto(f"{gateway.url}/admin/login/?next=/admin/")
        page.fill("#id_username", ADMIN)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#operations-module")
        page.click("text=Dashboard")
        page.wait_for_selector("svg.chart")

        charts = page.locator("svg.chart")
        assert charts.count() == 4
        for n in range(4):
            box = charts.nth(n).bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100, box
            assert charts.nth(n).locator("rect.bar").count() > 0
        assert int(page.inner_text("#total-requests")) == 600
        assert page.locator("#recent tr").count() > 10
        assert page.locator("#providers").inner_text().count("%") == 3
        screenshot = tmp_path / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"dashboard screenshot: {screenshot}")
        assert screenshot.stat().st_size > 10_000
        assert traffic.refused == [], traffic.refused


def samples(text: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def requests_counted(gateway) -> float:
    response = httpx.get(
        f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return sum(v for (name, _), v in samples(response.text).items() if name == "llm_requests_total")


def test_metrics_add_up_every_workers_requests(gateway, fake):
    fake.behave(chunks=["hi"], prompt_tokens=3, completion_tokens=2)
    user = live_user(gateway.url, "metrics-user")
    before = requests_counted(gateway)
    with httpx.Client(base_url=gateway.url, headers=user.key_headers, timeout=30) as client:
        for _ in range(8):
            body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    # Whichever worker answers the scrape, it sees every worker's calls.
    assert {requests_counted(gateway) - before for _ in range(6)} == {8}
    assert httpx.get(f"{gateway.url}/metrics", timeout=10).status_code == 401
    assert (
        httpx.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer no"}).status_code
        == 401
    )
