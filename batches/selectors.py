"""Reads of the Batch API: a user's own files and batches only (another's are 404)."""

from django.db.models import QuerySet

from batches.exceptions import BatchNotFound, FileNotFound
from batches.models import Batch, File


def file_get(*, user_id: int, file_id: str) -> File:
    """Return the user's file, or raise FileNotFound."""
    found = File.objects.filter(user_id=user_id, id=file_id).first()
    if found is None:
        raise FileNotFound(f"No such file: '{file_id}'.")
    return found


def file_list(*, user_id: int) -> QuerySet[File]:
    return File.objects.filter(user_id=user_id).order_by("-created_at", "-id")


def batch_get(*, user_id: int, batch_id: str) -> Batch:
    """Return the user's batch, or raise BatchNotFound."""
    found = Batch.objects.filter(user_id=user_id, id=batch_id).first()
    if found is None:
        raise BatchNotFound(f"No such batch: '{batch_id}'.")
    return found


def batch_page(*, user_id: int, after: str | None, limit: int) -> tuple[list[Batch], bool]:
    """Return up to `limit` of the user's batches, newest first, after the batch `after`,
    and whether more follow."""
    batches = Batch.objects.filter(user_id=user_id).order_by("-created_at", "-id")
    if after:
        anchor = Batch.objects.filter(user_id=user_id, id=after).first()
        if anchor is not None:
            batches = batches.filter(created_at__lte=anchor.created_at).exclude(
                created_at=anchor.created_at, id__gte=anchor.id
            )
    rows = list(batches[: limit + 1])
    return rows[:limit], len(rows) > limit
