"""The process caches (aliases, model lists, prices) never make a thread wait for another
thread's load: a load may need a pooled database connection that the waiting thread holds (a
thousand requests arriving at once each hold one after their key lookup), and waiting would
leave every thread stuck until the pool's timeout."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from project.timed import TimedCache


@contextmanager
def loading_in_another_thread(cache: TimedCache, value: str) -> Iterator[None]:
    """Run `cache.get` in another thread whose computation of `value` is under way until the
    block ends."""
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return value

    loader = threading.Thread(target=cache.get, args=(slow,))
    loader.start()
    try:
        assert started.wait(5)
        yield
    finally:
        release.set()
        loader.join(10)


def test_a_thread_computes_its_own_value_while_another_is_still_loading():
    cache = TimedCache(60)
    with loading_in_another_thread(cache, "slow"):
        assert cache.get(lambda: "own") == "own"  # did not wait for the loader
    assert cache.get(lambda: "never") == "slow"


def test_a_stale_value_is_served_while_one_thread_refreshes_it():
    cache = TimedCache(0)  # expired as soon as it is computed
    assert cache.get(lambda: "first") == "first"
    with loading_in_another_thread(cache, "second"):
        assert cache.get(lambda: "never") == "first"
    assert cache.get(lambda: "third") == "third"  # "second" expired at once too


def test_a_load_that_began_before_a_clear_is_not_kept():
    cache = TimedCache(60)
    with loading_in_another_thread(cache, "old rows"):
        cache.clear()  # an admin saved a price meanwhile
    assert cache.get(lambda: "new rows") == "new rows"
