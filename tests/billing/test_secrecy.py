"""The plaintext key is shown once and stored, logged or returned nowhere else."""

import logging

from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import keys
from billing.money import MICRO
from billing.services import credits_hold, credits_settle
from tests.billing.conftest import key_client


def every_text_value() -> list[str]:
    """Every value of every column of every table, as text."""
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            values.extend(str(value) for row in cursor.fetchall() for value in row)
    return values


def test_the_plaintext_key_appears_in_no_response_log_or_column(
    alice_jwt, admin_client, alice, caplog
):
    for name in ("", "django", "django.request", "django.db.backends", "billing"):
        caplog.set_level(logging.DEBUG, logger=name)
    with CaptureQueriesContext(connection):  # so every SQL statement is logged too
        responses, key = exercise_everything(alice_jwt, admin_client, alice)
    for response in responses:
        assert response.status_code in (200, 401), response.content
        assert key not in response.content.decode()
        assert key not in str(response.headers)
    # The key's lookup by digest was logged with its parameters, so the key would have been too.
    assert any(keys.digest(key) in r.getMessage() for r in caplog.records)
    assert any(r.name == "django.request" for r in caplog.records)  # the 401 was logged
    assert not [r for r in caplog.records if key in r.getMessage()]
    assert not [value for value in every_text_value() if key in value]


def exercise_everything(alice_jwt, admin_client, alice):
    """Create a key, use it on every route, look at it in the admin, bill a call with it."""
    created = alice_jwt.post(
        "/api/keys/", {"name": "secret", "scopes": ["models", "manage"]}, format="json"
    )
    key, key_id = created.json()["key"], created.json()["id"]
    client = key_client(key)
    responses = [
        client.get("/api/keys/"),
        client.get(f"/api/keys/{key_id}/"),
        client.patch(f"/api/keys/{key_id}/", {"name": "renamed"}, format="json"),
        client.get("/api/billing/balance/"),
        client.get("/api/billing/ledger/"),
        client.get("/api/usage/"),
        key_client(key[:-1] + ("x" if key[-1] != "x" else "y")).get("/api/keys/"),
        admin_client.get("/admin/billing/apikey/"),
        admin_client.get(f"/admin/billing/apikey/{key_id}/change/"),
        admin_client.get("/admin/billing/ledgerentry/"),
    ]
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_1", api_key_id=key_id)
    credits_settle(request_id="req_1", cost=MICRO)
    responses.append(client.delete(f"/api/keys/{key_id}/"))
    responses.append(client.get("/api/keys/"))  # revoked: 401
    return [r for r in responses if r.status_code != 204], key
