"""API keys, credit accounts, the append-only ledger, credit holds and the price table.

Every amount is an integer of micro-credits (see `billing.money`). An account's `balance` is
always the sum of its ledger entries; `held` is the part reserved by open holds, which live in
their own table so that reserving credits never writes to the ledger.
"""

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from billing.exceptions import LedgerAppendOnly
from billing.keys import SCOPE_MANAGE, SCOPE_MODELS, default_scopes, masked


def is_pattern(model: str) -> bool:
    """Return whether a price's or an allowlist's model name is an fnmatch pattern."""
    return any(char in model for char in "*?[")


class ApiKey(models.Model):
    """A user's API key, stored only as a keyed digest plus its first and last characters."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        help_text="provider/model names or patterns (openai/gpt-4*); empty allows every model.",
    )
    spend_cap = models.BigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Micro-credits this key may spend in total; empty = no cap.",
    )
    spent = models.BigIntegerField(default=0, editable=False)
    held = models.BigIntegerField(default=0, editable=False)
    rpm_limit = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, validators=[MinValueValidator(1)]
    )
    tpm_limit = models.PositiveIntegerField(
        "tokens per minute", null=True, blank=True, validators=[MinValueValidator(1)]
    )
    concurrency_limit = models.PositiveIntegerField(
        "concurrent requests", null=True, blank=True, validators=[MinValueValidator(1)]
    )
    batch_concurrency_limit = models.PositiveIntegerField(
        "batch lines at once",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Empty: BATCH_CONCURRENCY_LIMIT.",
    )
    batch_tokens_limit = models.PositiveIntegerField(
        "batch tokens enqueued",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Empty: BATCH_ENQUEUED_TOKENS_LIMIT.",
    )
    scopes = models.JSONField(
        default=default_scopes,
        help_text=f"{SCOPE_MODELS}: call the models and read this key's own usage (every key); "
        f"{SCOPE_MANAGE}: also create, change and revoke keys, read the whole account's ledger "
        "and usage, and change the account.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(held__gte=0), name="apikey_held_not_negative"),
            models.CheckConstraint(condition=Q(spent__gte=0), name="apikey_spent_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return masked(self.prefix, self.last4)

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class CreditAccount(models.Model):
    """One user's credits: `balance` (the sum of the ledger) and the part `held` for requests."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="credit_account",
    )
    balance = models.BigIntegerField(default=0, editable=False)
    held = models.BigIntegerField(default=0, editable=False)
    # What a call cost beyond its hold and the balance (a provider that ignored max_tokens): it
    # blocks new calls until credits added pay it, by a `debt` entry.
    debt = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            # The database itself refuses a negative balance or a hold the balance can't cover.
            models.CheckConstraint(condition=Q(held__gte=0), name="account_held_not_negative"),
            models.CheckConstraint(condition=Q(debt__gte=0), name="account_debt_not_negative"),
            models.CheckConstraint(
                condition=Q(balance__gte=F("held")), name="account_held_covered"
            ),
        ]

    def __str__(self) -> str:
        return f"Credits of {self.user}"

    @property
    def available(self) -> int:
        return self.balance - self.held


class LedgerQuerySet(models.QuerySet):
    """Entries can be added and read, never updated or deleted in bulk."""

    def update(self, **kwargs):
        raise LedgerAppendOnly()

    def delete(self):
        raise LedgerAppendOnly()

    def bulk_update(self, objs, fields, batch_size=None):
        raise LedgerAppendOnly()


class LedgerEntry(models.Model):
    """One movement of credits; positive adds to the balance, negative takes from it."""

    class Kind(models.TextChoices):
        GRANT = "grant"
        USAGE = "usage"
        REFUND = "refund"
        ADJUSTMENT = "adjustment"
        DEBT = "debt", "Debt paid"

    # Every index below is one more page in each settle's commit: the account's entries are
    # found through ledger_account_recent, a request's through the two unique constraints, an
    # administrator's through ledger_by_admin, which holds only the manual entries.
    account = models.ForeignKey(
        CreditAccount, on_delete=models.PROTECT, related_name="entries", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=64, blank=True)
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, null=True, blank=True, related_name="entries"
    )
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(default=False, help_text="Token counts are our estimate.")
    note = models.TextField(blank=True)
    admin = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The administrator who wrote a manual entry.",
        db_index=False,
    )

    objects = LedgerQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "ledger entries"
        base_manager_name = "objects"  # so Django's internal queries refuse changes too
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["account", "-created_at"], name="ledger_account_recent"),
            models.Index(
                fields=["admin"], condition=Q(admin__isnull=False), name="ledger_by_admin"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["request_id"],
                condition=Q(kind="usage"),
                name="ledger_one_usage_per_request",
            ),
            models.UniqueConstraint(
                fields=["request_id"],
                condition=Q(kind="refund") & ~Q(request_id=""),
                name="ledger_one_refund_per_request",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} µcr #{self.pk}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise LedgerAppendOnly()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise LedgerAppendOnly()


class CreditHold(models.Model):
    """Credits reserved for one request until it is settled, released or expires."""

    class Status(models.TextChoices):
        HELD = "held"
        SETTLED = "settled"
        RELEASED = "released"
        EXPIRED = "expired"

    request_id = models.CharField(max_length=64, unique=True)
    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="holds")
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="holds"
    )
    model = models.CharField(max_length=200, blank=True)
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.HELD)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "expires_at"], name="hold_open_by_expiry")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="hold_amount_not_negative")
        ]

    def __str__(self) -> str:
        return f"Hold {self.request_id} ({self.status})"


class ModelPrice(models.Model):
    """What one model costs, in micro-credits; `model` is `provider/model` or a pattern."""

    model = models.CharField(
        "provider/model",
        max_length=200,
        unique=True,
        help_text="Exact (openai/gpt-4o) or a pattern (openai/gpt-4*, ollama/*, *). "
        "An exact name wins over patterns; the most specific pattern wins over the others.",
    )
    per_request = models.BigIntegerField(default=0)
    per_1k_prompt = models.BigIntegerField("per 1K prompt tokens", default=0)
    per_1k_completion = models.BigIntegerField("per 1K completion tokens", default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]
        constraints = [
            models.CheckConstraint(
                condition=Q(per_request__gte=0, per_1k_prompt__gte=0, per_1k_completion__gte=0),
                name="price_not_negative",
            )
        ]

    def __str__(self) -> str:
        return self.model

    @property
    def is_pattern(self) -> bool:
        return is_pattern(self.model)
