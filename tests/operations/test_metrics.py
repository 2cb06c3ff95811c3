"""GET /metrics: Prometheus text that a scraper parses, counters that move with requests, and a
door that stays shut without the token."""

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from billing.models import CreditHold
from billing.services import credits_hold
from operations import metrics
from tests.llm_api.conftest import chat, sse_events

TOKEN = "scrape-token-for-tests"

pytestmark = pytest.mark.usefixtures("upstream_providers")


@pytest.fixture(autouse=True)
def metrics_token(settings, db):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []


def scrape(api) -> dict[tuple[str, tuple], float]:
    """Return every sample of /metrics as {(name, sorted labels): value}."""
    response = api.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def unique_model() -> str:
    """A model name no other process uses: other test runs share the metrics folder."""
    return f"ops-{uuid.uuid4().hex[:12]}"


def test_counters_move_with_requests(api, key_api, fake_upstream):
    name = unique_model()
    model = {"provider": "openai", "model": name}
    before = scrape(api)
    fake_upstream.behave(chunks=["Hi", " there"], prompt_tokens=11, completion_tokens=7)
    assert chat(key_api, model=f"openai/{name}").status_code == 200
    response = chat(key_api, model=f"openai/{name}", stream=True)
    assert response.status_code == 200
    sse_events(response)
    after = scrape(api)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("llm_requests_total", **model, status="ok") == 2
    assert moved("llm_tokens_total", **model, kind="prompt") == 22
    assert moved("llm_tokens_total", **model, kind="completion") == 14
    assert moved("llm_request_duration_seconds_count", **model) == 2
    assert moved("llm_time_to_first_token_seconds_count", **model) >= 1  # the stream's
    assert moved("llm_credits_spent_total", **model) > 0
    # Open streams: a gauge of every live process, so only this one's own share is checked.
    assert metrics._streams == set()


def test_an_upstream_error_is_counted_as_one(api, key_api, fake_upstream):
    name = unique_model()
    labels = {"provider": "openai", "model": name}
    before = scrape(api)
    fake_upstream.behave(status=500)
    assert chat(key_api, model=f"openai/{name}").status_code >= 500
    after = scrape(api)
    errors = {
        key: sample - before.get(key, 0.0)
        for key, sample in after.items()
        if key[0] == "llm_errors_total" and dict(key[1]).items() >= labels.items()
    }
    assert sum(errors.values()) == 1, errors
    assert (
        value(after, "llm_requests_total", **labels, status="upstream_error")
        - value(before, "llm_requests_total", **labels, status="upstream_error")
        == 1
    )


def test_holds_outstanding_are_read_from_the_database(api, alice):
    credits_hold(user_id=alice.pk, amount=2_000_000, request_id="req_open", model="openai/x")
    samples = scrape(api)
    held = CreditHold.objects.filter(status="held")
    assert value(samples, "llm_holds_outstanding") == held.count() == 1
    assert value(samples, "llm_holds_outstanding_credits") == 2.0


def test_without_a_configured_token_there_is_no_metrics_page(api, settings):
    settings.METRICS_TOKEN = ""
    assert api.get("/metrics").status_code == 404
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer "])
def test_a_missing_or_wrong_token_is_refused(api, header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = api.get("/metrics", **extra)
    assert response.status_code == 401
    assert TOKEN not in response.content.decode()


def test_only_allowed_addresses_may_scrape(api, settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    assert api.get("/metrics", REMOTE_ADDR="192.0.2.1", **auth).status_code == 403
    assert api.get("/metrics", REMOTE_ADDR="10.1.2.3", **auth).status_code == 200
