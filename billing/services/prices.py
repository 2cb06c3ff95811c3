"""Writes on the price table."""

from django.db import transaction

from billing.models import ModelPrice
from billing.selectors import price_table


def price_set(
    *, model: str, per_request: int, per_1k_prompt: int = 0, per_1k_completion: int = 0
) -> ModelPrice:
    """Create or change the price of `model` (provider/model or a pattern), in micro-credits;
    this process uses it at once, others within PRICE_CACHE_SECONDS."""
    price = ModelPrice.objects.filter(model__iexact=model.strip()).first() or ModelPrice()
    price.model = model.strip().lower()
    price.per_request = per_request
    price.per_1k_prompt = per_1k_prompt
    price.per_1k_completion = per_1k_completion
    price.full_clean()
    price.save()
    # Now, and again at commit: a reload between the two would still have read the old row.
    price_table.clear()
    transaction.on_commit(price_table.clear)
    return price


def price_delete(*, price: ModelPrice) -> None:
    """Remove a price row; the model falls back to a pattern or the default price."""
    price.delete()
    price_table.clear()
