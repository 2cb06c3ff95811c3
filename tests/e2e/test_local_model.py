"""End to end: the official `openai` client → the gateway (a real server) → llama.cpp (SmolLM2).

Between the gateway and llama.cpp sits a counting proxy: it proves when the gateway called the
model and hands us the usage llama.cpp itself reported, which is what must be charged; and it
holds a stream back after its first words until we have read them through the gateway, which
proves that the gateway streams without timing anything.
"""

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.live import CountingProxy, LiveGateway, LiveUser, LlamaServer, live_user

pytestmark = pytest.mark.e2e

MODEL = "inhouse/smollm2-135m-instruct"
MICRO = 1_000_000
# A price with every part non-zero, so a charge shows which token counts it was made from.
PRICE = {"per_request": 500_000, "per_1k_prompt": 2_000_000, "per_1k_completion": 3_000_000}
SET_PRICE = (
    f"from billing.services.prices import price_set; price_set(model='inhouse/*', **{PRICE!r})"
)
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello in five words."}]
# SmolLM2 keeps going on this one until max_tokens: a long stream, token by token.
STORY = [{"role": "user", "content": "Write a long story about a cat who learns to fly."}]


@pytest.fixture(scope="module")
def upstream(llama_server: LlamaServer) -> Iterator[CountingProxy]:
    with CountingProxy(llama_server.base_url) as proxy:
        yield proxy


def _gateway(
    upstream: CountingProxy,
    workdir: Path,
    server: Literal["granian", "runserver"] = "granian",
    **env: str,
) -> Iterator[LiveGateway]:
    """Yield a started gateway whose inhouse provider is llama.cpp behind `upstream`."""
    gateway = LiveGateway(
        {"INHOUSE_BASE_URL": upstream.url_for("/v1"), **env}, workdir=workdir, server=server
    )
    try:
        gateway.prepare()
        gateway.manage("shell", "-c", SET_PRICE)
        yield gateway.start()
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def gateway(upstream: CountingProxy, tmp_path_factory: pytest.TempPathFactory):
    """The production server (granian) in front of the counting proxy."""
    yield from _gateway(upstream, tmp_path_factory.mktemp("gateway"))


@pytest.fixture(scope="module")
def user(gateway: LiveGateway) -> LiveUser:
    return live_user(gateway.url, "alice")


@pytest.fixture(scope="module")
def client(gateway: LiveGateway, user: LiveUser) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=user.key, max_retries=0)


def _usage_entry(gateway: LiveGateway, user: LiveUser, request_id: str) -> dict[str, Any]:
    """Return the ledger's usage entry for `request_id`, waiting for the settlement."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(
            f"{gateway.url}/api/billing/ledger/",
            params={"kind": "usage", "page_size": 200},
            headers=user.key_headers,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        entries = response.json()["results"]
        found = [e for e in entries if e.get("request_id") == request_id and e["kind"] == "usage"]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"no single usage entry for {request_id} in {entries}"
            return found[0]
        time.sleep(0.2)


def _expected_charge(prompt_tokens: int, completion_tokens: int) -> Decimal:
    """Return the price of a call in credits, as billing rounds it (up, to a micro-credit)."""
    per_1k = prompt_tokens * PRICE["per_1k_prompt"] + completion_tokens * PRICE["per_1k_completion"]
    per_tokens = -(-per_1k // 1000)  # rounded up
    return Decimal(PRICE["per_request"] + per_tokens) / MICRO


def _upstream_usage(upstream: CountingProxy, before: int) -> dict[str, int]:
    """Return the usage llama.cpp reported in the one chat answer since `before` exchanges."""
    exchanges = upstream.exchanges("POST", CHAT)[before:]
    assert len(exchanges) == 1, f"expected one upstream call, got {len(exchanges)}"
    return json.loads(exchanges[0].response_body)["usage"]


@pytest.mark.parametrize(
    "model", [MODEL, "smollm2-135m-instruct", None], ids=["provider/model", "bare", "omitted"]
)
def test_a_chat_completion_answers_with_text_and_is_charged_what_llama_reported(
    gateway, user, client, upstream, model
):
    before = len(upstream.exchanges("POST", CHAT))
    body = {"messages": HELLO, "max_tokens": 24, "temperature": 0}
    if model is None:  # the SDK requires a model; its low-level post sends the body as it is
        raw = client.post("/chat/completions", body=body, cast_to=httpx.Response)
        completion = ChatCompletion.model_validate(raw.json())
        request_id = raw.headers["x-request-id"]
    else:
        raw = client.chat.completions.with_raw_response.create(model=model, **body)
        completion = raw.parse()
        request_id = raw.headers["x-request-id"]

    assert completion.choices[0].message.content.strip()
    reported = _upstream_usage(upstream, before)
    assert completion.usage.prompt_tokens == reported["prompt_tokens"] > 0
    assert completion.usage.completion_tokens == reported["completion_tokens"] > 0
    entry = _usage_entry(gateway, user, request_id)
    assert "smollm2-135m-instruct" in entry["model"]
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (
        reported["prompt_tokens"],
        reported["completion_tokens"],
    )
    assert not entry["estimated"]
    charge = _expected_charge(reported["prompt_tokens"], reported["completion_tokens"])
    assert -Decimal(str(entry["amount"])) == charge


def _stream_story(client: openai.OpenAI, upstream: CountingProxy) -> tuple[list[str], str]:
    """Stream a long answer in lock-step with the proxy; return its pieces and the request id.

    The proxy holds llama.cpp's answer back after its first piece of text until we have that
    piece in hand through the gateway: we read it while the gateway has had nothing more from
    the model, not even the end of its answer, so the gateway cannot have waited for the
    model to finish. A gateway that buffered would wait for an answer the proxy holds back:
    after 30 s the proxy ends it there and the check below fails (no stopwatch involved).
    """
    gate = upstream.hold_after_first_piece("POST", CHAT)
    pieces = []
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=STORY, max_tokens=128, temperature=0, stream=True, timeout=120
    ) as response:
        for chunk in response.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                if not pieces:
                    assert gate.holding(0), f"the first piece came too late: {gate.describe()}"
                    gate.release()
                pieces.append(chunk.choices[0].delta.content)
    assert gate.over.wait(10) and not gate.expired, gate.describe()
    return pieces, response.headers["x-request-id"]


def _assert_streamed(pieces: list[str]) -> None:
    """The first piece came alone (see `_stream_story`); the model had much more to say."""
    assert len(pieces) >= 20, pieces


def test_a_stream_delivers_its_first_words_before_the_model_is_done(
    gateway, user, client, upstream
):
    pieces, request_id = _stream_story(client, upstream)

    _assert_streamed(pieces)
    entry = _usage_entry(gateway, user, request_id)
    assert entry["estimated"]  # llama.cpp reports no usage in a stream: the gateway counted
    assert entry["completion_tokens"] > 0


def test_a_json_object_request_returns_parseable_json(client):
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You answer in JSON."},
            {"role": "user", "content": 'Give a JSON object with a key "greeting".'},
        ],
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0,
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(json.loads(choice.message.content), dict)


@pytest.fixture(scope="module")
def poor_gateway(upstream: CountingProxy, tmp_path_factory: pytest.TempPathFactory):
    """A gateway whose new users get one credit: enough for a call or two at PRICE."""
    yield from _gateway(upstream, tmp_path_factory.mktemp("poor"), SIGNUP_CREDITS="1")


def test_it_answers_402_once_credits_run_out_without_calling_the_model(poor_gateway, upstream):
    user = live_user(poor_gateway.url, "bob")
    client = openai.OpenAI(base_url=f"{poor_gateway.url}/v1", api_key=user.key, max_retries=0)
    answered = 0
    for _ in range(10):
        calls_before = upstream.count("POST", CHAT)
        try:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
        except openai.APIStatusError as error:
            refused = error
            break
        answered += 1
        assert upstream.count("POST", CHAT) == calls_before + 1
    else:
        pytest.fail("ten calls at 0.5 credit or more each fitted into one credit")

    assert answered >= 1
    assert refused.status_code == 402, refused.response.text
    assert refused.response.json()["error"]["message"]
    assert upstream.count("POST", CHAT) == calls_before  # the model was never asked


@pytest.fixture(scope="module")
def dev_gateway(upstream: CountingProxy, tmp_path_factory: pytest.TempPathFactory):
    """Django's development server, which must stream as truly as the production one."""
    yield from _gateway(upstream, tmp_path_factory.mktemp("dev"), server="runserver")


def test_runserver_streams_too(dev_gateway, upstream):
    user = live_user(dev_gateway.url, "carol")
    client = openai.OpenAI(base_url=f"{dev_gateway.url}/v1", api_key=user.key, max_retries=0)

    pieces, _ = _stream_story(client, upstream)

    _assert_streamed(pieces)
