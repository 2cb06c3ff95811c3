"""Every curl command of every seed README, run by real curl against a live gateway.

Only the host, the port and the credentials are changed (and seed 004's commands, written for a
server running without a key, get its own `x-api-key` header: we always require one). The
commands are copied here verbatim so the suite runs without the seed files; when they are
beside the project, a test checks the copies against them.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from billing.services import api_key_create
from tests.llm_api.seed_support import image_bytes

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("upstream_providers"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"

# The README commands, verbatim: {id: command}.
SEED_CURLS = {
    "001-text-completion": """curl -X POST "http://localhost:1999/text_model/chat/completion" \\
     -H "Content-Type: application/json" \\
     -H "X-API-Key: your-secret-api-key-here" \\
     -d '{
           "messages": [
             {"role": "user", "content": "What is the capital of France?"}
           ],
           "temperature": 0.7,
           "max_tokens": 100
         }'""",
    "001-text-stream": """curl -N -X POST "http://localhost:1999/text_model/chat/stream" \\
     -H "Content-Type: application/json" \\
     -H "X-API-Key: your-secret-api-key-here" \\
     -d '{
           "messages": [
             {"role": "user", "content": "Tell me a short story"}
           ],
           "temperature": 0.8
         }'""",
    "001-image-completion": """curl -X POST "http://localhost:1999/image_model/chat/completion" \\
     -H "X-API-Key: your-secret-api-key-here" \\
     -F "image=@photo.jpg" \\
     -F "prompt=What objects are in this image?" \\
     -F "temperature=0.3\"""",
    "002-welcome": "curl http://127.0.0.1:8000/",
    "002-signup": """curl -X POST http://localhost:8000/api/signup/ \\
  -H "Content-Type: application/json" \\
  -d '{"username": "charming_user", "password": "secure_pwd"}'""",
    "002-token": """curl -X POST http://localhost:8000/api/token/ \\
  -H "Content-Type: application/json" \\
  -d '{"username": "$USERNAME", "password": "$PASSWORD"}'""",
    "002-refresh": """curl -X POST http://localhost:8000/api/token/refresh/ \\
  -H "Content-Type: application/json" \\
  -d '{"refresh": "$REFRESH_TOKEN"}'""",
    "002-supported-models": """curl "http://localhost:8000/api/supported-models/?provider=gemini" \\
  -H "Authorization: Bearer $ACCESS_TOKEN\"""",
    "002-chat": """curl -X POST "http://localhost:8000/api/chat/completions/?provider=openai" \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $ACCESS_TOKEN" \\
  -d '{
        "model": "gpt-3.5-turbo",
        "messages": [
          {"role": "user", "content": "How is the weather on Venus?"}
        ],
        "stream": false
      }'""",
    "003-stream": """curl -H "X-API-Key: your_api_key" \\
     -H "Content-Type: application/json" \\
     -d '{"prompt": "Tell me a story", "stream": true}' \\
     http://localhost:8100/api/v1/generate""",
    "003-generate": """curl -H "X-API-Key: ollama_1234567890abcdef" \\
     -H "Content-Type: application/json" \\
     -d '{"prompt": "Hello world"}' \\
     http://localhost:8100/api/v1/generate""",
    "004-responses": """curl -X POST http://localhost:8000/v1/responses \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "llama3.2",
    "instructions": "You are a pirate. Always respond in pirate speak.",
    "input": "What is the weather like today?"
  }'""",
    "004-chat": """curl -X POST http://localhost:8000/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "llama3.2",
    "messages": [
      {"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "What is the capital of France?"}
    ]
  }'""",
    "004-responses-with-key": """curl -X POST http://localhost:8000/v1/responses \\
  -H "Content-Type: application/json" \\
  -H "x-api-key: your-secret-key" \\
  -d '{"input": "Hello"}'""",
}

# Requests the READMEs describe without a curl command, written as one.
DESCRIBED = {
    "000-generate": 'curl -X POST "http://127.0.0.1:8000/generate?prompt=Your+question+here" '
    '-H "x-api-key: your-api-key" -H "Content-Type: application/json"',
    "001-image-stream": 'curl -N -X POST "http://localhost:1999/image_model/chat/stream" '
    '-H "X-API-Key: your-secret-api-key-here" -F "image=@photo.jpg" -F "prompt=Describe it"',
    "003-generate-model": "curl -H 'X-API-Key: your_api_key' -H 'Content-Type: application/json' "
    """-d '{"prompt": "Explain quantum computing", "model": "mistral", "stream": false}' """
    "http://localhost:8100/api/v1/generate",
    "003-chat": "curl -H 'X-API-Key: your_api_key' -H 'Content-Type: application/json' "
    """-d '{"messages": [{"role": "user", "content": "Hello!"}, """
    """{"role": "assistant", "content": "Hi there!"}, """
    """{"role": "user", "content": "How are you?"}], """
    """"model": "mistral", "stream": false}' http://localhost:8100/api/v1/chat""",
    "003-completions": "curl -H 'X-API-Key: your_api_key' -H 'Content-Type: application/json' "
    """-d '{"prompt": "Once upon a time", "model": "mistral", "stream": false, """
    """"max_tokens": 100, "temperature": 0.7}' http://localhost:8100/api/v1/completions""",
    "003-health": "curl http://localhost:8100/health",
    "003-info": "curl http://localhost:8100/api/info",
}

HOSTS = ["http://localhost:1999", "http://127.0.0.1:8000", "http://localhost:8000"]
HOSTS += ["http://localhost:8100"]
KEYS = [
    "your-secret-api-key-here",
    "ollama_1234567890abcdef",
    "your_api_key",
    "your-secret-key",
    "your-api-key",
]


def adapted(command: str, base: str, secrets: dict[str, str]) -> str:
    """Return the command with our host, port and credentials, asking curl for the status too."""
    for host in HOSTS:
        command = command.replace(host, base)
    for placeholder in KEYS:
        command = command.replace(placeholder, secrets["key"])
    for name in ("ACCESS_TOKEN", "REFRESH_TOKEN", "USERNAME", "PASSWORD"):
        command = command.replace(f"${name}", secrets[name])
    if "/v1/" in command and "api-key" not in command.lower():  # seed 004 ran without a key
        command = command.replace("curl ", f'curl -H "x-api-key: {secrets["key"]}" ', 1)
    return command + " -sS -w '\\n%{http_code}'"


def json_body(text: str) -> dict:
    return json.loads(text)


def sse(text: str) -> list:
    lines = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def is_reply(text: str) -> bool:
    return isinstance(json_body(text)["response"], str)


def is_seed001_stream(text: str) -> bool:
    events = sse(text)
    return events[-1] == "[DONE]" and all(set(e) == {"response"} for e in events[:-1])


def is_seed003_stream(text: str) -> bool:
    events = sse(text)
    return all(e["done"] is False for e in events[:-1]) and events[-1]["done"] is True


def is_ollama_answer(text: str) -> bool:
    body = json_body(text)
    return body["done"] is True and isinstance(body["response"], str) and body["model"]


EXPECTED = {
    "000-generate": is_reply,
    "001-text-completion": is_reply,
    "001-text-stream": is_seed001_stream,
    "001-image-completion": is_reply,
    "001-image-stream": is_seed001_stream,
    "002-welcome": lambda t: json_body(t)["message"] == "Welcome to the LLM API!",
    "002-signup": lambda t: json_body(t)["message"] == "User created successfully",
    "002-token": lambda t: {"access", "refresh"} <= set(json_body(t)),
    "002-refresh": lambda t: "access" in json_body(t),
    "002-supported-models": lambda t: json_body(t)["models"] == ["gemini-pro", "gemini-pro-vision"],
    "002-chat": lambda t: json_body(t)["choices"][0]["message"]["content"] == "Hello there",
    "003-stream": is_seed003_stream,
    "003-generate": is_ollama_answer,
    "003-generate-model": lambda t: is_ollama_answer(t) and json_body(t)["model"] == "mistral",
    "003-chat": lambda t: is_ollama_answer(t) and json_body(t)["message"]["role"] == "assistant",
    "003-completions": lambda t: json_body(t)["choices"][0]["text"] == "Hello there",
    "003-health": lambda t: json_body(t)["status"] == "ok",
    "003-info": lambda t: "providers" in json_body(t),
    "004-responses": lambda t: json_body(t)["output"][0]["content"][0]["text"] == "Hello there",
    "004-chat": lambda t: json_body(t)["choices"][0]["message"]["role"] == "assistant",
    "004-responses-with-key": lambda t: json_body(t)["status"] == "completed",
}


@pytest.fixture
def secrets(alice, api) -> dict[str, str]:
    from tests.conftest import PASSWORD

    tokens = api.post("/api/token/", {"username": "alice", "password": PASSWORD}).json()
    return {
        "key": api_key_create(user=alice, name="curl")[1],
        "ACCESS_TOKEN": tokens["access"],
        "REFRESH_TOKEN": tokens["refresh"],
        "USERNAME": "alice",
        "PASSWORD": PASSWORD,
    }


@pytest.mark.parametrize("name", [*SEED_CURLS, *DESCRIBED])
def test_the_command_runs_and_gets_the_documented_shape(
    name, live_server, secrets, fake_upstream, settings, tmp_path
):
    settings.IMAGE_MODEL = "openai/gpt-4o"
    fake_upstream.behave(models=["gemini-pro", "gemini-pro-vision"])
    (tmp_path / "photo.jpg").write_bytes(image_bytes("JPEG"))
    command = adapted({**SEED_CURLS, **DESCRIBED}[name], live_server.url, secrets)
    done = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    expected_status = "201" if name == "002-signup" else "200"
    assert status == expected_status, body
    assert EXPECTED[name](body), body


def readme_curls(text: str) -> list[str]:
    """Return the curl commands of a README: the fenced blocks that start with `curl`."""
    blocks, block = [], None
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if block is None:
                block = []
            else:
                blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
    return [b for b in blocks if b.lstrip().startswith("curl")]


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the seed READMEs are not beside the project")
def test_the_copies_are_every_curl_command_of_the_seed_readmes():
    commands = [c for path in sorted(SEEDS.glob("0*.txt")) for c in readme_curls(path.read_text())]
    assert sorted(commands) == sorted(SEED_CURLS.values())
    assert re.search(r"POST /generate\?prompt=", next(SEEDS.glob("000_*.txt")).read_text())
