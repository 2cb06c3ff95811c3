"""The wire shapes of the Batch API (OpenAI's File and Batch objects), as OpenAPI schemas.

Like llm_api/openapi.py, plain OpenAPI 3.0 schemas referenced by the views' `extend_schema`:
the views answer hand-built dicts (batches/apis.py::file_object, batch_object), so these say
exactly what those hold, nullable where a field may be null. The schemathesis run
(tests/project/test_fuzz.py) checks every answer against them.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from batches.models import Batch
from batches.services import ENDPOINTS
from llm_api.openapi import INTEGER, STRING, Schema, const, nullable

TIMESTAMP = {"type": "integer", "description": "Unix seconds."}
ID = {"type": "string", "minLength": 1, "maxLength": 64}

FILE_UPLOAD: Schema = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "JSON Lines, one request a line: "
            '`{"custom_id", "method": "POST", "url", "body"}`.',
        },
        "purpose": const("batch"),
    },
}
BATCH_CREATE: Schema = {
    "type": "object",
    "required": ["input_file_id", "endpoint", "completion_window"],
    "properties": {
        "input_file_id": ID,
        "endpoint": {"type": "string", "enum": list(ENDPOINTS)},
        "completion_window": const("24h"),
        "metadata": nullable(
            {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}
        ),
    },
}

# --- answers -----------------------------------------------------------------------------------

FILE: Schema = {
    "type": "object",
    "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
    "properties": {
        "id": STRING,
        "object": const("file"),
        "bytes": INTEGER,
        "created_at": TIMESTAMP,
        "filename": STRING,
        "purpose": {"type": "string", "enum": ["batch", "batch_output"]},
        "status": {"type": "string", "enum": ["uploaded", "processed", "error"]},
        "status_details": nullable(STRING),
    },
}
FILE_DELETED: Schema = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "properties": {
        "id": STRING,
        "object": const("file"),
        "deleted": {"type": "boolean"},
    },
}
FILE_CONTENT: Schema = {"type": "string", "format": "binary"}
# A bad line of the input file, as `errors.data[]`.
LINE_ERROR: Schema = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "object": const("error"),
        "code": STRING,
        "message": STRING,
        "param": nullable(STRING),
        "line": nullable({"type": "integer", "description": "1-based; null: the whole file."}),
    },
}
BATCH: Schema = {
    "type": "object",
    "required": [
        "id",
        "object",
        "endpoint",
        "input_file_id",
        "completion_window",
        "status",
        "created_at",
        "request_counts",
    ],
    "properties": {
        "id": STRING,
        "object": const("batch"),
        "endpoint": STRING,
        "errors": nullable(
            {
                "type": "object",
                "properties": {
                    "object": const("list"),
                    "data": {"type": "array", "items": LINE_ERROR},
                },
            }
        ),
        "input_file_id": STRING,
        "completion_window": STRING,
        "status": {"type": "string", "enum": list(Batch.Status.values)},
        "output_file_id": nullable(STRING),
        "error_file_id": nullable(STRING),
        "created_at": TIMESTAMP,
        **{
            name: nullable(TIMESTAMP)
            for name in (
                "in_progress_at",
                "expires_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        },
        "request_counts": {
            "type": "object",
            "required": ["total", "completed", "failed"],
            "properties": {"total": INTEGER, "completed": INTEGER, "failed": INTEGER},
        },
        "usage": {
            "type": "object",
            "required": ["input_tokens", "output_tokens", "total_tokens"],
            "properties": {
                "input_tokens": INTEGER,
                "output_tokens": INTEGER,
                "total_tokens": INTEGER,
            },
        },
        "metadata": nullable({"type": "object", "additionalProperties": STRING}),
    },
}


def page(item: Schema) -> Schema:
    """Return the schema of a list of `item`s in OpenAI's cursor-page shape."""
    return {
        "type": "object",
        "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": const("list"),
            "data": {"type": "array", "items": item},
            "first_id": nullable(STRING),
            "last_id": nullable(STRING),
            "has_more": {"type": "boolean"},
        },
    }


ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": STRING,
                "type": STRING,
                "param": nullable(STRING),
                "code": nullable(STRING),
            },
        }
    },
}


def error(description: str) -> OpenApiResponse:
    """Return an error answer in OpenAI's shape, described."""
    return OpenApiResponse(response=ERROR, description=description)


INVALID = error("The body or a parameter is invalid; `param` names it.")
FILE_NOT_FOUND = error("`file_not_found`: no such file among the caller's own.")
BATCH_NOT_FOUND = error("`batch_not_found`: no such batch among the caller's own.")

BATCH_PAGE_PARAMETERS = [
    OpenApiParameter("after", str, description="A batch id: list the batches created before it."),
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        description="How many batches, 1 to 100.",
    ),
]
