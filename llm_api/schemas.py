"""Request validation for the OpenAI-compatible routes, before anything is charged.

Hand-written rather than DRF serializers: this runs on every call, and a nested serializer tree
costs more than the rest of the gateway's own work. Every failure is an `InvalidParameter`
naming the parameter, answered in OpenAI's error shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from llm_api.exceptions import InvalidParameter
from llm_api.images import image_from_url, images_check
from llm_api.providers.base import ChatRequest, ImagePart, Message, Part, TextPart

ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
CHAT_FIELDS = {
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n",
    "stop", "seed", "frequency_penalty", "presence_penalty", "response_format", "user", "stream",
    "stream_options", "tools", "tool_choice",
}  # fmt: skip


@dataclass(slots=True)
class ChatInput:
    """A validated chat call: the public model name, the provider request, stream options.

    Every dialect ends its validation by building one, so this is where the request's images
    are checked as a whole, once for every route (`images_check`: their count and total size,
    then each inline image; URLs stay pending until credits are held).
    """

    model: str | None
    request: ChatRequest
    stream: bool = False
    include_usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        images_check(self.request)


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidParameter("The request body must be a JSON object.")
    return body


def reject_unknown(body: dict[str, Any], known: set[str]) -> None:
    for name in body:
        if name not in known:
            raise InvalidParameter(
                f"Unrecognized request argument supplied: {name}. This gateway does not "
                "support it; remove it from the request.",
                param=name,
            )


def number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(f"'{name}' must be a number between {low} and {high}.", param=name)
    if not low <= value <= high:
        raise InvalidParameter(
            f"'{name}' is {value}; it must be between {low} and {high}.", param=name
        )
    return float(value)


def integer(body: dict, name: str, low: int | None = None, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"'{name}' must be an integer.", param=name)
    if low is not None and value < low:
        raise InvalidParameter(f"'{name}' is {value}; it must be at least {low}.", param=name)
    if high is not None and value > high:
        raise InvalidParameter(f"'{name}' is {value}; it must be at most {high}.", param=name)
    return value


def boolean(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidParameter(f"'{name}' must be true or false.", param=name)
    return value


def string(body: dict, name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidParameter(f"'{name}' is required.", param=name)
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"'{name}' must be a string.", param=name)
    if required and not value.strip():
        raise InvalidParameter(f"'{name}' must not be empty.", param=name)
    return value


def model_name(body: dict) -> str | None:
    value = string(body, "model")
    return value.strip() or None if value is not None else None


def max_tokens(body: dict, name: str = "max_tokens") -> int:
    value = integer(body, name, low=1, high=settings.MAX_TOKENS_LIMIT)
    return value if value is not None else settings.MAX_TOKENS_DEFAULT


def stop_sequences(body: dict, name: str = "stop") -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if (
        isinstance(value, list)
        and 0 < len(value) <= 4
        and all(isinstance(item, str) and item for item in value)
    ):
        return value
    raise InvalidParameter(f"'{name}' must be a string or a list of 1 to 4 strings.", param=name)


def response_format(body: dict, name: str = "response_format") -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in {"text", "json_object", "json_schema"}:
        raise InvalidParameter(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
            param="response_format.type",
        )
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidParameter(
                "'response_format.json_schema' must be an object with a 'name' and a 'schema' "
                "object.",
                param="response_format.json_schema",
            )
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise InvalidParameter(
                "'response_format.json_schema.name' is required.",
                param="response_format.json_schema.name",
            )
    return value


def content_parts(content: Any, param: str) -> str | list[Part]:
    """Return a message's content as a string or a list of text and image parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise InvalidParameter(
            f"'{param}' must be a string or a non-empty list of content parts.", param=param
        )
    parts: list[Part] = []
    for index, part in enumerate(content):
        where = f"{param}.{index}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise InvalidParameter(f"'{where}.image_url.url' is required.", param=where)
            detail = image.get("detail") if isinstance(image, dict) else None
            parts.append(image_from_url(url, param=f"{where}.image_url.url", detail=detail))
        else:
            raise InvalidParameter(
                f"'{where}' must be a part of type 'text' (with 'text') or 'image_url' "
                f"(with 'image_url.url'); got {kind!r}.",
                param=where,
            )
    return parts


def message(raw: Any, index: int) -> Message:
    param = f"messages.{index}"
    if not isinstance(raw, dict):
        raise InvalidParameter(
            f"'{param}' must be an object with 'role' and 'content'.", param=param
        )
    role = raw.get("role")
    role = ROLES.get(role) if isinstance(role, str) else None  # JSON may hold any type here
    if role is None:
        raise InvalidParameter(
            f"'{param}.role' must be one of system, developer, user, assistant, tool.",
            param=f"{param}.role",
        )
    tool_calls = raw.get("tool_calls")
    content = raw.get("content")
    if content is None and role == "assistant" and tool_calls:
        content = ""
    elif content is None:
        raise InvalidParameter(f"'{param}.content' is required.", param=f"{param}.content")
    parts = content_parts(content, f"{param}.content")
    if (
        role != "user"
        and not isinstance(parts, str)
        and any(isinstance(p, ImagePart) for p in parts)
    ):
        raise InvalidParameter(
            f"'{param}.content': images are accepted in user messages only.",
            param=f"{param}.content",
        )
    if role == "tool" and not isinstance(raw.get("tool_call_id"), str):
        raise InvalidParameter(
            f"'{param}.tool_call_id' is required for tool messages.", param=f"{param}.tool_call_id"
        )
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise InvalidParameter(f"'{param}.tool_calls' must be a list.", param=f"{param}.tool_calls")
    return Message(
        role=role,  # type: ignore[arg-type]
        content=parts,
        name=raw.get("name") if isinstance(raw.get("name"), str) else None,
        tool_call_id=raw.get("tool_call_id"),
        tool_calls=tool_calls,
    )


def messages(body: dict) -> list[Message]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidParameter("'messages' must be a non-empty list of messages.", param="messages")
    return [message(item, index) for index, item in enumerate(raw)]


def tools(body: dict, name: str = "tools") -> list[dict[str, Any]] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(tool, dict)
        and tool.get("type") == "function"
        and isinstance(tool.get("function"), dict)
        for tool in value
    ):
        raise InvalidParameter(
            "'tools' must be a list of {'type': 'function', 'function': {...}} objects.",
            param="tools",
        )
    return value


def stream_options(body: dict, stream: bool) -> bool:
    """Return whether the client asked for a usage chunk at the end of the stream."""
    value = body.get("stream_options")
    if value is None:
        return False
    if not stream:
        raise InvalidParameter(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    if not isinstance(value, dict) or not isinstance(value.get("include_usage", False), bool):
        raise InvalidParameter(
            "'stream_options' must be an object like {\"include_usage\": true}.",
            param="stream_options",
        )
    return bool(value.get("include_usage"))


# Every option a route can take, checked one way whatever the route: ChatRequest field →
# check(body, the name the route's wire gives it).
OPTION_CHECKS: dict[str, Callable[[dict, str], Any]] = {
    "max_tokens": max_tokens,
    "temperature": lambda body, name: number(body, name, 0, 2),
    "top_p": lambda body, name: number(body, name, 0, 1),
    "n": lambda body, name: integer(body, name, low=1, high=settings.MAX_CHOICES),
    "stop": stop_sequences,
    "seed": integer,
    "frequency_penalty": lambda body, name: number(body, name, -2, 2),
    "presence_penalty": lambda body, name: number(body, name, -2, 2),
    "response_format": response_format,
    "tools": tools,
    "tool_choice": lambda body, name: body.get(name),
    "user": string,
}


def options(
    body: dict, accepted: Iterable[str], *, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return the ChatRequest options among the wire names a route `accepted`, each checked.

    `names` maps a route's own name to the option's (Responses' `max_output_tokens` is
    `max_tokens`). A dialect only maps names: what a valid value is lives here, once.
    """
    names = names or {}
    values: dict[str, Any] = {"max_tokens": settings.MAX_TOKENS_DEFAULT}
    accepted = set(accepted)
    for wire in body:  # in the client's order, so the first bad option is the one reported
        if wire not in accepted:
            continue
        option = names.get(wire, wire)
        check = OPTION_CHECKS.get(option)
        if check is not None and (value := check(body, wire)) is not None:
            values[option] = value
    return values


def chat_input(body: Any) -> ChatInput:
    """Validate a /v1/chat/completions body."""
    body = require_object(body)
    reject_unknown(body, CHAT_FIELDS)
    stream = boolean(body, "stream")
    # max_completion_tokens is the newer name of max_tokens; it wins when both are given.
    limit = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    accepted = CHAT_FIELDS - {"max_tokens", "max_completion_tokens"} | {limit}
    request = ChatRequest(
        model="",
        messages=messages(body),
        **options(body, accepted, names={"max_completion_tokens": "max_tokens"}),
    )
    return ChatInput(
        model=model_name(body),
        request=request,
        stream=stream,
        include_usage=stream_options(body, stream),
    )
