"""schemathesis against the live schema: every operation it lists, fuzzed, then chained.

One gateway under the production server (granian), its providers pointed at the fake upstream
(never the network), signed in with a real JWT (user `fuzz-jwt`) and a real API key of another
user (`fuzz-key`), so that the fuzzer's deletes and revocations with the JWT never revoke the
key the LLM routes are called with. Every answer must be below 500, have a documented content
type, and match its own schema. The schema is read from the running gateway, so routes added
later are fuzzed too, without a change here.

Budget: about a minute on two cores (few examples per operation, derandomized so a run is
reproducible; FUZZ_EXAMPLES raises the count for a longer local run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings

from tests.fake_upstream import FakeUpstream
from tests.live import LiveGateway, LiveUser, live_user

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "10"))
CHECKS = ["not_a_server_error", "content_type_conformance", "response_schema_conformance"]
# The routes whose callers are the OpenAI SDKs and the seeds' clients: called with the API key.
KEY_ROUTES = ("/v1/", "/api/v1/", "/api/chat/", "/api/supported-models/", "/generate", "/text_")


def fuzz_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 13,
            "generation": {
                "max-examples": EXAMPLES,
                "deterministic": True,
                # The credentials are ours (below); a made-up one only ever answers 401.
                "with-security-parameters": False,
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "request-timeout": 30,
            "max-stream-events": 50,
        }
    )


@pytest.fixture(scope="module")
def fuzz_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def fuzz_gateway(fuzz_upstream, tmp_path_factory) -> Iterator[LiveGateway]:
    env = {
        **fuzz_upstream.env(timeout=10),
        "SIGNUP_CREDITS": "1000000",
        "KEY_FAILURE_THROTTLE_RATE": "100000/min",
        "LOGIN_USERNAME_THROTTLE_RATE": "100000/min",
        "TEXT_MODEL": "openai/gpt-4o-mini",
        "IMAGE_MODEL": "openai/gpt-4o",
    }
    with LiveGateway(env, workdir=tmp_path_factory.mktemp("fuzz")) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def signed_in(fuzz_gateway) -> dict[str, LiveUser]:
    return {
        "jwt": live_user(fuzz_gateway.url, "fuzz-jwt"),
        "key": live_user(fuzz_gateway.url, "fuzz-key"),
    }


@pytest.fixture(scope="module")
def live_schema(fuzz_gateway):
    return schemathesis.openapi.from_url(
        f"{fuzz_gateway.url}/api/schema/?format=json", config=fuzz_config()
    )


def served_schema() -> dict:
    """Return the schema /api/schema/ serves, built in this process: the same code builds it,
    so the tests it parametrizes (one per operation, named after it) are the live schema's."""
    return SchemaGenerator().get_schema(request=None, public=True)


def credentials(path: str, users: dict[str, LiveUser]) -> dict[str, str]:
    """Return the API key's header on the LLM routes, the JWT's everywhere else."""
    if path.startswith(KEY_ROUTES):
        return {"X-API-Key": users["key"].key}
    return users["jwt"].jwt_headers


schema = schemathesis.openapi.from_dict(served_schema(), config=fuzz_config())


@schema.parametrize()
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_every_operation_answers_within_its_schema_and_never_5xx(case, fuzz_gateway, signed_in):
    case.call_and_validate(base_url=fuzz_gateway.url, headers=credentials(case.path, signed_in))


def test_the_live_schema_is_the_one_fuzzed(live_schema):
    assert live_schema.raw_schema["paths"] == schema.raw_schema["paths"]


def test_chained_calls_answer_within_their_schema(live_schema, signed_in):
    """The stateful phase: links schemathesis infers (a key created, then read, changed,
    revoked by its id; signup then sign in)."""
    machine = live_schema.as_state_machine()
    users = signed_in

    class Chained(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case) -> dict:
            return {"headers": credentials(case.path, users)}

    Chained.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
