"""The Batch API end to end: a live gateway, its batch consumer (`manage.py run_huey`) as a
subprocess, the official `openai` SDK, and the fake upstream behind the gateway's providers."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from llm_api.localmodel import ServerProcess
from tests.fake_upstream import FakeUpstream
from tests.live import LiveGateway, live_user
from tests.live.processes import stop, track

pytestmark = pytest.mark.e2e

BASE_DIR = Path(__file__).resolve().parents[2]
MODEL = "openai/gpt-4o-mini"
PRICE = {"per_request": 0, "per_1k_prompt": 2_000_000, "per_1k_completion": 3_000_000}
SET_PRICE = f"from billing.services.prices import price_set; price_set(model='*', **{PRICE!r})"
LEDGER = (
    "from billing.models import LedgerEntry as L; "
    "rows = L.objects.filter(kind=L.Kind.USAGE, account__user__username='{user}'); "
    "print('LEDGER', rows.count(), -sum(r.amount for r in rows))"
)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(request, upstream: FakeUpstream, tmp_path: Path) -> Iterator[LiveGateway]:
    env = {
        **upstream.env(timeout=10),
        "SIGNUP_CREDITS": "1000000",
        "BATCH_LEASE_SECONDS": "3",
        "BATCH_WORKERS": "4",
        **getattr(request, "param", {}),  # a test's own settings (indirect parametrize)
    }
    live = LiveGateway(env, workdir=tmp_path)
    try:
        live.prepare()
        live.manage("shell", "-c", SET_PRICE)
        yield live.start()
    finally:
        live.stop()


def consumer(gateway: LiveGateway, name: str) -> ServerProcess:
    process = ServerProcess.start(
        name,
        [sys.executable, "manage.py", "run_huey"],
        env=gateway.env,
        log_path=gateway.workdir / f"{name}.log",
        cwd=BASE_DIR,
    )
    track(process)
    return process


def jsonl(count: int) -> bytes:
    rows = [
        {
            "custom_id": f"line-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"hi {n}"}]},
        }
        for n in range(count)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def wait_for(client: openai.OpenAI, batch_id: str, done, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} stayed {batch.status}: {batch.request_counts}")


def ledger(gateway: LiveGateway, username: str) -> tuple[int, int]:
    output = gateway.manage("shell", "-c", LEDGER.format(user=username))
    [line] = [text for text in output.splitlines() if text.startswith("LEDGER ")]
    count, total = line.split()[1:]
    return int(count), int(total)


def custom_ids(upstream: FakeUpstream) -> list[str]:
    return [r.body["messages"][0]["content"] for r in upstream.requests if r.body]


def test_the_sdk_runs_a_100_line_batch_through_the_consumer(gateway, upstream):
    upstream.behave(prompt_tokens=10, completion_tokens=5)
    user = live_user(gateway.url, "batcher")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=user.key)
    worker = consumer(gateway, "batch worker")
    try:
        uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(100))), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_for(client, batch.id, lambda b: b.status in ("completed", "failed"))
    finally:
        stop(worker)
    assert done.status == "completed", done
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (100, 100, 0)
    output = client.files.content(done.output_file_id).text.splitlines()
    rows = [json.loads(text) for text in output]
    assert sorted(row["custom_id"] for row in rows) == sorted(f"line-{n}" for n in range(100))
    assert {row["response"]["status_code"] for row in rows} == {200}
    per_line = (10 * PRICE["per_1k_prompt"] + 5 * PRICE["per_1k_completion"]) // 1000
    assert ledger(gateway, "batcher") == (100, 100 * per_line)
    assert len(upstream.requests) == 100


def test_a_killed_consumer_is_taken_over_and_each_line_runs_once(gateway, upstream):
    upstream.behave(delay=0.05)
    user = live_user(gateway.url, "crasher")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=user.key)
    first = consumer(gateway, "first worker")
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(100))), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(client, batch.id, lambda b: b.request_counts.completed >= 30)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    second = consumer(gateway, "second worker")
    try:
        done = wait_for(client, batch.id, lambda b: b.status in ("completed", "failed"))
    finally:
        stop(second)
        stop(first)
    assert done.status == "completed"
    # A line whose worker died between its settle and its result row is reported (error file,
    # batch_line_interrupted), never run twice: every custom_id once over both files.
    rows = [
        json.loads(text)
        for file_id in (done.output_file_id, done.error_file_id)
        if file_id
        for text in client.files.content(file_id).text.splitlines()
    ]
    assert sorted(row["custom_id"] for row in rows) == sorted(f"line-{n}" for n in range(100))
    assert {row["error"]["code"] for row in rows if row["error"]} <= {"batch_line_interrupted"}
    assert ledger(gateway, "crasher")[0] == 100


def create_batch(client: openai.OpenAI, lines: int):
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def test_cancel_stops_the_batch_and_charges_only_completed_lines(gateway, upstream):
    upstream.behave(delay=0.2)
    user = live_user(gateway.url, "canceller")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=user.key)
    worker = consumer(gateway, "batch worker")
    try:
        batch = create_batch(client, 100)
        wait_for(client, batch.id, lambda b: b.request_counts.completed >= 10)
        assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
        done = wait_for(client, batch.id, lambda b: b.status == "cancelled")
        seen = len(upstream.requests)
        time.sleep(1.0)
        assert len(upstream.requests) == seen  # no upstream call after cancelled_at
    finally:
        stop(worker)
    counts = done.request_counts
    assert counts.total == 100 and counts.completed + counts.failed == 100
    assert counts.completed < 100
    errors = [json.loads(t) for t in client.files.content(done.error_file_id).text.splitlines()]
    assert {row["error"]["code"] for row in errors} == {"batch_cancelled"}
    assert ledger(gateway, "canceller")[0] == counts.completed


def test_the_sdk_pages_through_25_batches_and_others_are_404(gateway, upstream):
    user = live_user(gateway.url, "pager")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=user.key)
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(1))), purpose="batch")
    created = [
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(25)
    ]
    listed = [batch.id for batch in client.batches.list(limit=10)]
    assert listed == created[::-1]
    other = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=live_user(gateway.url, "eve").key)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(created[0])
    with pytest.raises(openai.NotFoundError):
        other.files.content(uploaded.id)


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="two consumers share Redis")
def test_two_consumers_run_each_line_exactly_once(gateway, upstream):
    upstream.behave(delay=0.02)
    user = live_user(gateway.url, "pair")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=user.key)
    workers = [consumer(gateway, "worker one"), consumer(gateway, "worker two")]
    try:
        batch = create_batch(client, 100)
        done = wait_for(client, batch.id, lambda b: b.status in ("completed", "failed"))
    finally:
        for worker in workers:
            stop(worker)
    assert done.status == "completed"
    sent = sorted(custom_ids(upstream))
    assert sent == sorted(f"hi {n}" for n in range(100))
    assert ledger(gateway, "pair")[0] == 100


def most_at_once(calls) -> int:
    """Return the most of these upstream calls that were in flight at the same moment."""
    events = sorted([(c.started, 1) for c in calls] + [(c.ended, -1) for c in calls])
    most = current = 0
    for _, step in events:  # at the same instant an end (-1) sorts before a start
        current += step
        most = max(most, current)
    return most


def content(request) -> str:
    return request.body["messages"][0]["content"] if request.body else ""


@pytest.mark.parametrize(
    "gateway", [{"BATCH_CONCURRENCY_LIMIT": "2", "DEFAULT_CONCURRENCY_LIMIT": "4"}], indirect=True
)
def test_a_batch_concurrency_cap_of_2_holds_across_the_keys_batches_and_spares_live_calls(
    gateway, upstream
):
    upstream.behave(delay=0.3)
    user = live_user(gateway.url, "capped")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=user.key, max_retries=0)
    # Four consumer threads and two worker tasks queued per batch: without the key's cap, four
    # of its lines would run at once.
    worker = consumer(gateway, "batch worker")
    try:
        batches = [create_batch(client, 12), create_batch(client, 12)]
        wait_for(client, batches[0].id, lambda b: b.request_counts.completed >= 1)

        def live(n: int) -> str:
            answer = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"live {n}"}]
            )
            return answer.choices[0].message.content

        # The key's four live slots are all its own: batch lines take none of them.
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(live, range(4)))
        done = [wait_for(client, b.id, lambda b: b.status == "completed") for b in batches]
    finally:
        stop(worker)
    assert all(answers)
    assert [b.request_counts.completed for b in done] == [12, 12]
    lines = [r for r in upstream.requests if content(r).startswith("hi ")]
    calls = [r for r in upstream.requests if content(r).startswith("live ")]
    assert len(lines) == 24 and len(calls) == 4
    assert most_at_once(lines) == 2
    # The live calls ran beside the batch's two lines, not after them.
    assert most_at_once(lines + calls) > 2
    assert ledger(gateway, "capped")[0] == 28


@pytest.mark.parametrize("gateway", [{"BATCH_COMPLETION_WINDOW_SECONDS": "3"}], indirect=True)
def test_a_batch_past_its_shortened_window_expires_and_charges_only_its_completed_lines(
    gateway, upstream
):
    upstream.behave(delay=0.2)
    user = live_user(gateway.url, "late")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=user.key)
    worker = consumer(gateway, "batch worker")
    try:
        # The window starts when the batch is created: first see the consumer run a batch, so
        # that a slow start of its process does not eat the window. A starved machine may let
        # that one-line batch expire too; then it is tried again.
        warmed_up = 0
        for _ in range(5):
            ready = create_batch(client, 1)
            ended = wait_for(client, ready.id, lambda b: b.status in {"completed", "expired"})
            warmed_up += ended.request_counts.completed
            if ended.status == "completed":
                break
        assert warmed_up == 1, "the consumer ran no one-line batch within its window, 5 times"
        batch = create_batch(client, 100)
        done = wait_for(client, batch.id, lambda b: b.status == "expired")
        seen = len(upstream.requests)
        time.sleep(1.0)
        assert len(upstream.requests) == seen  # no line starts after the window
    finally:
        stop(worker)
    counts = done.request_counts
    assert counts.total == 100 and counts.completed + counts.failed == 100
    assert 0 < counts.completed < 100
    assert done.expired_at is not None
    errors = [json.loads(t) for t in client.files.content(done.error_file_id).text.splitlines()]
    assert len(errors) == counts.failed
    assert {row["error"]["code"] for row in errors} == {"batch_expired"}
    output = client.files.content(done.output_file_id).text.splitlines()
    assert len(output) == counts.completed
    assert ledger(gateway, "late")[0] == counts.completed + 1  # and the warm-up's line
