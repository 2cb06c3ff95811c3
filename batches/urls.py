from django.urls import path

from batches import apis

urlpatterns = [
    path("v1/files", apis.FileListCreateApi.as_view(), name="v1-files"),
    path("v1/files/<str:file_id>", apis.FileDetailApi.as_view(), name="v1-file"),
    path("v1/files/<str:file_id>/content", apis.FileContentApi.as_view(), name="v1-file-content"),
    path("v1/batches", apis.BatchListCreateApi.as_view(), name="v1-batches"),
    path("v1/batches/<str:batch_id>", apis.BatchDetailApi.as_view(), name="v1-batch"),
    path("v1/batches/<str:batch_id>/cancel", apis.BatchCancelApi.as_view(), name="v1-batch-cancel"),
]
