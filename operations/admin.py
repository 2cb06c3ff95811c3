"""The user's admin page: their balance, keys, ledger and a usage chart, and a grant form.

Django's UserAdmin, registered again with this page added; every write goes through
`billing.services` (`credits_grant`), never to a balance directly.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from billing.admin import key_badge
from billing.forms import CreditsActionForm
from billing.models import ApiKey, CreditAccount, LedgerEntry
from billing.money import format_credits
from billing.services import credits_grant
from operations.admin_site import usage_charts
from operations.selectors import dashboard_data
from project.exceptions import ServiceError

User = get_user_model()
USAGE_DAYS = 30


def account_summary(user) -> dict:
    """Return what the user's admin page shows about their credits, keys, ledger and usage."""
    account = CreditAccount.objects.filter(user=user).first()
    until = timezone.now().date()
    since = until - timedelta(days=USAGE_DAYS - 1)
    data = dashboard_data(since=since, until=until, user_id=user.pk)
    return {
        "account": account,
        "balance": format_credits(account.balance if account else 0),
        "held": format_credits(account.held if account else 0),
        "available": format_credits(account.available if account else 0),
        "keys": [
            {"key": api_key, "badge": key_badge(api_key)}
            for api_key in ApiKey.objects.filter(user=user).order_by("-created_at")
        ],
        "entries": [
            {"entry": entry, "amount": format_credits(entry.amount)}
            for entry in LedgerEntry.objects.filter(account__user=user)
            .select_related("api_key", "admin")
            .order_by("-created_at", "-id")[:20]
        ],
        "usage_chart": usage_charts(data, since, until, by_user=False)["credits_by_model"],
        "usage_days": USAGE_DAYS,
    }


admin.site.unregister(User)


@admin.register(User)
class UserWithCreditsAdmin(UserAdmin):
    change_form_template = "admin/operations/user_change_form.html"
    grant_template = "admin/operations/user_grant.html"

    def get_urls(self) -> list:
        grant = self.admin_site.admin_view(self.grant_view)
        return [
            path("<int:pk>/credits/", grant, name="operations_user_credits"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        user = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if user is not None:
            extra["credits"] = account_summary(user)
            extra["can_grant"] = self._can_grant(request)
        return super().change_view(request, object_id, form_url, extra)

    def _can_grant(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.add_ledgerentry")

    def grant_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Grant (or deduct) credits to one user, through `credits_grant`."""
        user = get_object_or_404(User, pk=pk)
        if not self._can_grant(request):
            return HttpResponse("You may not grant credits.", status=403)
        form = CreditsActionForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            sign = -1 if request.POST.get("direction") == "deduct" else 1
            amount = sign * form.cleaned_data["amount"]
            try:
                credits_grant(
                    user=user, amount=amount, note=form.cleaned_data["note"], admin=request.user
                )
            except ServiceError as error:
                self.message_user(request, f"{user}: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"{user}: {format_credits(amount)} credits.")
                return HttpResponseRedirect(reverse("admin:auth_user_change", args=[user.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Grant credits to {user.username}",
            "subject": user,
            "form": form,
            "credits": account_summary(user),
        }
        return TemplateResponse(request, self.grant_template, context)
