"""The Batch API's rows: uploaded files, batches and their lines (each claimed with a lease)."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


class File(models.Model):
    """An uploaded (or produced) file; its bytes live in the storage under `name`."""

    id = models.CharField(primary_key=True, max_length=64, default=file_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=32)
    bytes = models.BigIntegerField(default=0)
    storage_name = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"


class Batch(models.Model):
    """One batch: its input file, its state in OpenAI's statuses, and its result files."""

    class Status(models.TextChoices):
        VALIDATING = "validating"
        FAILED = "failed"
        IN_PROGRESS = "in_progress"
        FINALIZING = "finalizing"
        COMPLETED = "completed"
        EXPIRED = "expired"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    id = models.CharField(primary_key=True, max_length=64, default=batch_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    api_key = models.ForeignKey("billing.ApiKey", null=True, blank=True, on_delete=models.SET_NULL)
    endpoint = models.CharField(max_length=64)
    completion_window = models.CharField(max_length=8, default="24h")
    metadata = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VALIDATING)
    input_file = models.ForeignKey(File, on_delete=models.PROTECT, related_name="+")
    output_file = models.ForeignKey(
        File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error_file = models.ForeignKey(
        File, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    errors = models.JSONField(null=True, blank=True)
    total = models.IntegerField(default=0)
    completed = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return self.id


class BatchLine(models.Model):
    """One request of a batch; a worker claims it by its lease and writes its result once."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="lines")
    line = models.IntegerField()
    custom_id = models.CharField(max_length=512)
    body = models.JSONField()
    tokens = models.IntegerField(default=0)  # an estimate, for the enqueued-token cap
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    lease_until = models.DateTimeField(null=True, blank=True)
    status_code = models.IntegerField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "line"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "custom_id"], name="batch_line_custom_id")
        ]
        indexes = [models.Index(fields=["batch", "status"])]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.custom_id}"
