"""Logs: one JSON line per request with who, what and how long, and never a key or a prompt."""

import json
import logging
import sys

import pytest

from operations.logs import JsonFormatter
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
