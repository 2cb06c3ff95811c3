"""Process caches never make a thread wait for another thread's load: a load may need a pooled
database connection that the waiting thread holds (a thousand requests arriving at once each
hold one after their key lookup), and waiting would leave every thread stuck until the pool's
timeout."""

import threading

import pytest

from billing.selectors import price_for, price_table
from llm_api.selectors import TimedCache


def test_a_thread_computes_its_own_value_while_another_is_still_loading():
    cache = TimedCache(60)
    loading, release = threading.Event(), threading.Event()

    def slow() -> str:
        loading.set()
        release.wait(10)
        return "slow"

    loader = threading.Thread(target=cache.get, args=(slow,))
    loader.start()
    try:
        assert loading.wait(5)
        assert cache.get(lambda: "own") == "own"  # did not wait for the loader
    finally:
        release.set()
        loader.join(10)
    assert cache.get(lambda: "never") == "slow"


def test_a_stale_value_is_served_while_one_thread_refreshes_it():
    cache = TimedCache(60)
    assert cache.get(lambda: "first") == "first"
    cache.clear()
    loading, release = threading.Event(), threading.Event()

    def slow() -> str:
        loading.set()
        release.wait(10)
        return "second"

    refresher = threading.Thread(target=cache.get, args=(slow,))
    refresher.start()
    try:
        assert loading.wait(5)
        assert cache.get(lambda: "never") == "first"
    finally:
        release.set()
        refresher.join(10)
    assert cache.get(lambda: "never") == "second"


@pytest.mark.django_db
def test_prices_are_read_while_another_thread_reloads_them():
    assert price_for(provider="openai", model="gpt-4o-mini")  # loaded once
    price_table.clear()
    assert price_table._refreshing.acquire(blocking=False)  # a reload in progress elsewhere
    try:
        assert price_for(provider="openai", model="gpt-4o-mini")  # loads its own, no wait
    finally:
        price_table._refreshing.release()
