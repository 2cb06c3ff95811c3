"""Every dialect goes through the one pipeline: a change made once is seen by every LLM route.

Each test below is parametrized over every LLM route (the streamed and the whole-answer variant
where a route streams), each called with a minimal valid body in its own wire shape, all on one
model. One change is then made once, in one place (a price row, a key's allowlist, an account's
balance, an upstream that breaks mid-stream, one bad option value), and every route must show
it the same way: the same charge, the same refusal in its own error shape, the same message.
A route that kept a rule of its own would fail here on its own line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from billing.models import ApiKey, CreditHold
from billing.money import MICRO
from billing.selectors import price_for
from billing.services import api_key_update, credits_grant, price_set
from llm_api.models import UsageRecord
from tests.llm_api.conftest import balance, usage_entries
from tests.llm_api.seed_support import image_bytes, sse_data

pytestmark = pytest.mark.usefixtures("upstream_providers")

MODEL = "openai/gpt-4o"  # every route's model: it reads images, so the image routes use it too
HI = [{"role": "user", "content": "Hi"}]
JPEG = image_bytes("JPEG")

# The route families' error shapes (project/exception_handler.py).
OPENAI, SEED003, DETAIL = "openai", "seed003", "detail"


# --- the text a stream event carries, per wire shape -----------------------------------------


def chat_text(event: dict) -> str:
    return "".join(c["delta"].get("content") or "" for c in event.get("choices") or [])


def completion_text(event: dict) -> str:
    return "".join(c.get("text") or "" for c in event.get("choices") or [])


def responses_text(event: dict) -> str:
    return event["delta"] if event.get("type") == "response.output_text.delta" else ""


def reply_text(event: dict) -> str:
    """Seed 000/001's `{"response": piece}` and seed 003's `{"response": piece, "done": ...}`."""
    return event.get("response") or ""


# --- the routes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One LLM route, called with a minimal valid body in its own wire shape."""

    id: str
    path: str
    body: dict[str, Any] | None  # JSON body; None: no body (seed 000 takes a query string)
    record: str  # the route name its UsageRecord carries
    errors: str  # its error shape: OPENAI, SEED003 or DETAIL
    text: Callable[[dict], str] = reply_text
    stream: bool = False
    form: bool = False  # multipart: an image file and a prompt (seed 001's image routes)
    options: bool = True  # takes sampling options such as temperature
    embeddings: bool = False

    def post(self, client: APIClient, **options: Any):
        if self.form:
            image = SimpleUploadedFile("photo.jpg", JPEG, content_type="image/jpeg")
            fields = {"prompt": "What is this?", "image": image}
            fields.update({name: str(value) for name, value in options.items()})
            return client.post(self.path, fields, format="multipart")
        if self.body is None:
            assert not options
            return client.post(self.path)
        return client.post(self.path, {**self.body, **options}, format="json")


def both(route: Route) -> list[Route]:
    """A route that streams when its body says so: the whole-answer and the streamed call."""
    streamed = replace(route, id=f"{route.id}-stream", body={**route.body, "stream": True})
    return [route, replace(streamed, stream=True)]


ROUTES: list[Route] = [
    *both(
        Route(
            "v1-chat",
            "/v1/chat/completions",
            {"model": MODEL, "messages": HI},
            "chat.completions",
            OPENAI,
            chat_text,
        )
    ),
    *both(
        Route(
            "v1-completions",
            "/v1/completions",
            {"model": MODEL, "prompt": "Hi"},
            "completions",
            OPENAI,
            completion_text,
        )
    ),
    *both(
        Route(
            "v1-responses",
            "/v1/responses",
            {"model": MODEL, "input": "Hi"},
            "responses",
            OPENAI,
            responses_text,
        )
    ),
    Route(
        "v1-embeddings",
        "/v1/embeddings",
        {"model": MODEL, "input": "Hi"},
        "embeddings",
        OPENAI,
        options=False,
        embeddings=True,
    ),
    *both(
        Route(
            "seed002-chat",
            "/api/chat/completions/?provider=openai",
            {"model": "gpt-4o", "messages": HI},
            "api.chat.completions",
            DETAIL,
            chat_text,
        )
    ),
    Route(
        "seed000-generate", "/generate?prompt=Hi", None, "seed000.generate", DETAIL, options=False
    ),
    Route(
        "seed001-text",
        "/text_model/chat/completion",
        {"messages": HI},
        "seed001.text_model.completion",
        DETAIL,
    ),
    Route(
        "seed001-text-stream",
        "/text_model/chat/stream",
        {"messages": HI},
        "seed001.text_model.stream",
        DETAIL,
        stream=True,
    ),
    Route(
        "seed001-image",
        "/image_model/chat/completion",
        None,
        "seed001.image_model.completion",
        DETAIL,
        form=True,
    ),
    Route(
        "seed001-image-stream",
        "/image_model/chat/stream",
        None,
        "seed001.image_model.stream",
        DETAIL,
        form=True,
        stream=True,
    ),
    *both(
        Route(
            "seed003-generate",
            "/api/v1/generate",
            {"model": MODEL, "prompt": "Hi"},
            "seed003.generate",
            SEED003,
        )
    ),
    *both(
        Route(
            "seed003-chat",
            "/api/v1/chat",
            {"model": MODEL, "messages": HI},
            "seed003.chat",
            SEED003,
        )
    ),
    *both(
        Route(
            "seed003-completions",
            "/api/v1/completions",
            {"model": MODEL, "prompt": "Hi"},
            "seed003.completions",
            SEED003,
            completion_text,
        )
    ),
]
STREAMS = [route for route in ROUTES if route.stream]
WITH_OPTIONS = [route for route in ROUTES if route.options]


def params(routes: list[Route]) -> list[Any]:
    """Return pytest params named by route id."""
    return [pytest.param(route, id=route.id) for route in routes]


@pytest.fixture(autouse=True)
def _seed_models(settings):
    """The seed routes' models are settings: point all three at the routes' one model."""
    settings.GENERATE_MODEL = MODEL
    settings.TEXT_MODEL = MODEL
    settings.IMAGE_MODEL = MODEL


# --- error shapes ------------------------------------------------------------------------------

OPENAI_TYPES = {
    400: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    502: "api_error",
}


def error_body(
    errors: str, status: int, message: str, code: str, param: str | None = None
) -> dict[str, Any]:
    """Return the exact error body a route of the `errors` family answers (or streams)."""
    if errors == OPENAI:
        kind = OPENAI_TYPES[status]
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if errors == SEED003:
        return {"error": HTTPStatus(status).phrase, "message": message, "code": code}
    return {"detail": message, "code": code}


def nothing_happened(alice, fake_upstream, balance_before: int) -> None:
    """The call stopped before the pipeline held credits or called the upstream."""
    assert fake_upstream.requests == []
    assert not CreditHold.objects.exists()
    assert usage_entries(alice) == []
    assert not UsageRecord.objects.exists()
    assert balance(alice) == balance_before


# --- 1. one price change -----------------------------------------------------------------------

NEW_PRICE = {"per_request": 4_321, "per_1k_prompt": 333, "per_1k_completion": 777}
# The fake upstream reports 11 prompt and 7 completion tokens (embeddings: 11 prompt tokens).
CHAT_COST = 4_331  # 4,321 + (11 * 333 + 7 * 777) / 1000 = 9.102, rounded up to 10
EMBEDDING_COST = 4_325  # 4,321 + 11 * 333 / 1000 = 3.663, rounded up to 4


@pytest.fixture
def old_price(db):
    """A price every route charged until the change, already loaded by this process."""
    price_set(model="openai/*", per_request=7 * MICRO)
    assert price_for(provider="openai", model="gpt-4o").per_request == 7 * MICRO


def call_and_settle(route: Route, key_api: APIClient):
    response = route.post(key_api)
    assert response.status_code == 200, response.content
    if route.stream:
        assert response["Content-Type"].startswith("text/event-stream")
        events = sse_data(response)  # the stream settles when it has been read
        assert "".join(route.text(e) for e in events if isinstance(e, dict)) == "Hello there"
    return response


@pytest.mark.parametrize("route", params(ROUTES))
def test_a_price_change_is_charged_by_every_route(route, key_api, alice, fake_upstream, old_price):
    price_set(model=MODEL, **NEW_PRICE)  # the one change

    response = call_and_settle(route, key_api)

    cost = EMBEDDING_COST if route.embeddings else CHAT_COST
    [entry] = usage_entries(alice)
    assert entry.request_id == response["x-request-id"]
    assert (entry.model, entry.amount) == (MODEL, -cost)
    assert (entry.prompt_tokens, entry.completion_tokens, entry.estimated) == (
        11,
        0 if route.embeddings else 7,
        False,
    )
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.provider, record.model, record.credits) == ("openai", "gpt-4o", cost)
    assert (record.status, record.stream) == (UsageRecord.Status.OK, route.stream)
    assert not CreditHold.objects.filter(status="held").exists()


@pytest.mark.parametrize(
    "route",
    params(ROUTES),
)
def test_every_route_records_its_own_route_name(route, key_api, fake_upstream):
    response = call_and_settle(route, key_api)
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert record.route == route.record
    others = {other.record for other in ROUTES if other.path != route.path}
    assert record.route not in others


# --- 2. one allowlist --------------------------------------------------------------------------

NOT_ALLOWED = "This API key may not use 'openai/gpt-4o'. Allowed: openai/gpt-4o-mini."


@pytest.mark.parametrize("route", params(ROUTES))
def test_a_key_allowlist_is_enforced_by_every_route(route, key_api, alice, fake_upstream):
    api_key_update(  # the one change
        api_key=ApiKey.objects.get(user=alice), data={"allowed_models": ["openai/gpt-4o-mini"]}
    )
    before = balance(alice)

    response = route.post(key_api)

    assert response.status_code == 403, response.content
    assert response.json() == error_body(
        route.errors, 403, NOT_ALLOWED, "model_not_allowed", param="model"
    )
    nothing_happened(alice, fake_upstream, before)


# --- 3. one empty account ----------------------------------------------------------------------

NO_CREDITS = (
    "Insufficient credits: the balance is 0 credits (0 held by calls in progress) and this call "
    "needs up to 1."
)


@pytest.mark.parametrize("route", params(ROUTES))
def test_an_account_without_credits_is_refused_by_every_route(route, key_api, alice, fake_upstream):
    # A price by the request only, so every route's hold (and so its message) is the same.
    price_set(model=MODEL, per_request=MICRO)
    credits_grant(user=alice, amount=-balance(alice), note="spent")  # the one change

    response = route.post(key_api)

    assert response.status_code == 402, response.content
    assert response.json() == error_body(route.errors, 402, NO_CREDITS, "insufficient_credits")
    nothing_happened(alice, fake_upstream, 0)


# --- 4. one upstream that breaks mid-stream ------------------------------------------------------

PIECES = ["aaaa", "bbbb", "cccc", "dddd"]  # 4 characters: one token each by the estimate
DELIVERED = "aaaabbbb"  # the upstream drops the connection after two events
UPSTREAM_CODE = "upstream_error"
UPSTREAM_MESSAGE = "The provider 'openai' closed the connection before the answer was complete."


def error_events(events: list) -> list[int]:
    """Return the indexes of the events that report an error."""
    return [
        index
        for index, data in enumerate(events)
        if isinstance(data, dict)
        and ("error" in data or "detail" in data or data.get("type") == "error")
    ]


@pytest.mark.parametrize("route", params(STREAMS))
def test_an_upstream_failure_mid_stream_is_an_error_event_and_charges_what_came(
    route, key_api, alice, fake_upstream
):
    # Only completion tokens are priced: what the client got is what it pays for.
    price_set(model=MODEL, per_request=0, per_1k_prompt=0, per_1k_completion=3 * MICRO)
    fake_upstream.behave(chunks=PIECES, drop_after=2)  # the one change

    response = route.post(key_api)

    assert response.status_code == 200, response.content
    events = sse_data(response)
    [at] = error_events(events)
    assert "".join(route.text(e) for e in events[:at] if isinstance(e, dict)) == DELIVERED
    assert not any(route.text(e) for e in events[at:] if isinstance(e, dict))
    error = events[at]
    if route.record == "responses":
        # The Responses API streams its own typed `error` event (OpenAI's ResponseErrorEvent),
        # then `response.failed`; its HTTP errors are OpenAI's `{"error": {...}}`.
        assert error == {
            "type": "error",
            "sequence_number": error["sequence_number"],
            "code": UPSTREAM_CODE,
            "message": UPSTREAM_MESSAGE,
            "param": None,
        }
        assert events[at + 1]["type"] == "response.failed"
    else:
        assert error == error_body(route.errors, 502, UPSTREAM_MESSAGE, UPSTREAM_CODE)

    delivered_tokens = 2
    [entry] = usage_entries(alice)
    assert (entry.completion_tokens, entry.estimated) == (delivered_tokens, True)
    assert entry.amount == -delivered_tokens * 3 * MICRO // 1000  # 6,000 micro-credits
    record = UsageRecord.objects.get(request_id=response["x-request-id"])
    assert (record.status, record.error_code) == (UsageRecord.Status.UPSTREAM_ERROR, UPSTREAM_CODE)
    assert record.credits == -entry.amount
    assert not CreditHold.objects.filter(status="held").exists()


# --- 5. one validation ---------------------------------------------------------------------------

BAD_TEMPERATURE = "'temperature' is 5; it must be between 0 and 2."


@pytest.mark.parametrize(
    "route",
    params(WITH_OPTIONS),
)
def test_a_bad_option_is_refused_the_same_way_by_every_route(route, key_api, alice, fake_upstream):
    before = balance(alice)

    response = route.post(key_api, temperature=5)

    assert response.status_code == 400, response.content
    nothing_happened(alice, fake_upstream, before)
    assert response.json() == error_body(
        route.errors, 400, BAD_TEMPERATURE, "invalid_value", param="temperature"
    )
