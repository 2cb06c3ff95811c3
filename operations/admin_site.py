"""The admin dashboard: a page of the Django admin (staff only), linked from its index."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from billing.money import format_credits
from operations import charts
from operations.forms import DateRangeForm
from operations.selectors import dashboard_data


def usage_charts(data: dict, since, until, *, by_user: bool = True) -> dict:
    """Return the SVG charts of `dashboard_data`: credits and tokens a day, by model and user."""
    days = charts.days_between(since, until)
    credits = [
        {**row, "credits": (row["credits"] or 0) / 1_000_000} for row in data["by_day_model"]
    ]
    found = {
        "credits_by_model": charts.stacked_bars(
            charts.series_by_day(credits, "credits"), days, label="Credits a day, by model"
        ),
        "tokens_by_model": charts.stacked_bars(
            charts.series_by_day(data["by_day_model"], "tokens"),
            days,
            label="Tokens a day, by model",
        ),
    }
    if by_user:
        user_credits = [
            {**row, "credits": (row["credits"] or 0) / 1_000_000} for row in data["by_day_user"]
        ]
        found["credits_by_user"] = charts.stacked_bars(
            charts.series_by_day(user_credits, "credits"), days, label="Credits a day, by user"
        )
        found["tokens_by_user"] = charts.stacked_bars(
            charts.series_by_day(data["by_day_user"], "tokens"), days, label="Tokens a day, by user"
        )
    return found


def with_credits(rows: list[dict]) -> list[dict]:
    return [{**row, "credits_": format_credits(row["credits"] or 0)} for row in rows]


def dashboard(request: HttpRequest) -> HttpResponse:
    form = DateRangeForm(request.GET or None)
    since, until = form.range()
    if not form.is_bound:
        form = DateRangeForm(initial={"since": since, "until": until})
    data = dashboard_data(since=since, until=until)
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "form": form,
        "since": since,
        "until": until,
        "total": {**data["total"], "credits_": format_credits(data["total"]["credits"] or 0)},
        "by_model": with_credits(data["by_model"]),
        "by_user": with_credits(data["by_user"]),
        "top_keys": with_credits(data["top_keys"]),
        "providers": data["providers"],
        "recent": data["recent"],
        "charts": usage_charts(data, since, until),
    }
    return TemplateResponse(request, "admin/operations/dashboard.html", context)


_admin_urls = admin.site.get_urls


def _get_urls() -> list:
    # admin_view: staff only, never cached; the admin's login page for anyone else.
    return [
        path("dashboard/", admin.site.admin_view(dashboard), name="operations-dashboard"),
        *_admin_urls(),
    ]


admin.site.get_urls = _get_urls
admin.site.index_template = "admin/operations/index.html"
