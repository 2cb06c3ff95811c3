"""Seed 001's per-model limit on concurrent upstream calls, under real threads (and processes).

The limiter counts in this process on the local-memory cache and across processes on Redis;
the suite runs on both, and the slot tests below run each way on whichever cache is configured.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.db import connections
from rest_framework.test import APIClient

from billing.models import CreditHold
from llm_api.concurrency import ModelBusy, SharedSlots, slot_take
from llm_api.models import UsageRecord
from tests.fake_upstream import wait_until
from tests.llm_api.seed_support import image_bytes

ROOT = Path(__file__).resolve().parents[2]
HI = {"messages": [{"role": "user", "content": "Hi"}]}

pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="test-client")


@pytest.fixture
def limited(settings, upstream_providers):
    """One text slot, one image slot, a short wait."""
    settings.TEXT_MODEL = "openai/gpt-4o-mini"
    settings.IMAGE_MODEL = "openai/gpt-4o"
    settings.TEXT_MODEL_MAX_CONCURRENCY = 1
    settings.IMAGE_MODEL_MAX_CONCURRENCY = 1
    settings.CONCURRENCY_WAIT_SECONDS = 0.3
    return upstream_providers


def client(key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=key)
    return api


def in_thread(work) -> Future:
    """Run `work()` in another thread with its own database connection."""

    def run():
        try:
            return work()
        finally:
            connections.close_all()

    return pool.submit(run)


def text_call(key: str, path: str = "/text_model/chat/completion"):
    return client(key).post(path, HI, format="json")


def read_all(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.mark.django_db(transaction=True)
class TestTheRoutes:
    def test_over_the_limit_a_call_waits_briefly_then_gets_429(self, alice_key, limited):
        limited.behave(delay=1.5)
        first = in_thread(lambda: text_call(alice_key))
        assert wait_until(lambda: len(limited.requests) == 1)
        started = time.monotonic()
        second = text_call(alice_key)
        waited = time.monotonic() - started
        assert second.status_code == 429, second.content
        assert second["Retry-After"] == "1"
        assert second.json()["code"] == "model_busy"
        assert "all 1 of its concurrent calls" in second.json()["detail"]
        # It waited the configured 0.3 s, and no longer: the first call (1.5 s) was still running.
        assert waited >= 0.3
        assert len(limited.requests) == 1
        assert first.result(timeout=10).status_code == 200
        # The refused call held no credits and left no usage record.
        assert CreditHold.objects.count() == UsageRecord.objects.count() == 1

    def test_a_call_that_gets_a_slot_within_the_wait_goes_through(
        self, alice_key, limited, settings
    ):
        settings.CONCURRENCY_WAIT_SECONDS = 5
        limited.behave(delay=0.5)
        first = in_thread(lambda: text_call(alice_key))
        assert wait_until(lambda: len(limited.requests) == 1)
        second = text_call(alice_key)
        assert second.status_code == 200
        assert first.result(timeout=10).status_code == 200
        assert len(limited.requests) == 2

    def test_a_stream_holds_its_slot_until_it_ends(self, alice_key, limited):
        limited.behave(chunks=list("abcdefgh"), chunk_delay=0.15)
        opened = text_call(alice_key, "/text_model/chat/stream")
        reading = in_thread(lambda: read_all(opened))
        assert text_call(alice_key).status_code == 429
        assert b'{"response":"h"}' in reading.result(timeout=10)
        limited.behave(text="free again")
        assert text_call(alice_key).status_code == 200

    def test_a_client_that_hangs_up_midstream_frees_the_slot(self, alice_key, limited):
        limited.behave(chunks=list("abcdefgh"), chunk_delay=0.2)
        opened = text_call(alice_key, "/text_model/chat/stream")
        assert next(iter(opened.streaming_content)).startswith(b"data: ")
        assert text_call(alice_key).status_code == 429
        opened.close()
        limited.behave(text="free again")
        assert text_call(alice_key).status_code == 200

    def test_a_stream_never_read_frees_the_slot_when_closed(self, alice_key, limited):
        limited.behave(chunks=["a", "b"])
        opened = text_call(alice_key, "/text_model/chat/stream")
        opened.close()
        assert text_call(alice_key).status_code == 200

    def test_a_failed_upstream_call_frees_the_slot(self, alice_key, limited):
        limited.behave(status=500)
        assert text_call(alice_key).status_code == 502
        assert text_call(alice_key, "/text_model/chat/stream").status_code == 502
        limited.behave(text="ok")
        assert text_call(alice_key).status_code == 200

    def test_the_text_and_image_models_have_separate_limits(self, alice_key, limited):
        limited.behave(delay=1.0)
        busy_text = in_thread(lambda: text_call(alice_key))
        assert wait_until(lambda: len(limited.requests) == 1)
        form = {"prompt": "What is it?", "image": _upload()}
        image = client(alice_key).post("/image_model/chat/completion", form, format="multipart")
        assert image.status_code == 200
        assert busy_text.result(timeout=10).status_code == 200

    def test_a_limit_of_zero_means_no_limit(self, alice_key, limited, settings):
        settings.TEXT_MODEL_MAX_CONCURRENCY = 0
        limited.behave(delay=0.5)
        calls = [in_thread(lambda: text_call(alice_key)) for _ in range(3)]
        assert [call.result(timeout=10).status_code for call in calls] == [200, 200, 200]


def _upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("photo.png", image_bytes("PNG"), content_type="image/png")


# --- the slots themselves -----------------------------------------------------------------------


def test_slots_are_given_back_and_taken_again():
    name = "test-model"
    held = [slot_take(name=name, limit=2, wait=0) for _ in range(2)]
    with pytest.raises(ModelBusy):
        slot_take(name=name, limit=2, wait=0.1)
    held[0].release()
    held[0].release()  # twice is once
    again = slot_take(name=name, limit=2, wait=0)
    with pytest.raises(ModelBusy):
        slot_take(name=name, limit=2, wait=0)
    again.release()
    held[1].release()


def test_threads_never_hold_more_slots_than_the_limit():
    name, limit, inside, peak, lock = "test-threads", 3, [0], [0], threading.Lock()

    def work(_):
        with slot_take(name=name, limit=limit, wait=10):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    list(ThreadPoolExecutor(max_workers=12).map(work, range(24)))
    assert peak[0] == limit


def test_a_shared_lease_is_renewed_while_held(settings):
    settings.CONCURRENCY_LEASE_SECONDS = 1
    slots = SharedSlots()
    slot = slots.take("test-renew", 1, 0)
    assert slot is not None
    time.sleep(2.2)  # two leases: only renewal keeps it
    assert slots.take("test-renew", 1, 0) is None
    slot.release()
    again = slots.take("test-renew", 1, 0)
    assert again is not None
    again.release()


def test_a_shared_lease_nobody_renews_comes_free_within_one_lease(settings):
    # What happens to the slots of a process that died: its keeper no longer renews them.
    settings.CONCURRENCY_LEASE_SECONDS = 1
    dead = SharedSlots()
    assert dead.take("test-expiry", 1, 0) is not None
    dead.keeper._held.clear()
    started = time.monotonic()
    slot = SharedSlots().take("test-expiry", 1, 3)
    assert slot is not None
    assert time.monotonic() - started < 2.5  # within the 3 s wait: freed by the lease's expiry
    slot.release()


HOLDER = """
import os, sys, time
import django
django.setup()
from llm_api.concurrency import slot_take
slot = slot_take(name=sys.argv[1], limit=1, wait=5)
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(
    isinstance(caches["default"], LocMemCache), reason="needs a shared cache (REDIS_URL)"
)
def test_the_limit_holds_across_processes_and_a_killed_process_leaks_nothing(settings):
    settings.CONCURRENCY_LEASE_SECONDS = 1
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    env["CONCURRENCY_LEASE_SECONDS"] = "1"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "test-processes"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(1.5)  # past one lease: the other process's keeper renews it
        with pytest.raises(ModelBusy):
            slot_take(name="test-processes", limit=1, wait=0.2)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=5)
        slot = slot_take(name="test-processes", limit=1, wait=3)
        slot.release()
    finally:
        holder.kill()
        holder.wait(timeout=5)
