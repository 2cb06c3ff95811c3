"""price_for: exact rows win over patterns, the most specific pattern wins, 1 credit by default."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import ModelPrice
from billing.money import MICRO
from billing.selectors import DEFAULT_PRICE, Price, price_for
from billing.services import price_delete, price_set


@pytest.mark.django_db
def test_the_default_price_is_one_credit_per_request():
    price = price_for(provider="inhouse", model="smollm2-135m-instruct")
    assert price == DEFAULT_PRICE
    assert price.cost(1000, 1000) == MICRO


@pytest.mark.django_db
def test_an_exact_price_wins_over_patterns():
    price_set(model="*", per_request=2 * MICRO)
    price_set(model="openai/gpt-4*", per_request=0, per_1k_prompt=5 * MICRO)
    price_set(model="openai/gpt-4o", per_request=0, per_1k_completion=10 * MICRO)
    assert price_for(provider="openai", model="gpt-4o").source == "openai/gpt-4o"
    assert price_for(provider="openai", model="gpt-4-turbo").source == "openai/gpt-4*"
    assert price_for(provider="OpenAI", model="GPT-4-Turbo").source == "openai/gpt-4*"
    assert price_for(provider="gemini", model="gemini-2.0-flash").source == "*"


@pytest.mark.django_db
def test_the_most_specific_pattern_wins():
    price_set(model="openai/*", per_request=1)
    price_set(model="openai/gpt-4o-mini*", per_request=3)
    price_set(model="openai/gpt-4*", per_request=2)
    assert price_for(provider="openai", model="gpt-4o-mini-2024").per_request == 3
    assert price_for(provider="openai", model="gpt-4.1").per_request == 2
    assert price_for(provider="openai", model="o3").per_request == 1


def test_the_cost_rounds_up_to_the_micro_credit():
    price = Price(per_request=MICRO, per_1k_prompt=1, per_1k_completion=3)
    assert price.cost(0, 0) == MICRO
    assert price.cost(1, 0) == MICRO + 1  # 0.001 micro-credits, rounded up
    assert price.cost(1000, 1000) == MICRO + 4
    assert Price(0, 2 * MICRO, 4 * MICRO).cost(1500, 250) == 3 * MICRO + MICRO


@pytest.mark.django_db
def test_prices_are_served_from_memory_not_the_database():
    price_set(model="ollama/*", per_request=5)
    price_for(provider="ollama", model="llama3.2")
    with CaptureQueriesContext(connection) as queries:
        for _ in range(100):
            assert price_for(provider="ollama", model="llama3.2").per_request == 5
    assert len(queries) == 0


@pytest.mark.django_db
def test_a_changed_price_applies_at_once_in_this_process():
    price_set(model="ollama/*", per_request=5)
    assert price_for(provider="ollama", model="x").per_request == 5
    price_set(model="ollama/*", per_request=7)
    assert price_for(provider="ollama", model="x").per_request == 7
    price_delete(price=ModelPrice.objects.get(model="ollama/*"))
    assert price_for(provider="ollama", model="x") == DEFAULT_PRICE


@pytest.mark.django_db
def test_a_price_changed_elsewhere_applies_after_the_cache_ttl(settings):
    price_set(model="ollama/*", per_request=5)
    assert price_for(provider="ollama", model="x").per_request == 5
    ModelPrice.objects.filter(model="ollama/*").update(per_request=9)  # another process's admin
    assert price_for(provider="ollama", model="x").per_request == 5
    settings.PRICE_CACHE_SECONDS = 0
    assert price_for(provider="ollama", model="x").per_request == 9


@pytest.mark.django_db
def test_a_negative_price_is_refused():
    with pytest.raises(ValidationError):
        price_set(model="openai/*", per_request=-1)
