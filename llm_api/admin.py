from django.contrib import admin
from django.http import HttpRequest

from llm_api.models import ModelAlias, UsageRecord
from llm_api.selectors import aliases_changed


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ["name", "target", "fallbacks", "description"]
    search_fields = ["name", "target"]

    def save_model(self, request: HttpRequest, obj: ModelAlias, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        aliases_changed()

    def delete_model(self, request: HttpRequest, obj: ModelAlias) -> None:
        super().delete_model(request, obj)
        aliases_changed()


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    """Usage is a record of what happened: read-only."""

    list_display = [
        "created_at", "user", "provider", "model", "route", "stream", "status",
        "prompt_tokens", "completion_tokens", "estimated", "credits", "latency_ms", "ttft_ms",
    ]  # fmt: skip
    list_filter = ["status", "provider", "route", "stream", "estimated", "created_at"]
    search_fields = ["request_id", "user__username", "model"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
