"""Errors of the LLM routes; each maps to one HTTP answer (OpenAI's shape on /v1)."""

from project.exceptions import ServiceError


class InvalidParameter(ServiceError):
    status_code = 400
    code = "invalid_value"
    default_message = "A parameter is invalid."


class UnsupportedParameter(ServiceError):
    """The chosen provider cannot honour a parameter; never silently dropped."""

    status_code = 400
    code = "unsupported_parameter"
    default_message = "The chosen model cannot honour a parameter of this request."


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"
    default_message = "The model does not exist."


class ModelNotAllowed(ServiceError):
    status_code = 403
    code = "model_not_allowed"
    default_message = "This API key may not use that model."


class ProviderUnavailable(ServiceError):
    status_code = 503
    code = "provider_unavailable"
    default_message = "The provider is not configured."


class ImageTooLarge(ServiceError):
    status_code = 413
    code = "image_too_large"
    default_message = "The image is too large."


class UnsupportedImage(ServiceError):
    status_code = 415
    code = "unsupported_image"
    default_message = "The image is not in a supported format."


class TooManyImages(ServiceError):
    status_code = 413
    code = "too_many_images"
    default_message = "The request has more images than the limit."
