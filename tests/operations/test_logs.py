"""Logs: one JSON line per request with who, what and how long, and never a key or a prompt."""

import contextlib
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import RequestFactory
from prometheus_client.parser import text_string_to_metric_families

from operations.logs import JsonFormatter
from operations.metrics import metrics_text
from tests.llm_api.conftest import chat

pytestmark = pytest.mark.usefixtures("upstream_providers")

PROMPT = "The launch code is PURPLE-OCTOPUS-42"
ANSWER = "Noted: purple octopus"


def test_a_request_logs_one_json_line_without_key_or_prompt(
    key_api, alice_key, alice, fake_upstream, caplog
):
    caplog.set_level(logging.DEBUG)
    fake_upstream.behave(chunks=[ANSWER], prompt_tokens=9, completion_tokens=4)
    response = chat(
        key_api, model="openai/gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    assert response.status_code == 200
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]

    request_lines = [
        json.loads(line) for line in lines if json.loads(line)["logger"] == "operations.requests"
    ]
    assert len(request_lines) == 1, lines
    call = request_lines[0]["call"]
    assert call["request_id"] == response["x-request-id"]
    assert call["user_id"] == alice.pk
    assert call["key_prefix"] and alice_key.startswith(call["key_prefix"])
    assert (call["provider"], call["model"], call["status"]) == ("openai", "gpt-4o-mini", "ok")
    assert (call["prompt_tokens"], call["completion_tokens"]) == (9, 4)
    assert call["credits"] > 0 and call["latency_ms"] >= 0
    print(lines[[json.loads(line)["logger"] for line in lines].index("operations.requests")])

    # Neither the key nor the prompt (nor the answer) is in any record, however it is shown.
    everything = "\n".join(
        [*lines, caplog.text, *(str(record.__dict__) for record in caplog.records)]
    )
    for secret in (alice_key, PROMPT, "PURPLE-OCTOPUS", ANSWER):
        assert secret not in everything, secret


def test_a_failed_call_is_logged_with_its_error_code(key_api, fake_upstream, caplog):
    caplog.set_level(logging.INFO, logger="operations.requests")
    fake_upstream.behave(status=500)
    chat(key_api, model="openai/gpt-4o-mini")
    calls = [r.call for r in caplog.records if r.name == "operations.requests"]
    assert [(c["status"], c["completion_tokens"], c["credits"]) for c in calls] == [
        ("upstream_error", 0, 0)
    ]
    assert calls[0]["error_code"]


def test_the_json_formatter_writes_one_object_a_line_with_the_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert (parsed["level"], parsed["message"]) == ("ERROR", "failed here")
    assert "ValueError: boom" in parsed["exception"]


def test_the_line_and_metrics_are_written_once_the_response_has_gone_out(
    alice_key, fake_upstream, caplog
):
    """A WSGI server sends the response, then closes it; only then are the call's log line and
    metrics written, so the client never waits for them."""
    caplog.set_level(logging.INFO, logger="operations.requests")
    fake_upstream.behave(chunks=["hi"], prompt_tokens=3, completion_tokens=2)
    body = json.dumps(
        {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    ).encode()
    environ = (
        RequestFactory()
        .post(
            "/v1/chat/completions", body, content_type="application/json", HTTP_X_API_KEY=alice_key
        )
        .environ
    )
    environ["wsgi.input"] = io.BytesIO(body)
    before = _requests_counted()
    statuses = []

    with _served_as_by_a_server():
        response = WSGIHandler()(environ, lambda status, headers: statuses.append(status))
        content = b"".join(response)
        assert statuses == ["200 OK"] and json.loads(content)["choices"][0]["message"]["content"]
        assert not [r for r in caplog.records if r.name == "operations.requests"]
        assert _requests_counted() == before

        response.close()  # what the server does once the last byte is out
    calls = [r.call for r in caplog.records if r.name == "operations.requests"]
    assert [c["request_id"] for c in calls] == [response["x-request-id"]]
    assert _requests_counted() == before + 1


@contextlib.contextmanager
def _served_as_by_a_server() -> Iterator[None]:
    """Keep the test's database connection open through a request (Django closes old
    connections when a request starts and ends; its test client turns that off too)."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


def _requests_counted() -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text().decode())
        for sample in family.samples
        if sample.name == "llm_requests_total"
    )
