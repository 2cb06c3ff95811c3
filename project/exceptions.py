"""The base of every domain exception: a status code, a machine-readable code and a message."""


class ServiceError(Exception):
    """An error a caller can act on, mapped to one HTTP answer by the exception handler.

    Subclasses set `status_code`, `code` and `default_message` (the model is DRF's APIException);
    `param` names the offending input when there is one, and `headers` are sent with the answer.
    """

    status_code = 400
    code = "invalid_request"
    # OpenAI's error "type"; None derives it from the status code.
    error_type: str | None = None
    default_message = "The request is invalid."

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.param = param
        self.headers = headers or {}
        super().__init__(self.message)
