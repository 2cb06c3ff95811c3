"""The Batch API's errors, answered by project/exception_handler.py."""

from project.exceptions import ServiceError


class FileNotFound(ServiceError):
    status_code = 404
    code = "file_not_found"
    default_message = "No such file."


class BatchNotFound(ServiceError):
    status_code = 404
    code = "batch_not_found"
    default_message = "No such batch."


class InvalidFile(ServiceError):
    code = "invalid_file"
    default_message = "The file is invalid."


class InvalidBatch(ServiceError):
    code = "invalid_request"
    default_message = "The batch is invalid."


class BatchNotCancellable(ServiceError):
    status_code = 409
    code = "batch_not_cancellable"
    default_message = "This batch can no longer be cancelled."


class BatchTokensExceeded(ServiceError):
    status_code = 429
    code = "batch_token_limit_exceeded"
    error_type = "rate_limit_exceeded"
    default_message = "This key has too many tokens enqueued in batches."


class KeyBusy(Exception):
    """The key runs as many batch lines as BATCH_CONCURRENCY_LIMIT allows (never answered:
    the worker that meets it stops, the key's running workers go on). `retry_after`: seconds
    until the first of those lines' leases runs out."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:.1f} s")
        self.retry_after = retry_after
