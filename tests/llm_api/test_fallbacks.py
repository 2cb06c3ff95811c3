"""Fallbacks: an alias's next target answers when the one before fails before its first byte.

Two fake upstreams on their own ports: `openai` is the primary, `inhouse` the fallback, so each
case shows which one was asked, which one answered, and which one was charged.
"""

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from billing.models import LedgerEntry
from billing.money import MICRO
from billing.services import api_key_create, price_set
from llm_api.checks import check_model_fallbacks
from llm_api.models import ModelAlias, UsageRecord
from tests.fake_upstream.server import FakeUpstream
from tests.llm_api.conftest import chat, sse_events

PRIMARY, BACKUP = "openai/gpt-4o", "inhouse/backup"


@pytest.fixture
def backup_upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def chain(settings, fake_upstream, backup_upstream):
    """`smart` → openai/gpt-4o (the fake upstream), then inhouse/backup (the backup fake)."""
    providers = fake_upstream.llm_providers(timeout=1.0)
    providers["inhouse"] = backup_upstream.llm_providers(timeout=5.0)["inhouse"]
    settings.LLM_PROVIDERS = providers
    settings.MODEL_FALLBACKS = {"smart": [PRIMARY, BACKUP]}
    settings.FALLBACK_BACKOFF_SECONDS = 0.01
    price_set(model="openai/*", per_request=2 * MICRO)
    price_set(model="inhouse/*", per_request=MICRO // 2, per_1k_completion=MICRO)
    return fake_upstream, backup_upstream


def charged_model(user) -> tuple[str, int]:
    entry = LedgerEntry.objects.get(account__user=user, kind=LedgerEntry.Kind.USAGE)
    return entry.model, -entry.amount


def test_a_503_hands_over_to_the_next_target_which_is_named_and_charged(key_api, alice, chain):
    primary, backup = chain
    primary.behave(status=503, retry_after="1")
    backup.behave(text="From the backup", completion_tokens=100)
    response = chat(key_api, model="smart")
    assert response.status_code == 200, response.content
    assert response.json()["model"] == BACKUP
    assert response.json()["choices"][0]["message"]["content"] == "From the backup"
    assert (len(primary.requests), len(backup.requests)) == (1, 1)
    assert backup.last.body["model"] == "backup"
    assert charged_model(alice) == (BACKUP, MICRO // 2 + MICRO // 10)
    record = UsageRecord.objects.get()
    assert (record.provider, record.model, record.status) == ("inhouse", "backup", "ok")


def test_a_timeout_before_the_first_byte_hands_over(key_api, alice, chain):
    primary, _ = chain
    primary.behave(delay=3.0)  # the primary's timeout is 1 s
    response = chat(key_api, model="smart")
    assert response.status_code == 200, response.content
    assert response.json()["model"] == BACKUP
    assert charged_model(alice)[0] == BACKUP


def test_a_stream_whose_primary_fails_before_its_first_byte_streams_from_the_next(
    key_api, alice, chain
):
    primary, backup = chain
    primary.behave(status=502)
    backup.behave(chunks=["a", "b"])
    response = chat(key_api, model="smart", stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert {event["model"] for event in events[:-1]} == {BACKUP}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert charged_model(alice)[0] == BACKUP


@pytest.mark.django_db(transaction=True)
def test_a_stream_is_never_retried_after_its_first_chunk(key_api, alice, chain):
    primary, backup = chain
    primary.behave(chunks=["one ", "two ", "three "], drop_after=2)
    response = chat(key_api, model="smart", stream=True)
    events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["content"] == "one "
    assert any("error" in event for event in events if isinstance(event, dict))
    assert backup.requests == []
    model, amount = charged_model(alice)
    assert model == PRIMARY
    assert amount >= 2 * MICRO  # the primary's price, for what it delivered


def test_a_refusal_is_not_retried_elsewhere(key_api, alice, chain):
    primary, backup = chain
    primary.behave(status=400, error_body={"error": {"message": "bad temperature"}})
    response = chat(key_api, model="smart")
    assert response.status_code == 400
    assert backup.requests == []
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).exists()


def test_when_every_target_fails_the_last_error_is_answered_and_nothing_charged(
    key_api, alice, chain
):
    primary, backup = chain
    primary.behave(status=503)
    backup.behave(status=500)
    response = chat(key_api, model="smart")
    assert response.status_code == 502
    assert (len(primary.requests), len(backup.requests)) == (1, 1)
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).exists()
    assert UsageRecord.objects.get().status == "upstream_error"


def test_a_target_that_keeps_failing_cools_down(key_api, alice, chain, settings):
    settings.FALLBACK_COOLDOWN_FAILURES = 2
    settings.FALLBACK_COOLDOWN_SECONDS = 60
    primary, backup = chain
    primary.behave(status=503)
    for _ in range(3):
        assert chat(key_api, model="smart").status_code == 200
    assert len(primary.requests) == 2  # the third call passed over the cooling primary
    assert len(backup.requests) == 3


def test_an_admin_alias_carries_fallbacks_too(key_api, alice, chain):
    primary, _ = chain
    alias = ModelAlias(name="sturdy", target=PRIMARY, fallbacks=[BACKUP])
    alias.full_clean()
    alias.save()
    primary.behave(status=503)
    response = chat(key_api, model="sturdy")
    assert response.status_code == 200, response.content
    assert response.json()["model"] == BACKUP
    listed = {m["id"]: m for m in key_api.get("/v1/models").json()["data"]}
    assert listed["sturdy"]["alias_of"] == PRIMARY
    assert listed["sturdy"]["fallbacks"] == [BACKUP]
    assert listed["smart"]["fallbacks"] == [BACKUP]


def test_an_alias_fallback_must_name_a_configured_provider(db, settings):
    alias = ModelAlias(name="broken", target=PRIMARY, fallbacks=["nowhere/model"])
    with pytest.raises(ValidationError, match="nowhere/model"):
        alias.full_clean()


def test_a_key_allowed_only_the_fallback_is_answered_by_it(alice, chain):
    primary, _ = chain
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=api_key_create(user=alice, name="k", allowed_models=[BACKUP])[1])
    response = chat(api, model="smart")
    assert response.status_code == 200, response.content
    assert response.json()["model"] == BACKUP
    assert primary.requests == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"smart": ["openai/gpt-4o"]', "llm_api.E020"),  # not JSON
        ('["openai/gpt-4o"]', "llm_api.E020"),
        ({"smart": "openai/gpt-4o"}, "llm_api.E020"),
        ({"smart": ["openai/gpt-4o", "nowhere/model"]}, "llm_api.E021"),
    ],
)
def test_a_malformed_model_fallbacks_fails_the_system_check(settings, value, problem):
    settings.MODEL_FALLBACKS = value
    assert [error.id for error in check_model_fallbacks()] == [problem]


def test_a_well_formed_model_fallbacks_passes_the_system_check(settings):
    settings.MODEL_FALLBACKS = '{"smart": ["openai/gpt-4o", "ollama/llama3"]}'
    assert check_model_fallbacks() == []
