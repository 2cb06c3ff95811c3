"""The Batch API's routes, in OpenAI's shapes: /v1/files and /v1/batches."""

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import openapi, selectors, services
from batches.exceptions import InvalidBatch, InvalidFile
from batches.models import Batch, File
from billing.authentication import api_key_of
from project.exception_handler import first_error
from project.exceptions import ServiceError
from project.parsers import JSONParser


def file_object(file: File) -> dict:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": int(file.created_at.timestamp()),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
    }


def ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def page(data: list[dict], *, has_more: bool) -> dict:
    """Return `data` in OpenAI's cursor-page shape."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def batch_object(batch: Batch) -> dict:
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": batch.errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": ts(batch.created_at),
        "in_progress_at": ts(batch.in_progress_at),
        "expires_at": ts(batch.expires_at),
        "finalizing_at": ts(batch.finalizing_at),
        "completed_at": ts(batch.completed_at),
        "failed_at": ts(batch.failed_at),
        "expired_at": ts(batch.expired_at),
        "cancelling_at": ts(batch.cancelling_at),
        "cancelled_at": ts(batch.cancelled_at),
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "usage": {
            "input_tokens": batch.prompt_tokens,
            "output_tokens": batch.completion_tokens,
            "total_tokens": batch.prompt_tokens + batch.completion_tokens,
        },
        "metadata": batch.metadata,
    }


class BatchesApi(APIView):
    """Base of the Batch API's routes: errors in OpenAI's shape, as its SDK expects."""

    error_format = "openai"


class AnyContentNegotiation(BaseContentNegotiation):
    """A file's content is raw bytes whatever the client accepts (the SDK sends
    `Accept: application/binary`): never a 406."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def validated(
    serializer: type[serializers.Serializer], data: object, error: type[ServiceError]
) -> dict:
    """Return the body's valid values, or raise `error` naming the first bad field (a nested
    one too, e.g. `metadata.key`)."""
    checked = serializer(data=data)
    if not checked.is_valid():
        param, message = first_error(checked.errors)
        raise error(f"'{param}': {message}" if param else message, param=param or None)
    return checked.validated_data


class FileCreateInput(serializers.Serializer):
    file = serializers.FileField()
    purpose = serializers.CharField(max_length=32)


class FileListCreateApi(BatchesApi):
    """POST /v1/files (multipart upload) and GET /v1/files."""

    parser_classes = [MultiPartParser, FormParser]

    @staticmethod
    def body_limit() -> tuple[int, str]:
        """A batch input file may be as large as BATCH_FILE_MAX_BYTES, plus its multipart
        framing (read by RequestSizeLimitMiddleware)."""
        limit = max(settings.REQUEST_MAX_BYTES, settings.BATCH_FILE_MAX_BYTES + 64 * 1024)
        return limit, "BATCH_FILE_MAX_BYTES"

    @extend_schema(
        operation_id="files_create",
        request={"multipart/form-data": openapi.FILE_UPLOAD},
        responses={200: openapi.FILE, 400: openapi.INVALID},
    )
    def post(self, request: Request) -> Response:
        values = validated(FileCreateInput, request.data, InvalidFile)
        upload = values["file"]
        if upload.size > settings.BATCH_FILE_MAX_BYTES:
            raise InvalidFile("The file is too large.", param="file")
        file = services.file_create(
            user_id=request.user.pk,
            filename=upload.name or "",
            purpose=values["purpose"],
            content=upload.read(),
        )
        return Response(file_object(file))

    @extend_schema(operation_id="files_list", responses={200: openapi.page(openapi.FILE)})
    def get(self, request: Request) -> Response:
        files = [file_object(f) for f in selectors.file_list(user_id=request.user.pk)]
        return Response(page(files, has_more=False))


class FileDetailApi(BatchesApi):
    """GET and DELETE /v1/files/{id}."""

    @extend_schema(
        operation_id="files_retrieve",
        responses={200: openapi.FILE, 404: openapi.FILE_NOT_FOUND},
    )
    def get(self, request: Request, file_id: str) -> Response:
        return Response(file_object(selectors.file_get(user_id=request.user.pk, file_id=file_id)))

    @extend_schema(
        operation_id="files_delete",
        responses={
            200: openapi.FILE_DELETED,
            400: openapi.error("The file is the input of a batch."),
            404: openapi.FILE_NOT_FOUND,
        },
    )
    def delete(self, request: Request, file_id: str) -> Response:
        file = selectors.file_get(user_id=request.user.pk, file_id=file_id)
        services.file_delete(file=file)
        return Response({"id": file_id, "object": "file", "deleted": True})


class FileContentApi(BatchesApi):
    """GET /v1/files/{id}/content: the raw bytes."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = AnyContentNegotiation

    @extend_schema(
        operation_id="files_content",
        responses={
            (200, "application/jsonl"): openapi.FILE_CONTENT,
            (404, "application/json"): openapi.FILE_NOT_FOUND,
        },
    )
    def get(self, request: Request, file_id: str) -> HttpResponse:
        file = selectors.file_get(user_id=request.user.pk, file_id=file_id)
        return HttpResponse(services.file_content(file=file), content_type="application/jsonl")


class BatchCreateInput(serializers.Serializer):
    input_file_id = serializers.CharField(max_length=64)
    endpoint = serializers.CharField(max_length=64)
    completion_window = serializers.CharField(max_length=8)
    metadata = serializers.DictField(child=serializers.CharField(), required=False, allow_null=True)


class BatchListCreateApi(BatchesApi):
    """POST /v1/batches and GET /v1/batches?after=&limit=."""

    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="batches_create",
        request={"application/json": openapi.BATCH_CREATE},
        responses={
            200: openapi.BATCH,
            400: openapi.INVALID,
            404: openapi.FILE_NOT_FOUND,
            429: openapi.error("`batch_token_limit_exceeded`: too many tokens enqueued."),
        },
    )
    def post(self, request: Request) -> Response:
        values = validated(BatchCreateInput, request.data, InvalidBatch)
        input_file = selectors.file_get(user_id=request.user.pk, file_id=values["input_file_id"])
        api_key = api_key_of(request)
        batch = services.batch_create(
            user_id=request.user.pk,
            api_key_id=api_key.id if api_key else None,
            input_file=input_file,
            endpoint=values["endpoint"],
            completion_window=values["completion_window"],
            metadata=values.get("metadata"),
        )
        return Response(batch_object(batch))

    @extend_schema(
        operation_id="batches_list",
        parameters=openapi.BATCH_PAGE_PARAMETERS,
        responses={200: openapi.page(openapi.BATCH), 400: openapi.INVALID},
    )
    def get(self, request: Request) -> Response:
        try:
            limit = min(max(int(request.query_params.get("limit", 20)), 1), 100)
        except ValueError:
            raise InvalidBatch("'limit' must be a number.", param="limit") from None
        after = request.query_params.get("after") or None
        batches, more = selectors.batch_page(user_id=request.user.pk, after=after, limit=limit)
        return Response(page([batch_object(b) for b in batches], has_more=more))


class BatchDetailApi(BatchesApi):
    """GET /v1/batches/{id}."""

    @extend_schema(
        operation_id="batches_retrieve",
        responses={200: openapi.BATCH, 404: openapi.BATCH_NOT_FOUND},
    )
    def get(self, request: Request, batch_id: str) -> Response:
        return Response(
            batch_object(selectors.batch_get(user_id=request.user.pk, batch_id=batch_id))
        )


class BatchCancelApi(BatchesApi):
    """POST /v1/batches/{id}/cancel."""

    @extend_schema(
        operation_id="batches_cancel",
        request=None,
        responses={
            200: openapi.BATCH,
            404: openapi.BATCH_NOT_FOUND,
            409: openapi.error("`batch_not_cancellable`: the batch has already ended."),
        },
    )
    def post(self, request: Request, batch_id: str) -> Response:
        batch = selectors.batch_get(user_id=request.user.pk, batch_id=batch_id)
        return Response(batch_object(services.batch_cancel(batch=batch)))
