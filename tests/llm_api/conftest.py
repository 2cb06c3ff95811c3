"""Shared pieces of the LLM route tests: a key, a client using it, money helpers."""

import json

import pytest
from rest_framework.test import APIClient

from billing.models import CreditAccount, LedgerEntry
from billing.money import MICRO
from billing.services import api_key_create, price_set


@pytest.fixture
def alice_key(alice) -> str:
    return api_key_create(user=alice, name="laptop")[1]


@pytest.fixture
def key_api(alice_key) -> APIClient:
    """A client sending alice's API key in X-API-Key."""
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=alice_key)
    return api


@pytest.fixture
def token_prices(db):
    """Price every model by the token, so charges show the token counts."""
    price_set(model="*", per_request=0, per_1k_prompt=2 * MICRO, per_1k_completion=3 * MICRO)


def cost_of(prompt_tokens: int, completion_tokens: int) -> int:
    """The micro-credits `token_prices` charges for a call."""
    return prompt_tokens * 2 * MICRO // 1000 + completion_tokens * 3 * MICRO // 1000


def balance(user) -> int:
    return CreditAccount.objects.get(user=user).balance


def usage_entries(user) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(account__user=user, kind=LedgerEntry.Kind.USAGE))


def chat(client, **body):
    body.setdefault("messages", [{"role": "user", "content": "Say hello"}])
    return client.post("/v1/chat/completions", body, format="json")


def sse_events(response) -> list:
    """Return the JSON payloads of a streamed response's data lines ([DONE] as the string)."""
    text = b"".join(response.streaming_content).decode()
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events
