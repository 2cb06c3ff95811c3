"""The Batch API's writes: files, batch creation (validated line by line), running one line
through the same pipeline as a live request, cancel, expiry and finalisation."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Exists, F, Min, OuterRef, Q, Sum
from django.urls import resolve
from django.utils import timezone
from rest_framework.test import APIRequestFactory, force_authenticate

from batches.exceptions import (
    BatchNotCancellable,
    BatchTokensExceeded,
    InvalidBatch,
    InvalidFile,
    KeyBusy,
)
from batches.models import Batch, BatchLine, File
from batches.storage import batch_storage
from billing.models import ApiKey, CreditHold
from billing.selectors import cached_key_of
from billing.services.credits import credits_release
from llm_api.exceptions import ModelNotAllowed
from llm_api.metering import Caller
from llm_api.pipeline import targets_for
from project.exceptions import ServiceError

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
OPEN = (Batch.Status.IN_PROGRESS, Batch.Status.CANCELLING)
ERRORS_MAX = 1000  # a failed batch names at most this many bad lines
KEY_LOCK_SPACE = 0x62617463  # PostgreSQL advisory locks of the batch concurrency cap ("batc")


# --- files --------------------------------------------------------------------------------


def file_create(*, user_id: int, filename: str, purpose: str, content: bytes) -> File:
    """Store an uploaded file of the user, within the size cap. (The line cap is a batch's: a
    batch made from a longer file fails, naming the first line over it.)"""
    if purpose not in ("batch", "batch_output"):
        raise InvalidFile("'purpose' must be 'batch'.", param="purpose")
    if len(content) > settings.BATCH_FILE_MAX_BYTES:
        raise InvalidFile(
            f"The file is larger than {settings.BATCH_FILE_MAX_BYTES} bytes.", param="file"
        )
    stored = batch_storage().save(f"{uuid.uuid4().hex}.jsonl", ContentFile(content))
    return File.objects.create(
        user_id=user_id,
        filename=filename[:255] or "upload.jsonl",
        purpose=purpose,
        bytes=len(content),
        storage_name=stored,
    )


def file_content(*, file: File) -> bytes:
    """Return the stored bytes of a file."""
    with batch_storage().open(file.storage_name, "rb") as handle:
        return handle.read()


def file_delete(*, file: File) -> None:
    """Delete a file's row and its bytes; a batch's input file stays while its batch exists."""
    if Batch.objects.filter(input_file=file).exists():
        raise InvalidFile("This file is the input of a batch; it cannot be deleted.")
    batch_storage().delete(file.storage_name)
    file.delete()


# --- batch creation -------------------------------------------------------------------------


def batch_create(
    *,
    user_id: int,
    api_key_id: int | None,
    input_file: File,
    endpoint: str,
    completion_window: str,
    metadata: dict | None,
) -> Batch:
    """Create a batch from its input file; a file with bad lines makes it `failed`, naming them.

    Valid batches get their lines as rows and are queued at once."""
    if endpoint not in ENDPOINTS:
        raise InvalidBatch(f"'endpoint' must be one of {', '.join(ENDPOINTS)}.", param="endpoint")
    if completion_window != "24h":
        raise InvalidBatch("'completion_window' must be '24h'.", param="completion_window")
    now = timezone.now()
    batch = Batch.objects.create(
        user_id=user_id,
        api_key_id=api_key_id,
        endpoint=endpoint,
        completion_window=completion_window,
        metadata=metadata,
        input_file=input_file,
        expires_at=now + timedelta(seconds=settings.BATCH_COMPLETION_WINDOW_SECONDS),
    )
    lines, errors = lines_parse(batch=batch, file=input_file)
    if errors:
        Batch.objects.filter(pk=batch.pk).update(
            status=Batch.Status.FAILED,
            failed_at=now,
            errors={"object": "list", "data": errors},
        )
        batch.refresh_from_db()
        return batch
    tokens_check(batch=batch, lines=lines)
    with transaction.atomic():
        BatchLine.objects.bulk_create(lines, batch_size=1000)
        Batch.objects.filter(pk=batch.pk).update(
            status=Batch.Status.IN_PROGRESS, in_progress_at=now, total=len(lines)
        )
    batch.refresh_from_db()
    from batches.tasks import batch_work  # the queue imports the services

    transaction.on_commit(lambda: batch_work_enqueue(batch_id=batch.pk, enqueue=batch_work))
    return batch


def line_tokens(body: dict) -> int:
    """Return a line's token estimate: its body at four characters a token, plus its answer."""
    answer = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    answer = answer or body.get("max_output_tokens") or 0
    return len(json.dumps(body)) // 4 + (answer if isinstance(answer, int) else 0)


def tokens_check(*, batch: Batch, lines: list[BatchLine]) -> None:
    """Refuse (429) a batch that would take its key over its cap of tokens in lines not yet run
    (its batch_tokens_limit, else BATCH_ENQUEUED_TOKENS_LIMIT; 0: no cap); the refused batch is
    removed."""
    limit = key_cap(batch.api_key_id, "batch_tokens_limit", settings.BATCH_ENQUEUED_TOKENS_LIMIT)
    if not limit:
        return
    owner = (
        {"batch__api_key_id": batch.api_key_id}
        if batch.api_key_id
        else {"batch__user_id": batch.user_id}
    )
    enqueued = (
        BatchLine.objects.filter(
            status__in=[BatchLine.Status.PENDING, BatchLine.Status.RUNNING], **owner
        ).aggregate(total=Sum("tokens"))["total"]
        or 0
    )
    wanted = sum(line.tokens for line in lines)
    if enqueued + wanted > limit:
        batch.delete()
        raise BatchTokensExceeded(
            f"This batch needs about {wanted} tokens and {enqueued} are enqueued; "
            f"the cap is {limit}."
        )


def batch_work_enqueue(*, batch_id: str, enqueue) -> None:
    """Queue the batch's workers: as many as the key's batch concurrency cap allows."""
    for _ in range(max(1, settings.BATCH_CONCURRENCY_LIMIT)):
        enqueue(batch_id)


def lines_parse(*, batch: Batch, file: File) -> tuple[list[BatchLine], list[dict]]:
    """Return the batch's lines, or the errors of its bad lines (1-based line numbers; the
    first ERRORS_MAX of them). The file is read a line at a time."""

    api_key = ApiKey.objects.filter(pk=batch.api_key_id).first()
    info = cached_key_of(api_key).info if api_key else None
    caller = Caller(user_id=batch.user_id, request_id="", api_key=info, batch=True)
    errors: list[dict] = []
    lines: list[BatchLine] = []
    seen: set[str] = set()
    cap = settings.BATCH_FILE_MAX_LINES
    with batch_storage().open(file.storage_name, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if number > cap:
                message = (
                    f"The input file has more than {cap} lines (BATCH_FILE_MAX_LINES); "
                    f"split it into batches of at most {cap}."
                )
                errors.append({**line_error("too_many_lines", message), "line": number})
                break
            problem = line_check(raw, batch=batch, caller=caller, seen=seen)
            if isinstance(problem, tuple):
                if len(errors) < ERRORS_MAX:
                    errors.append({**line_error(*problem), "line": number})
                continue
            seen.add(problem["custom_id"])
            if not errors:
                lines.append(
                    BatchLine(
                        batch=batch,
                        line=number,
                        custom_id=problem["custom_id"],
                        body=problem["body"],
                        tokens=line_tokens(problem["body"]),
                    )
                )
    if not lines and not errors:
        errors.append({**line_error("empty_file", "The input file has no lines."), "line": None})
    return ([] if errors else lines), errors


def line_check(raw: bytes, *, batch: Batch, caller: Caller, seen: set[str]) -> dict | tuple:
    """Return a line's row when it is good, else (code, message) of what is wrong."""
    try:
        row = json.loads(raw)
    except ValueError:
        return ("invalid_json", "The line is not JSON.")
    problem = line_problem(row, endpoint=batch.endpoint, seen=seen)
    if problem is None:
        try:
            targets_for(caller, row["body"].get("model"))
        except ModelNotAllowed as refused:
            problem = ("model_not_allowed", refused.message)
        except ServiceError as refused:
            problem = ("invalid_model", refused.message)
    return row if problem is None else problem


def line_problem(row: object, *, endpoint: str, seen: set[str]) -> tuple[str, str] | None:
    """Return (code, message) of what is wrong with a parsed line, or None."""
    if not isinstance(row, dict):
        return ("invalid_line", "The line must be a JSON object.")
    custom_id = row.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return ("missing_custom_id", "The line needs a string 'custom_id'.")
    if custom_id in seen:
        return ("duplicate_custom_id", f"The custom_id '{custom_id[:100]}' is used twice.")
    if row.get("method", "POST") != "POST":
        return ("invalid_method", "'method' must be 'POST'.")
    if row.get("url") != endpoint:
        return ("mismatched_url", f"'url' must be the batch's endpoint, {endpoint}.")
    if not isinstance(row.get("body"), dict):
        return ("invalid_body", "'body' must be a JSON object.")
    if row["body"].get("stream"):
        return ("invalid_body", "A batch line cannot stream.")
    return None


def line_error(code: str, message: str) -> dict:
    return {"object": "error", "code": code, "message": message, "param": None}


# --- running lines -------------------------------------------------------------------------


def line_claim(*, batch_id: str) -> BatchLine | None:
    """Claim the batch's next line under a lease, or return None: a pending line, or one whose
    lease ran out (its worker died). None also once the batch is cancelled or past its window.
    Raise KeyBusy when the batch's key already runs BATCH_CONCURRENCY_LIMIT lines.

    The claim is a conditional UPDATE on the status and lease read: two workers never both win a
    line, on any database. PostgreSQL also skips rows another worker has locked."""
    while True:
        now = timezone.now()
        with transaction.atomic():
            # Only while the batch runs and is within its window, checked in the claim's own
            # transaction (the batch row locked on PostgreSQL; SQLite's write lock does it): a
            # cancel that commits first leaves nothing to claim.
            postgres = transaction.get_connection().vendor == "postgresql"
            running = Batch.objects.filter(
                pk=batch_id, status=Batch.Status.IN_PROGRESS, expires_at__gt=now
            )
            if postgres:
                running = running.select_for_update(no_key=True)
            owner = running.values("api_key_id", "user_id").first()
            if owner is None:
                return None
            key_check(owner=owner, now=now, postgres=postgres)
            claimable = BatchLine.objects.filter(batch_id=batch_id).filter(
                Q(status=BatchLine.Status.PENDING)
                | Q(status=BatchLine.Status.RUNNING, lease_until__lt=now)
            )
            if postgres:
                claimable = claimable.select_for_update(skip_locked=True)
            candidate = claimable.order_by("line").values("pk", "status", "lease_until").first()
            if candidate is None:
                return None
            lease = now + timedelta(seconds=settings.BATCH_LEASE_SECONDS)
            won = BatchLine.objects.filter(
                pk=candidate["pk"], status=candidate["status"], lease_until=candidate["lease_until"]
            ).update(status=BatchLine.Status.RUNNING, lease_until=lease)
        if won:
            return BatchLine.objects.select_related("batch").get(pk=candidate["pk"])


def key_cap(api_key_id: int | None, field: str, default: int) -> int:
    """Return the key's own batch cap (`field`), or `default` when it has none (or no key)."""
    if api_key_id is None:
        return default
    own = ApiKey.objects.filter(pk=api_key_id).values_list(field, flat=True).first()
    return own or default


def key_check(*, owner: dict, now, postgres: bool) -> None:
    """Raise KeyBusy when the key (the user, for a batch made without a key) runs as many lines
    of its batches as its cap allows (its batch_concurrency_limit, else BATCH_CONCURRENCY_LIMIT)
    already. Lines whose lease ran out do not count: their worker died.

    Called inside the claim's transaction: SQLite's IMMEDIATE transaction serialises the
    claims; on PostgreSQL a transaction lock on the key does."""
    cap = settings.BATCH_CONCURRENCY_LIMIT
    if owner["api_key_id"]:
        lines = BatchLine.objects.filter(batch__api_key_id=owner["api_key_id"])
        lock = owner["api_key_id"]
        cap = key_cap(lock, "batch_concurrency_limit", cap)
    else:
        lines = BatchLine.objects.filter(batch__user_id=owner["user_id"], batch__api_key=None)
        lock = -owner["user_id"]
    if postgres:
        with transaction.get_connection().cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [KEY_LOCK_SPACE, lock])
    busy = lines.filter(status=BatchLine.Status.RUNNING, lease_until__gte=now)
    if busy.count() >= cap:
        first_end = busy.aggregate(first=Min("lease_until"))["first"] or now
        raise KeyBusy(retry_after=max(0.5, (first_end - now).total_seconds() + 0.1))


def line_request_id(line: BatchLine, attempt: int = 1) -> str:
    """The request id of a line's attempt: its hold and settle happen once per id."""
    return f"req_{line.batch_id}_{line.line}.{attempt}"


def line_attempt(*, line: BatchLine) -> int | None:
    """Return the number of this attempt at the line, or None when an earlier attempt was
    already charged (its worker died after settling): the line is then never run again.

    An earlier attempt's open hold is released first: it charged nothing."""

    earlier = CreditHold.objects.filter(request_id__startswith=f"req_{line.batch_id}_{line.line}.")
    if earlier.filter(status="settled").exists():
        return None
    for request_id in earlier.values_list("request_id", flat=True):
        credits_release(request_id=request_id)
    return earlier.count() + 1


def line_run(*, line: BatchLine) -> None:
    """Run one line as an ordinary request of its key: the route's own view, in process."""
    batch = line.batch
    attempt = line_attempt(line=line)
    if attempt is None:
        error = line_error(
            "batch_line_interrupted", "The worker running this line stopped after charging it."
        )
        line_finish(line=line, status_code=None, body=None, error=error)
        return
    request_id = line_request_id(line, attempt)
    request = APIRequestFactory().post(batch.endpoint, line.body, format="json")
    request.request_id = request_id
    request.batch_line = True
    api_key = ApiKey.objects.filter(pk=batch.api_key_id).select_related("user").first()
    info = cached_key_of(api_key).info if api_key else None
    force_authenticate(request, user=batch.user, token=info)
    response = resolve(batch.endpoint).func(request)
    body = response.data if hasattr(response, "data") else None
    if response.status_code == 200:
        line_finish(line=line, status_code=200, body=body, error=None)
        return
    error = (body or {}).get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("type") == "insufficient_quota":
        error = {**error, "code": "insufficient_quota"}  # OpenAI's word for no credit
    line_finish(line=line, status_code=response.status_code, body=body, error=error)


def line_finish(
    *, line: BatchLine, status_code: int | None, body: dict | None, error: dict | None
) -> None:
    """Write a line's result once and count it in its batch."""
    ok = status_code == 200
    usage = (body or {}).get("usage") or {} if ok else {}
    with transaction.atomic():
        written = BatchLine.objects.filter(pk=line.pk, status=BatchLine.Status.RUNNING).update(
            status=BatchLine.Status.DONE,
            status_code=status_code,
            response=body,
            error=None if ok else (error or line_error("line_failed", "The request failed.")),
        )
        if not written:
            return
        Batch.objects.filter(pk=line.batch_id).update(
            completed=F("completed") + (1 if ok else 0),
            failed=F("failed") + (0 if ok else 1),
            prompt_tokens=F("prompt_tokens") + int(usage.get("prompt_tokens") or 0),
            completion_tokens=F("completion_tokens")
            + int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
        )


def batch_work(*, batch_id: str) -> tuple[str, float] | None:
    """Run the batch's lines one after another until none is left, then finalise it; then go on
    with the key's next open batch that has lines waiting.

    While another worker's line of the batch still runs, wait for it: if that worker died, its
    lease runs out and this one takes the line over. When the key runs as many lines as its
    batch concurrency cap allows, stop and return (batch id, seconds): the workers running those
    lines go on with the key's batches when theirs are done, and should they have died, the
    caller tries again once the first of their leases has run out."""
    while batch_id is not None:
        try:
            while Batch.objects.filter(pk=batch_id, status=Batch.Status.IN_PROGRESS).exists():
                line = line_claim(batch_id=batch_id)
                if line is not None:
                    line_run(line=line)
                    continue
                if not BatchLine.objects.filter(
                    batch_id=batch_id, status=BatchLine.Status.RUNNING
                ).exists():
                    break
                time.sleep(0.5)
        except KeyBusy as busy:
            return batch_id, busy.retry_after
        batch_finalize_if_done(batch_id=batch_id)
        batch_id = batch_next(batch_id=batch_id)
    return None


def batch_next(*, batch_id: str) -> str | None:
    """Return the oldest other running batch of the same key (or keyless user) with lines
    waiting, or None."""
    batch = Batch.objects.filter(pk=batch_id).values("api_key_id", "user_id").first()
    if batch is None:
        return None
    owner = (
        {"api_key_id": batch["api_key_id"]}
        if batch["api_key_id"]
        else {"user_id": batch["user_id"], "api_key": None}
    )
    waiting = BatchLine.objects.filter(batch_id=OuterRef("pk"), status=BatchLine.Status.PENDING)
    return (
        Batch.objects.filter(
            status=Batch.Status.IN_PROGRESS, expires_at__gt=timezone.now(), **owner
        )
        .exclude(pk=batch_id)
        .filter(Exists(waiting))
        .order_by("created_at")
        .values_list("pk", flat=True)
        .first()
    )


def batches_open() -> list[str]:
    """Return the batches that still have lines to run."""
    return list(Batch.objects.filter(status=Batch.Status.IN_PROGRESS).values_list("pk", flat=True))


# --- cancel, expiry, leases, finalisation --------------------------------------------------


def batch_cancel(*, batch: Batch) -> Batch:
    """Ask the batch to stop: `cancelling` until its running lines end, then `cancelled`."""
    if batch.status == Batch.Status.VALIDATING or batch.status == Batch.Status.IN_PROGRESS:
        Batch.objects.filter(pk=batch.pk, status=batch.status).update(
            status=Batch.Status.CANCELLING, cancelling_at=timezone.now()
        )
    elif batch.status not in OPEN:
        raise BatchNotCancellable(f"The batch is {batch.status}.")
    batch_finalize_if_done(batch_id=batch.pk)
    batch.refresh_from_db()
    return batch


def batch_finalize_if_done(*, batch_id: str) -> None:
    """Finalise the batch once no line runs: when it is done, cancelled or past its window,
    the lines it did not run get their error (`batch_cancelled`, `batch_expired`), the output
    and error files are written and the end status set, in one transaction. Once."""
    batch = Batch.objects.filter(pk=batch_id, status__in=OPEN).first()
    if batch is None:
        return
    now = timezone.now()
    lines = BatchLine.objects.filter(batch_id=batch_id)
    if batch.status == Batch.Status.CANCELLING:
        end, stamp, code = Batch.Status.CANCELLED, "cancelled_at", "batch_cancelled"
    elif not lines.exclude(status=BatchLine.Status.DONE).exists():
        end, stamp, code = Batch.Status.COMPLETED, "completed_at", None  # even if late
    elif batch.expires_at <= now:
        end, stamp, code = Batch.Status.EXPIRED, "expired_at", "batch_expired"
    else:
        return
    if lines.filter(status=BatchLine.Status.RUNNING).exists():
        return
    # The end status and the files commit together: a client that sees `cancelled`, `expired`
    # or `completed` finds the output and error files already there.
    with transaction.atomic():
        fields = {"finalizing_at": now} if end == Batch.Status.COMPLETED else {}
        won = Batch.objects.filter(pk=batch_id, status=batch.status).update(
            status=end, **{stamp: now}, **fields
        )
        if not won:
            return
        if lines.filter(status=BatchLine.Status.RUNNING).exists():  # claimed meanwhile
            transaction.set_rollback(True)
            return
        if code is not None:
            message = f"The batch was {code.removeprefix('batch_')} first."
            count = lines.filter(status=BatchLine.Status.PENDING).update(
                status=BatchLine.Status.DONE, error=line_error(code, message)
            )
            Batch.objects.filter(pk=batch_id).update(failed=F("failed") + count)
        batch_files_write(batch_id=batch_id)


def batch_files_write(*, batch_id: str) -> None:
    """Write the batch's output file (answered lines) and error file (the others)."""
    batch = Batch.objects.get(pk=batch_id)
    output, errors = [], []
    for line in BatchLine.objects.filter(batch_id=batch_id).order_by("line"):
        row = {
            "id": f"batch_req_{line.batch_id}_{line.line}",
            "custom_id": line.custom_id,
            "response": None,
            "error": None,
        }
        if line.status_code is not None:
            row["response"] = {
                "status_code": line.status_code,
                "request_id": (line.response or {}).get("id", ""),
                "body": line.response,
            }
        if line.status_code == 200:
            output.append(row)
        else:
            if line.error:
                row["error"] = {
                    "code": line.error.get("code"),
                    "message": line.error.get("message"),
                }
            errors.append(row)
    files = {}
    for field, rows in (("output_file", output), ("error_file", errors)):
        if rows:
            content = "".join(json.dumps(row) + "\n" for row in rows).encode()
            files[field] = file_create(
                user_id=batch.user_id,
                filename=f"{batch_id}_{field.removesuffix('_file')}.jsonl",
                purpose="batch_output",
                content=content,
            )
    Batch.objects.filter(pk=batch_id).update(**files)


def batches_tick() -> list[str]:
    """The periodic sweep: re-queue lines whose lease ran out, finalise what is finished,
    cancelled or past its window. Return the batches that need workers again."""
    now = timezone.now()
    stale = BatchLine.objects.filter(status=BatchLine.Status.RUNNING, lease_until__lt=now)
    requeue = set(stale.values_list("batch_id", flat=True))
    stale.update(status=BatchLine.Status.PENDING, lease_until=None)
    for batch_id in Batch.objects.filter(status__in=OPEN).values_list("pk", flat=True):
        batch_finalize_if_done(batch_id=batch_id)
    lines = BatchLine.objects.filter(batch_id=OuterRef("pk"))
    waiting = Batch.objects.filter(status=Batch.Status.IN_PROGRESS).filter(
        Exists(lines.filter(status=BatchLine.Status.PENDING)),
        ~Exists(lines.filter(status=BatchLine.Status.RUNNING)),
    )
    # Those of a lost worker, and any with lines waiting that no worker runs.
    return sorted((requeue & set(batches_open())) | set(waiting.values_list("pk", flat=True)))
