"""Batches in the admin: their progress, links to their files, and a cancel action."""

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils.html import format_html

from batches.models import Batch, File
from batches.services import batch_cancel


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "filename", "purpose", "bytes", "created_at"]
    search_fields = ["id", "filename", "user__username"]
    readonly_fields = [f.name for f in File._meta.fields]


def file_link(file: File | None) -> str:
    if file is None:
        return "-"
    url = reverse("admin:batches_file_change", args=[quote(file.pk)])  # as the admin's own
    return format_html('<a href="{}">{}</a>', url, file.pk)


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "endpoint", "status", "progress", "created_at"]
    list_filter = ["status", "endpoint"]
    search_fields = ["id", "user__username"]
    readonly_fields = ["progress", "input", "output", "error_output"]
    exclude = ["input_file", "output_file", "error_file"]
    actions = ["cancel"]

    @admin.display(description="progress")
    def progress(self, batch: Batch) -> str:
        return f"{batch.completed + batch.failed}/{batch.total} ({batch.failed} failed)"

    @admin.display(description="input file")
    def input(self, batch: Batch) -> str:
        return file_link(batch.input_file)

    @admin.display(description="output file")
    def output(self, batch: Batch) -> str:
        return file_link(batch.output_file)

    @admin.display(description="error file")
    def error_output(self, batch: Batch) -> str:
        return file_link(batch.error_file)

    @admin.action(description="Cancel the selected batches")
    def cancel(self, request, queryset) -> None:
        for batch in queryset.filter(status__in=["validating", "in_progress"]):
            batch_cancel(batch=batch)
