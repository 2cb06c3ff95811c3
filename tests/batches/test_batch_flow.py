"""The Batch API in process: files, batch creation and validation, lines run through the one
pipeline (the fake upstream answers), output and error files, the ledger, cancel, expiry."""

import io
import json
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.utils import timezone
from rest_framework.test import APIClient

from batches import services
from batches.exceptions import KeyBusy
from batches.models import Batch
from billing.models import LedgerEntry
from billing.services import api_key_create
from tests.llm_api.conftest import cost_of, token_prices  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("upstream_providers", "token_prices")


@pytest.fixture
def alice_key(alice) -> str:
    return api_key_create(user=alice, name="batch")[1]


@pytest.fixture
def key_api(alice_key) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {alice_key}")
    return api


def line(custom_id: str, *, url: str = "/v1/chat/completions", **body) -> dict:
    body.setdefault("model", "openai/gpt-4o-mini")
    body.setdefault("messages", [{"role": "user", "content": f"hello {custom_id}"}])
    body.setdefault("max_tokens", 20)
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def upload(api: APIClient, rows: list, *, raw: bytes | None = None) -> str:
    content = raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows).encode()
    document = io.BytesIO(content)
    document.name = "input.jsonl"
    response = api.post("/v1/files", {"file": document, "purpose": "batch"}, format="multipart")
    assert response.status_code == 200, response.content
    return response.json()["id"]


def create(api: APIClient, file_id: str) -> dict:
    response = api.post(
        "/v1/batches",
        {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def jsonl(api: APIClient, file_id: str) -> list[dict]:
    response = api.get(f"/v1/files/{file_id}/content", HTTP_ACCEPT="application/binary")
    assert response.status_code == 200
    return [json.loads(text) for text in response.content.decode().splitlines()]


def usage_entries(user) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(account__user=user, kind=LedgerEntry.Kind.USAGE))


def test_a_batch_runs_every_line_once_and_charges_each_completed_line(
    key_api, alice, fake_upstream
):
    fake_upstream.behave(prompt_tokens=10, completion_tokens=5)
    batch = create(key_api, upload(key_api, [line(f"req-{n}") for n in range(20)]))
    assert batch["status"] == "in_progress"
    services.batch_work(batch_id=batch["id"])
    done = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert done["usage"]["total_tokens"] == 20 * 15
    output = jsonl(key_api, done["output_file_id"])
    assert sorted(row["custom_id"] for row in output) == sorted(f"req-{n}" for n in range(20))
    assert {row["response"]["status_code"] for row in output} == {200}
    assert done["error_file_id"] is None
    entries = usage_entries(alice)
    assert len(entries) == 20
    assert sum(-e.amount for e in entries) == 20 * cost_of(10, 5)
    assert len(fake_upstream.requests) == 20


def test_the_price_multiplier_applies_to_batch_lines(key_api, alice, fake_upstream, settings):
    settings.BATCH_PRICE_MULTIPLIER = 0.5
    fake_upstream.behave(prompt_tokens=1000, completion_tokens=1000)
    batch = create(key_api, upload(key_api, [line("a"), line("b")]))
    services.batch_work(batch_id=batch["id"])
    assert sum(-e.amount for e in usage_entries(alice)) == 2 * cost_of(1000, 1000) // 2


def test_a_line_the_upstream_refuses_lands_in_the_error_file_uncharged(
    key_api, alice, fake_upstream
):
    fake_upstream.behave(status=400)
    batch = create(key_api, upload(key_api, [line("bad")]))
    services.batch_work(batch_id=batch["id"])
    done = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
    assert done["output_file_id"] is None
    [row] = jsonl(key_api, done["error_file_id"])
    assert row["custom_id"] == "bad"
    assert row["response"]["status_code"] == 400
    assert usage_entries(alice) == []


def test_bad_lines_fail_the_batch_naming_them(key_api, alice, settings):
    settings.BATCH_FILE_MAX_LINES = 50_000
    key = alice.api_keys.get()
    key.allowed_models = ["openai/gpt-4o-mini"]
    key.save()
    from django.core.cache import cache

    cache.clear()
    rows = [
        json.dumps(line("ok")),
        "{not json",
        json.dumps(line("ok")),
        json.dumps(line("other", url="/v1/embeddings")),
        json.dumps(line("forbidden", model="openai/gpt-4o")),
    ]
    batch = create(key_api, upload(key_api, [], raw="\n".join(rows).encode()))
    assert batch["status"] == "failed"
    failures = {(e["line"], e["code"]) for e in batch["errors"]["data"]}
    assert failures == {
        (2, "invalid_json"),
        (3, "duplicate_custom_id"),
        (4, "mismatched_url"),
        (5, "model_not_allowed"),
    }


def test_a_file_of_50001_lines_fails_its_batch_naming_the_line_over_the_cap(key_api):
    rows = [json.dumps(line(f"n{n}")) for n in range(50_001)]
    file_id = upload(key_api, [], raw="\n".join(rows).encode())  # the upload takes it
    batch = create(key_api, file_id)
    assert batch["status"] == "failed"
    [error] = batch["errors"]["data"]
    assert (error["line"], error["code"]) == (50_001, "too_many_lines")
    assert "at most 50000" in error["message"]
    assert not Batch.objects.get(pk=batch["id"]).lines.exists()


def test_cancel_stops_the_remaining_lines_and_charges_only_the_run_ones(
    key_api, alice, fake_upstream
):
    batch = create(key_api, upload(key_api, [line(f"c{n}") for n in range(5)]))
    for _ in range(2):
        services.line_run(line=services.line_claim(batch_id=batch["id"]))
    cancelled = key_api.post(f"/v1/batches/{batch['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    services.batch_work(batch_id=batch["id"])
    assert len(fake_upstream.requests) == 2
    assert cancelled["request_counts"] == {"total": 5, "completed": 2, "failed": 3}
    errors = jsonl(key_api, cancelled["error_file_id"])
    assert {row["error"]["code"] for row in errors} == {"batch_cancelled"}
    assert len(usage_entries(alice)) == 2


def test_a_batch_past_its_window_expires(key_api, fake_upstream):
    batch = create(key_api, upload(key_api, [line("e1"), line("e2")]))
    Batch.objects.filter(pk=batch["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.batches_tick()
    expired = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert expired["status"] == "expired"
    assert {row["error"]["code"] for row in jsonl(key_api, expired["error_file_id"])} == {
        "batch_expired"
    }
    assert fake_upstream.requests == []


def test_a_lost_lease_is_run_again_once(key_api, alice, fake_upstream):
    batch = create(key_api, upload(key_api, [line("l1"), line("l2")]))
    claimed = services.line_claim(batch_id=batch["id"])  # its worker dies here
    Batch.objects.get(pk=batch["id"]).lines.filter(pk=claimed.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert services.batches_tick() == [batch["id"]]
    services.batch_work(batch_id=batch["id"])
    done = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert len(usage_entries(alice)) == 2


def test_a_worker_stops_claiming_once_the_batch_is_past_its_window(key_api, fake_upstream):
    batch = create(key_api, upload(key_api, [line("w1"), line("w2"), line("w3")]))
    services.line_run(line=services.line_claim(batch_id=batch["id"]))
    Batch.objects.filter(pk=batch["id"]).update(expires_at=timezone.now())
    services.batch_work(batch_id=batch["id"])  # no sweep: the worker itself sees the window
    expired = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert expired["status"] == "expired"
    assert expired["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    assert len(fake_upstream.requests) == 1
    assert [row["error"]["code"] for row in jsonl(key_api, expired["error_file_id"])] == [
        "batch_expired",
        "batch_expired",
    ]


def test_a_batch_whose_every_line_ran_completes_though_finalised_past_its_window(
    key_api, fake_upstream
):
    batch = create(key_api, upload(key_api, [line("f1")]))
    services.line_run(line=services.line_claim(batch_id=batch["id"]))
    Batch.objects.filter(pk=batch["id"]).update(expires_at=timezone.now())
    services.batches_tick()
    done = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 1, "completed": 1, "failed": 0}


def test_a_key_runs_at_most_its_batch_concurrency_cap_across_its_batches(
    key_api, alice, settings, fake_upstream
):
    settings.BATCH_CONCURRENCY_LIMIT = 1
    first = create(key_api, upload(key_api, [line("a1"), line("a2")]))
    second = create(key_api, upload(key_api, [line("b1")]))
    running = services.line_claim(batch_id=first["id"])  # another worker's line
    with pytest.raises(KeyBusy):
        services.line_claim(batch_id=second["id"])
    # A worker of the second batch meets the cap and leaves the line to the running worker,
    # to look again when that worker's lease runs out (should it have died).
    capped = services.batch_work(batch_id=second["id"])
    assert capped[0] == second["id"]
    assert 0 < capped[1] <= settings.BATCH_LEASE_SECONDS + 1
    assert Batch.objects.get(pk=second["id"]).status == "in_progress"
    assert fake_upstream.requests == []
    # Another key of the same user has a cap of its own.
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=alice, name='b')[1]}")
    third = create(other, upload(other, [line("c1")]))
    assert services.line_claim(batch_id=third["id"]) is not None
    # The running worker finishes its line, then its batch, then goes on with the key's next.
    services.line_run(line=running)
    assert services.batch_work(batch_id=first["id"]) is None
    for batch in (first, second):
        assert key_api.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed"
    assert len(usage_entries(alice)) == 3


def test_another_users_files_and_batches_are_404(key_api, bob_jwt):
    file_id = upload(key_api, [line("x")])
    batch = create(key_api, file_id)
    assert bob_jwt.get(f"/v1/files/{file_id}").status_code == 404
    assert bob_jwt.get(f"/v1/files/{file_id}/content").status_code == 404
    assert bob_jwt.get(f"/v1/batches/{batch['id']}").status_code == 404
    assert bob_jwt.post(f"/v1/batches/{batch['id']}/cancel").status_code == 404


def test_batches_page_newest_first(key_api):
    file_id = upload(key_api, [line("p")])
    ids = [create(key_api, file_id)["id"] for _ in range(5)]
    first = key_api.get("/v1/batches?limit=2").json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = key_api.get(f"/v1/batches?limit=10&after={first['last_id']}").json()
    assert [b["id"] for b in rest["data"]] == ids[::-1][2:] and not rest["has_more"]


def test_a_line_that_finds_no_credit_fails_insufficient_quota(key_api, alice, fake_upstream):
    from billing.models import CreditAccount

    CreditAccount.objects.filter(user=alice).update(balance=0)
    batch = create(key_api, upload(key_api, [line("poor")]))
    services.batch_work(batch_id=batch["id"])
    done = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert done["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
    [row] = jsonl(key_api, done["error_file_id"])
    assert row["error"]["code"] == "insufficient_quota"
    assert fake_upstream.requests == []
    assert usage_entries(alice) == []


def test_batch_lines_do_not_use_the_keys_live_rate_limit(key_api, alice, fake_upstream):
    key = alice.api_keys.get()
    key.rpm_limit = 1
    key.save()
    from django.core.cache import cache

    cache.clear()
    batch = create(key_api, upload(key_api, [line(f"r{n}") for n in range(3)]))
    services.batch_work(batch_id=batch["id"])
    done = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert done["request_counts"]["completed"] == 3
    live = key_api.post(
        "/v1/chat/completions",
        {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    assert live.status_code == 200


def test_a_batch_over_the_enqueued_token_cap_is_refused(key_api, settings):
    settings.BATCH_ENQUEUED_TOKENS_LIMIT = 80
    file_id = upload(key_api, [line("t1")])  # about 45 tokens: 25 of body, 20 of max_tokens
    assert create(key_api, file_id)["status"] == "in_progress"
    response = key_api.post(
        "/v1/batches",
        {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert create(key_api, upload(key_api, [line("t2", max_tokens=1)]))["status"] == "in_progress"
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "batch_token_limit_exceeded"


def test_files_list_and_delete_but_a_batch_input_stays(key_api):
    used = upload(key_api, [line("d")])
    create(key_api, used)
    spare = upload(key_api, [line("s")])
    listed = {f["id"] for f in key_api.get("/v1/files").json()["data"]}
    assert {used, spare} <= listed
    assert key_api.delete(f"/v1/files/{spare}").json()["deleted"] is True
    assert key_api.get(f"/v1/files/{spare}").status_code == 404
    assert key_api.delete(f"/v1/files/{used}").status_code == 400


def test_a_batch_file_may_be_larger_than_other_request_bodies(key_api, settings):
    settings.REQUEST_MAX_BYTES = 4096
    settings.BATCH_FILE_MAX_BYTES = 64 * 1024
    rows = [line(f"q{i}") for i in range(100)]  # about 15 KB

    assert upload(key_api, rows)
    document = io.BytesIO(b"{}\n" * 70_000)  # 210 KB: past the file limit and its framing
    document.name = "huge.jsonl"
    response = key_api.post("/v1/files", {"file": document, "purpose": "batch"}, format="multipart")
    assert response.status_code == 413
    assert "BATCH_FILE_MAX_BYTES" in response.json()["error"]["message"]
    chat = key_api.post(
        "/v1/chat/completions", line("big", content="x" * 5000)["body"], format="json"
    )
    assert chat.status_code == 413
    assert "REQUEST_MAX_BYTES" in chat.json()["error"]["message"]


def test_a_keys_own_batch_caps_set_through_the_api_replace_the_settings(
    key_api, alice, alice_jwt, settings
):
    settings.BATCH_ENQUEUED_TOKENS_LIMIT, settings.BATCH_CONCURRENCY_LIMIT = 0, 4
    key = alice.api_keys.get()
    response = alice_jwt.patch(
        f"/api/keys/{key.pk}/",
        {"batch_concurrency_limit": 1, "batch_tokens_limit": 80},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert (response.json()["batch_concurrency_limit"], response.json()["batch_tokens_limit"]) == (
        1,
        80,
    )
    first = create(key_api, upload(key_api, [line("k1")]))  # about 45 tokens
    refused = key_api.post(
        "/v1/batches",
        {
            "input_file_id": upload(key_api, [line("k2")]),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        format="json",
    )
    assert refused.status_code == 429
    second = create(key_api, upload(key_api, [line("k3", max_tokens=1)]))
    assert services.line_claim(batch_id=first["id"]) is not None
    with pytest.raises(KeyBusy):
        services.line_claim(batch_id=second["id"])
    bad = alice_jwt.patch(f"/api/keys/{key.pk}/", {"batch_concurrency_limit": 0}, format="json")
    assert bad.status_code == 400
    assert "batch_concurrency_limit" in json.dumps(bad.json())


def test_the_admin_shows_progress_links_the_files_and_cancels(key_api, admin_client, monkeypatch):
    # An id the admin must quote in its URLs: "_22" unquoted would be a double quote.
    ids = iter(f"batch_22{n:030x}" for n in range(100))
    monkeypatch.setattr(Batch._meta.get_field("id"), "default", lambda: next(ids))
    batch = create(key_api, upload(key_api, [line("m1"), line("m2"), line("m3")]))
    services.line_run(line=services.line_claim(batch_id=batch["id"]))
    listing = admin_client.get("/admin/batches/batch/").content.decode()
    assert batch["id"] in listing and "1/3 (0 failed)" in listing
    # The admin's own URLs quote a primary key ("_" is "_5F"): batch_22… unquoted is batch"….
    change = f"/admin/batches/batch/{quote(batch['id'])}/change/"
    assert change in listing
    page = admin_client.get(change).content.decode()
    assert f"/admin/batches/file/{quote(batch['input_file_id'])}/change/" in page
    response = admin_client.post(
        "/admin/batches/batch/", {"action": "cancel", "_selected_action": [batch["id"]]}
    )
    assert response.status_code == 302
    cancelled = key_api.get(f"/v1/batches/{batch['id']}").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    page = admin_client.get(change).content.decode()
    for file_id in (cancelled["output_file_id"], cancelled["error_file_id"]):
        assert f"/admin/batches/file/{quote(file_id)}/change/" in page
