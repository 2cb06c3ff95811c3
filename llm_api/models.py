"""What the LLM routes keep: one usage record per request, and admin-defined model aliases."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def target_problem(target: object) -> str | None:
    """Return what is wrong with a `provider/model` target, or None when it is well formed."""
    provider, _, model = target.partition("/") if isinstance(target, str) else ("", "", "")
    if provider not in settings.LLM_PROVIDERS or not model:
        return f"Write provider/model with a provider of: {', '.join(settings.LLM_PROVIDERS)}."
    return None


class ModelAlias(models.Model):
    """A short name for a provider's model, e.g. `fast` → `gemini/gemini-2.0-flash`, and the
    targets that answer in its place, in order, when the one before fails before its first
    byte."""

    name = models.CharField(max_length=100, unique=True)
    target = models.CharField(max_length=200, help_text="provider/model, e.g. openai/gpt-4o-mini")
    fallbacks = models.JSONField(
        default=list,
        blank=True,
        help_text='Further provider/model targets, tried in order, e.g. ["gemini/gemini-2.0-'
        'flash", "ollama/llama3"]: when the one before fails before its first byte (no '
        "connection, timeout, 429, 5xx).",
    )
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.name} → {self.target}"

    def clean(self) -> None:
        problem = target_problem(self.target)
        if problem:
            raise ValidationError({"target": problem})
        if not isinstance(self.fallbacks, list):
            raise ValidationError({"fallbacks": 'Write a JSON list, e.g. ["ollama/llama3"].'})
        for fallback in self.fallbacks:
            problem = target_problem(fallback)
            if problem:
                raise ValidationError({"fallbacks": f"{fallback!r}: {problem}"})
        if "/" in self.name:
            raise ValidationError({"name": "An alias cannot contain '/'."})


class UsageRecord(models.Model):
    """One row per LLM request: who, which model, tokens, credits, timing, outcome.

    Prompt and completion text are never stored.
    """

    class Status(models.TextChoices):
        OK = "ok"
        UPSTREAM_ERROR = "upstream_error"
        CLIENT_CLOSED = "client_closed"

    request_id = models.CharField(max_length=64, unique=True)
    # A user's records are found through the (user, created_at) index below.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    api_key = models.ForeignKey(
        "billing.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    route = models.CharField(max_length=40)
    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=200)
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(
        default=False, help_text="Token counts estimated by the gateway"
    )
    credits = models.BigIntegerField(default=0, help_text="Micro-credits charged")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OK)
    error_code = models.CharField(max_length=50, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first token")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return f"{self.request_id} {self.provider}/{self.model} {self.status}"
