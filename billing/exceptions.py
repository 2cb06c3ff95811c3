"""Billing's domain errors: each carries its HTTP status and a machine-readable code."""

from project.exceptions import ServiceError


class InsufficientCredits(ServiceError):
    status_code = 402
    code = "insufficient_credits"
    error_type = "insufficient_quota"
    default_message = "Insufficient credits for this call."


class SpendCapExceeded(ServiceError):
    status_code = 402
    code = "spend_cap_exceeded"
    error_type = "insufficient_quota"
    default_message = "This API key has reached its spend cap."


class PriceMissing(ServiceError):
    status_code = 403
    code = "model_not_priced"
    error_type = "permission_error"
    default_message = "This model has no price, and this gateway serves priced models only."


class InvalidAmount(ServiceError):
    status_code = 400
    code = "invalid_amount"
    default_message = "The amount must be a non-zero whole number of micro-credits."


class DuplicateRequestId(ServiceError):
    status_code = 409
    code = "duplicate_request_id"
    error_type = "conflict_error"
    default_message = "Credits are already held for this request id."


class ApiKeyNotFound(ServiceError):
    status_code = 404
    code = "not_found"
    error_type = "not_found_error"
    default_message = "No such API key."


class ApiKeyRevoked(ServiceError):
    status_code = 409
    code = "api_key_revoked"
    error_type = "conflict_error"
    default_message = "This API key was revoked; it can no longer be changed."


class RestrictedApiKey(ServiceError):
    status_code = 403
    code = "restricted_api_key"
    error_type = "permission_error"
    default_message = (
        "This API key may call the models and read its own usage only; managing keys or the "
        'account needs a login token (JWT) or a key with "scopes": ["models", "manage"].'
    )


class LedgerAppendOnly(ServiceError):
    """Raised on any attempt to change or delete a ledger entry: corrections are new entries."""

    status_code = 409
    code = "ledger_append_only"
    error_type = "conflict_error"
    default_message = "Ledger entries are never changed or deleted; write a new entry instead."


class RefundRefused(ServiceError):
    status_code = 409
    code = "refund_refused"
    error_type = "conflict_error"
    default_message = "This entry cannot be refunded."
