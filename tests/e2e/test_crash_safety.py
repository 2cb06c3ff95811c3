"""A gateway process killed in the middle of a stream leaves nothing behind past its TTLs.

A real server is killed with SIGKILL while it streams (no `finally`, no close, no settle), then
started again on the same database (and, in CI's second run, the same Redis): its hold expires
within HOLD_TTL_SECONDS, its in-flight place frees within CONCURRENCY_LEASE_SECONDS, the account
is whole again, and nothing is charged twice.
"""

import os
import signal
import time

import httpx
import pytest

from tests.live.gateway import LiveGateway, live_user

pytestmark = pytest.mark.e2e

TTL = 3


def _balance(client: httpx.Client, headers: dict[str, str]) -> dict:
    response = client.get("/api/billing/balance/", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _usage_entries(client: httpx.Client, headers: dict[str, str]) -> list[dict]:
    response = client.get("/api/billing/ledger/", params={"kind": "usage"}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_a_gateway_killed_mid_stream_leaves_no_hold_or_slot_past_their_ttl(fake_upstream, tmp_path):
    fake_upstream.behave(chunks=[f"w{n} " for n in range(200)], chunk_delay=0.05)
    env = {
        **fake_upstream.env(timeout=10),
        "HOLD_TTL_SECONDS": str(TTL),
        "CONCURRENCY_LEASE_SECONDS": str(TTL),
        "DEFAULT_CONCURRENCY_LIMIT": "1",
    }
    gateway = LiveGateway(env, start_timeout=90)
    gateway.start()
    try:
        user = live_user(gateway.url, "crash")
        body = {
            "model": "openai/gpt-4o",
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        }
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            before = _balance(client, user.jwt_headers)
            with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=user.key_headers
            ) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                assert next(line for line in lines if line.startswith("data: "))
                # Mid-stream: a call is held and in flight. Kill the whole server, no cleanup.
                os.killpg(gateway.process.process.pid, signal.SIGKILL)
                gateway.process.process.wait(timeout=10)
            gateway._start()  # the same database and workdir, a new process

            held = _balance(client, user.jwt_headers)
            assert held["held"] != "0.000000"  # the dead process's hold is still there...
            time.sleep(TTL + 1)
            # ...until its TTL: the next call sweeps it, and the in-flight place is free again
            # (a limit of 1: a leaked place would answer 429).
            answer = client.post(
                "/v1/chat/completions", json={**body, "stream": False}, headers=user.key_headers
            )
            assert answer.status_code == 200, answer.text
            after = _balance(client, user.jwt_headers)
            assert after["held"] == "0.000000"
            entries = _usage_entries(client, user.jwt_headers)
            # Only the call after the restart is charged: the killed one is released, not
            # charged, and nothing is charged twice.
            assert len(entries) == 1
            charged = float(before["balance"]) - float(after["balance"])
            assert charged == pytest.approx(-float(entries[0]["amount"]))
    finally:
        gateway.stop()
