"""Admin: API keys (the full key shown once, on creation), accounts with grant and deduct
actions, the read-only ledger and holds, and the editable price table.

Every write goes through `billing.services`; the key digest is never displayed, and ledger
entries cannot be changed or deleted here (nor anywhere else).
"""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from billing import keys
from billing.exceptions import InsufficientCredits, RefundRefused
from billing.forms import ApiKeyForm, CreditsActionForm, ModelPriceForm
from billing.models import ApiKey, CreditAccount, CreditHold, LedgerEntry, ModelPrice
from billing.money import format_credits
from billing.selectors import price_table
from billing.services import (
    api_key_create,
    api_key_revoke,
    api_key_update,
    credits_grant,
    credits_refund,
)
from billing.services.api_keys import EDITABLE_FIELDS

STATUS_COLOURS = {"active": "#59a14f", "expired": "#f28e2b", "revoked": "#e15759"}


def key_badge(api_key: ApiKey) -> str:
    """A badge that cannot be missed: green active, orange expired, red revoked."""
    return format_html(
        '<span class="key-badge key-{}" style="padding:1px 7px;border-radius:8px;'
        'font-size:11px;font-weight:bold;color:#fff;background:{}">{}</span>',
        api_key.status,
        STATUS_COLOURS.get(api_key.status, "#e15759"),
        api_key.status.upper(),
    )


def _can_write_entries(request: HttpRequest) -> bool:
    return request.user.has_perm("billing.add_ledgerentry")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: administrators may look, never add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "name",
        "user",
        "masked",
        "status_",
        "scopes_",
        "created_at",
        "last_used_at",
        "expires_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "created_at", "expires_at"]
    search_fields = ["name", "prefix", "user__username"]
    search_help_text = "Search by name, key prefix, username, or paste a full key."
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    actions = ["revoke_keys"]
    shown_once_template = "admin/billing/apikey/key_created.html"
    facts = ["masked", "status_", "created_at", "last_used_at", "revoked_at", "spent_", "held_"]

    @admin.display(description="status", ordering="revoked_at")
    def status_(self, obj: ApiKey) -> str:
        return key_badge(obj)

    @admin.display(description="scopes")
    def scopes_(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="spent (credits)")
    def spent_(self, obj: ApiKey) -> str:
        return format_credits(obj.spent)

    @admin.display(description="held (credits)")
    def held_(self, obj: ApiKey) -> str:
        return format_credits(obj.held)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return []
        if obj.revoked_at:
            return [*ApiKeyForm.Meta.fields, *self.facts]
        return ["user", *self.facts]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are revoked, never deleted: the ledger refers to them

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if keys.is_well_formed(term):
            return queryset.filter(digest=keys.digest(term)), False
        return super().get_search_results(request, queryset, search_term)

    def save_form(self, request: HttpRequest, form: ApiKeyForm, change: bool) -> ApiKey:
        api_key = super().save_form(request, form, change)
        if change:
            return api_key
        data = {field: form.cleaned_data[field] for field in EDITABLE_FIELDS}
        api_key, request.billing_new_key = api_key_create(user=api_key.user, **data)
        return api_key

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ApiKeyForm, change: bool) -> None:
        changed = {field: form.cleaned_data[field] for field in form.changed_data}
        if change and changed:  # an added key was already saved by api_key_create in save_form
            api_key_update(api_key=obj, data=changed)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: Any = None):
        """Show the new key on a page of its own: the only time it is ever displayed."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API key created",
            "api_key": obj,
            "plaintext": request.billing_new_key,
        }
        return TemplateResponse(request, self.shown_once_template, context)

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True).select_related("user"):
            api_key_revoke(api_key=api_key)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s).")


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance_", "held_", "available_", "created_at"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    fields = ["user", "balance_", "held_", "available_", "created_at"]
    readonly_fields = fields
    actions = ["grant_credits", "deduct_credits"]
    action_template = "admin/billing/creditaccount/credits_action.html"

    @admin.display(description="balance (credits)")
    def balance_(self, obj: CreditAccount) -> str:
        return format_credits(obj.balance)

    @admin.display(description="held (credits)")
    def held_(self, obj: CreditAccount) -> str:
        return format_credits(obj.held)

    @admin.display(description="available (credits)")
    def available_(self, obj: CreditAccount) -> str:
        return format_credits(obj.available)

    def has_grant_permission(self, request: HttpRequest) -> bool:
        return _can_write_entries(request)

    @admin.action(description="Grant credits to selected accounts", permissions=["grant"])
    def grant_credits(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._credits_action(request, queryset, "grant_credits", sign=1)

    @admin.action(description="Deduct credits from selected accounts", permissions=["grant"])
    def deduct_credits(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._credits_action(request, queryset, "deduct_credits", sign=-1)

    def _credits_action(
        self, request: HttpRequest, queryset: QuerySet, action: str, *, sign: int
    ) -> HttpResponse | None:
        """Ask for the amount and note on a page of its own, then write one entry per account."""
        form = CreditsActionForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Grant credits" if sign > 0 else "Deduct credits",
                "form": form,
                "accounts": [
                    {"pk": a.pk, "user": a.user, "available": format_credits(a.available)}
                    for a in queryset.select_related("user")
                ],
                "action": action,
            }
            return TemplateResponse(request, self.action_template, context)
        amount, note = sign * form.cleaned_data["amount"], form.cleaned_data["note"]
        for account in queryset.select_related("user"):
            self._grant(request, account, amount, note)
        return None

    def _grant(self, request: HttpRequest, account: CreditAccount, amount: int, note: str) -> None:
        try:
            credits_grant(user=account.user, amount=amount, note=note, admin=request.user)
        except InsufficientCredits as error:
            self.message_user(request, f"{account.user}: {error.message}", messages.ERROR)
        else:
            self.message_user(request, f"{account.user}: {format_credits(amount)} credits.")


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "account",
        "kind",
        "amount_",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "estimated",
        "request_id",
        "api_key",
        "admin",
    ]
    list_filter = ["kind", "estimated", "created_at", ("admin", admin.EmptyFieldListFilter)]
    search_fields = ["account__user__username", "request_id", "model", "note"]
    list_select_related = ["account__user", "api_key", "admin"]
    date_hierarchy = "created_at"
    actions = ["refund_entries"]

    @admin.display(description="amount (credits)")
    def amount_(self, obj: LedgerEntry) -> str:
        return format_credits(obj.amount)

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return _can_write_entries(request)

    @admin.action(description="Refund selected usage entries", permissions=["refund"])
    def refund_entries(self, request: HttpRequest, queryset: QuerySet[LedgerEntry]) -> None:
        for entry in queryset:
            try:
                refund = credits_refund(entry=entry, admin=request.user)
            except RefundRefused as error:
                self.message_user(request, f"Entry #{entry.pk}: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"Refunded {format_credits(refund.amount)} credits.")


@admin.register(CreditHold)
class CreditHoldAdmin(ReadOnlyAdmin):
    list_display = ["request_id", "account", "api_key", "model", "amount_", "status", "expires_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["request_id", "account__user__username", "model"]
    list_select_related = ["account__user", "api_key"]

    @admin.display(description="amount (credits)")
    def amount_(self, obj: CreditHold) -> str:
        return format_credits(obj.amount)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    form = ModelPriceForm
    list_display = ["model", "per_request_", "per_1k_prompt_", "per_1k_completion_", "updated_at"]
    search_fields = ["model"]

    @admin.display(description="per request (credits)")
    def per_request_(self, obj: ModelPrice) -> str:
        return format_credits(obj.per_request)

    @admin.display(description="per 1K prompt tokens")
    def per_1k_prompt_(self, obj: ModelPrice) -> str:
        return format_credits(obj.per_1k_prompt)

    @admin.display(description="per 1K completion tokens")
    def per_1k_completion_(self, obj: ModelPrice) -> str:
        return format_credits(obj.per_1k_completion)

    # The price table is cached per process: forget it the moment a price changes here.
    def save_model(self, request: HttpRequest, obj: ModelPrice, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        price_table.clear()

    def delete_model(self, request: HttpRequest, obj: ModelPrice) -> None:
        super().delete_model(request, obj)
        price_table.clear()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        super().delete_queryset(request, queryset)
        price_table.clear()
