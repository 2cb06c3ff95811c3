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
from django.db.models import F, Q, Sum
from django.urls import resolve
from django.utils import timezone
from rest_framework.test import APIRequestFactory, force_authenticate

from batches.exceptions import (
    BatchNotCancellable,
    BatchTokensExceeded,
    InvalidBatch,
    InvalidFile,
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


# --- files --------------------------------------------------------------------------------


def file_create(*, user_id: int, filename: str, purpose: str, content: bytes) -> File:
    """Store an uploaded file of the user; a batch input must be within the size and line caps."""
    if purpose not in ("batch", "batch_output"):
        raise InvalidFile("'purpose' must be 'batch'.", param="purpose")
    if len(content) > settings.BATCH_FILE_MAX_BYTES:
        raise InvalidFile(
            f"The file is larger than {settings.BATCH_FILE_MAX_BYTES} bytes.", param="file"
        )
    lines = content.count(b"\n") + (0 if content.endswith(b"\n") or not content else 1)
    if lines > settings.BATCH_FILE_MAX_LINES:
        raise InvalidFile(
            f"The file has more than {settings.BATCH_FILE_MAX_LINES} lines.", param="file"
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
    lines, errors = lines_parse(batch=batch, content=file_content(file=input_file))
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
    """Refuse (429) a batch that would take its key over BATCH_ENQUEUED_TOKENS_LIMIT tokens
    in lines not yet run (0: no cap); the refused batch is removed."""
    limit = settings.BATCH_ENQUEUED_TOKENS_LIMIT
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


def lines_parse(*, batch: Batch, content: bytes) -> tuple[list[BatchLine], list[dict]]:
    """Return the batch's lines, or the errors of its bad lines (1-based line numbers)."""

    api_key = ApiKey.objects.filter(pk=batch.api_key_id).first()
    info = cached_key_of(api_key).info if api_key else None
    caller = Caller(user_id=batch.user_id, request_id="", api_key=info, batch=True)
    errors: list[dict] = []
    lines: list[BatchLine] = []
    seen: set[str] = set()
    texts = content.decode("utf-8", "replace").splitlines()
    if len(texts) > settings.BATCH_FILE_MAX_LINES:
        error = line_error("too_many_lines", f"More than {settings.BATCH_FILE_MAX_LINES} lines.")
        return [], [{**error, "line": None}]
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError:
            errors.append({**line_error("invalid_json", "The line is not JSON."), "line": number})
            continue
        problem = line_problem(row, endpoint=batch.endpoint, seen=seen)
        if problem is None:
            try:
                targets_for(caller, row["body"].get("model"))
            except ModelNotAllowed as refused:
                problem = ("model_not_allowed", refused.message)
            except ServiceError as refused:
                problem = ("invalid_model", refused.message)
        if problem is not None:
            errors.append({**line_error(*problem), "line": number})
            continue
        seen.add(row["custom_id"])
        lines.append(
            BatchLine(
                batch=batch,
                line=number,
                custom_id=row["custom_id"],
                body=row["body"],
                tokens=line_tokens(row["body"]),
            )
        )
    if not lines and not errors:
        errors.append({**line_error("empty_file", "The input file has no lines."), "line": None})
    return lines, errors


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
    lease ran out (its worker died).

    The claim is a conditional UPDATE on the status and lease read: two workers never both win a
    line, on any database. PostgreSQL also skips rows another worker has locked."""
    while True:
        now = timezone.now()
        with transaction.atomic():
            # Only while the batch runs, checked in the claim's own transaction (the batch row
            # locked on PostgreSQL; SQLite's write lock does it): a cancel or an expiry that
            # commits first leaves nothing to claim, so no line starts once it is cancelled.
            running = Batch.objects.filter(pk=batch_id, status=Batch.Status.IN_PROGRESS)
            if transaction.get_connection().vendor == "postgresql":
                running = running.select_for_update(no_key=True)
            if running.values_list("pk", flat=True).first() is None:
                return None
            claimable = BatchLine.objects.filter(batch_id=batch_id).filter(
                Q(status=BatchLine.Status.PENDING)
                | Q(status=BatchLine.Status.RUNNING, lease_until__lt=now)
            )
            if transaction.get_connection().vendor == "postgresql":
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


def batch_work(*, batch_id: str) -> None:
    """Run the batch's lines one after another until none is left, then finalise it.

    While another worker's line still runs, wait for it: if that worker died, its lease runs
    out and this one takes the line over."""
    while Batch.objects.filter(pk=batch_id, status=Batch.Status.IN_PROGRESS).exists():
        line = line_claim(batch_id=batch_id)
        if line is not None:
            line_run(line=line)
            continue
        if not BatchLine.objects.filter(batch_id=batch_id, status=BatchLine.Status.RUNNING):
            break
        time.sleep(0.5)
    batch_finalize_if_done(batch_id=batch_id)


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
    """Finalise the batch once no line runs: unrun lines of a cancelled or expired batch get
    their error; write the output and error files; set the end status. Once."""
    batch = Batch.objects.get(pk=batch_id)
    stopping = {Batch.Status.CANCELLING: "batch_cancelled", Batch.Status.EXPIRED: "batch_expired"}
    lines = BatchLine.objects.filter(batch_id=batch_id)
    if lines.filter(status=BatchLine.Status.RUNNING).exists():
        return
    if batch.status in stopping:
        code = stopping[batch.status]
        count = lines.filter(status=BatchLine.Status.PENDING).update(
            status=BatchLine.Status.DONE,
            error=line_error(code, f"The batch was {code.removeprefix('batch_')} first."),
        )
        Batch.objects.filter(pk=batch_id).update(failed=F("failed") + count)
    elif (
        batch.status != Batch.Status.IN_PROGRESS
        or lines.exclude(status=BatchLine.Status.DONE).exists()
    ):
        return
    end = {
        Batch.Status.IN_PROGRESS: (Batch.Status.FINALIZING, "finalizing_at"),
        Batch.Status.CANCELLING: (Batch.Status.CANCELLED, "cancelled_at"),
        Batch.Status.EXPIRED: (Batch.Status.EXPIRED, "expired_at"),
    }[batch.status]
    now = timezone.now()
    # The end status and the files commit together: a client that sees `cancelled` or
    # `completed` finds the output and error files already there.
    with transaction.atomic():
        if batch.status != Batch.Status.EXPIRED:
            won = Batch.objects.filter(pk=batch_id, status=batch.status).update(
                status=end[0], **{end[1]: now}
            )
            if not won:
                return
        elif batch.output_file_id or batch.error_file_id:
            return
        batch_files_write(batch_id=batch_id)
        if end[0] == Batch.Status.FINALIZING:
            Batch.objects.filter(pk=batch_id).update(
                status=Batch.Status.COMPLETED, completed_at=now
            )


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
    """The periodic sweep: re-queue lines whose lease ran out, expire batches past their window,
    finalise what is finished. Return the batches that need workers again."""
    now = timezone.now()
    stale = BatchLine.objects.filter(status=BatchLine.Status.RUNNING, lease_until__lt=now)
    requeue = set(stale.values_list("batch_id", flat=True))
    stale.update(status=BatchLine.Status.PENDING, lease_until=None)
    expired = Batch.objects.filter(status=Batch.Status.IN_PROGRESS, expires_at__lt=now)
    for batch_id in expired.values_list("pk", flat=True):
        Batch.objects.filter(pk=batch_id).update(status=Batch.Status.EXPIRED)
    for batch_id in Batch.objects.filter(
        status__in=[*OPEN, Batch.Status.EXPIRED], output_file=None, error_file=None
    ).values_list("pk", flat=True):
        batch_finalize_if_done(batch_id=batch_id)
    return sorted(requeue)
