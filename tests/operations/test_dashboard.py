"""The admin dashboard: staff only, linked from the admin index, drawn as SVG, and its numbers
agree with GET /api/usage/ and the ledger for the same range."""

import re
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import LedgerEntry
from billing.money import to_credits
from billing.services import api_key_create
from llm_api.models import UsageRecord
from tests.conftest import jwt_client
from tests.llm_api.conftest import chat, sse_events

pytestmark = pytest.mark.usefixtures("upstream_providers", "token_prices")


def figure(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', page)
    assert found, element_id
    return found.group(1)


@pytest.fixture
def traffic(alice, bob, key_api, fake_upstream):
    """A few calls by alice (by key, some streamed, one failed) and bob (signed in)."""
    bob_key = api_key_create(user=bob, name="bob's")[1]
    fake_upstream.behave(chunks=["a", "b"], prompt_tokens=120, completion_tokens=30)
    assert chat(key_api, model="openai/gpt-4o-mini").status_code == 200
    sse_events(chat(key_api, model="gemini/gemini-2.0-flash", stream=True))
    fake_upstream.behave(chunks=["c"], prompt_tokens=1000, completion_tokens=7)
    bob_api = jwt_client(bob)
    bob_api.credentials(HTTP_AUTHORIZATION=f"Bearer {bob_key}")
    assert chat(bob_api, model="ollama/llama3").status_code == 200
    fake_upstream.behave(status=500)
    assert chat(key_api, model="openai/gpt-4o-mini").status_code >= 500
    return [alice, bob]


def test_the_dashboard_agrees_with_the_usage_api_and_the_ledger(admin_client, traffic):
    today = timezone.now().date().isoformat()
    page = admin_client.get("/admin/dashboard/", {"since": today, "until": today})
    assert page.status_code == 200
    html = page.content.decode()

    api_totals = [jwt_client(user).get("/api/usage/", {"since": today, "until": today}).json()
                  for user in traffic]  # fmt: skip
    requests = sum(t["total"]["requests"] for t in api_totals)
    tokens = sum(t["total"]["prompt_tokens"] + t["total"]["completion_tokens"] for t in api_totals)
    spent = sum(Decimal(t["total"]["spent"]) for t in api_totals)
    usage_entries = LedgerEntry.objects.filter(kind="usage")
    ledger_spent = -sum(entry.amount for entry in usage_entries)

    # The failed call is a request on the dashboard (and in its error rate) but charged nothing.
    assert int(figure(html, "total-requests")) == requests + 1 == UsageRecord.objects.count()
    assert int(figure(html, "total-tokens")) == tokens == 2 * 150 + 1007
    assert Decimal(figure(html, "total-credits")) == spent == to_credits(ledger_spent)
    assert spent > 0


def test_the_dashboard_draws_charts_and_tables(admin_client, traffic):
    html = admin_client.get("/admin/dashboard/").content.decode()
    assert html.count('<svg class="chart"') == 4
    assert len(re.findall(r'<rect class="bar"', html)) >= 4  # models and users, credits and tokens
    for model in ("openai/gpt-4o-mini", "gemini/gemini-2.0-flash", "ollama/llama3"):
        assert model in html
    assert "bob&#x27;s" in html or "bob's" in html  # the top keys table
    providers = re.search(r'<table id="providers".*?</table>', html, re.S).group(0)
    assert "50%" in providers  # openai: one of its two calls failed
    assert "upstream_error" in html  # recent requests


def test_the_admin_index_links_to_the_dashboard(admin_client):
    html = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/">Dashboard</a>' in html


def test_only_staff_see_the_dashboard(client, alice):
    assert client.get("/admin/dashboard/").status_code == 302
    client.force_login(alice)
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"since": "2026-02-30"},
        {"since": "2026-05-01", "until": "2026-04-01"},
        {"since": "1900-01-01", "until": "2026-01-01"},
        {"until": "9999-12-31"},
    ],
)
def test_bad_ranges_show_the_default_range_not_an_error(admin_client, query):
    response = admin_client.get("/admin/dashboard/", query)
    assert response.status_code == 200
    assert '<svg class="chart"' in response.content.decode()
