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
