"""One size limit for every request body, REQUEST_MAX_BYTES: JSON, forms and multipart uploads,
with a Content-Length or chunked. Over it → 413 before the body is read, so an upload is never
written anywhere; under it an upload stays in memory, never in a temporary file.
"""

import base64
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from rest_framework.test import APIClient

from billing.services import api_key_create
from tests.llm_api.seed_support import image_bytes, noisy_png

MiB = 2**20
SIGNUP = {"username": "carol", "password": "correct-horse-battery-staple"}


def multipart(**fields) -> bytes:
    return encode_multipart(BOUNDARY, fields)


def post_raw(path: str, body: bytes | io.BytesIO, content_type: str, *, chunked: bool = False):
    """POST `body` as a WSGI server hands it on: with its Content-Length, or chunked (no
    Content-Length; the server decoded the chunks and ends the input, as granian does)."""
    stream = body if isinstance(body, io.BytesIO) else io.BytesIO(body)
    environ = {"CONTENT_TYPE": content_type, "wsgi.input": stream}
    if chunked:
        environ |= {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    else:
        environ["CONTENT_LENGTH"] = str(len(stream.getbuffer()))
    return Client().generic("POST", path, b"", **environ)


def assert_too_large(response, limit: int) -> None:
    assert response.status_code == 413, response.content
    body = response.json()
    assert body["code"] == "request_too_large"
    assert f"the limit is {limit:,} bytes (REQUEST_MAX_BYTES)" in body["detail"]
    assert response["x-request-id"].startswith("req_")


# --- multipart uploads --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_40_mib_anonymous_upload_is_a_413_before_it_is_read(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    body = io.BytesIO(multipart(**SIGNUP, avatar=SimpleUploadedFile("a.bin", b"\0" * 40 * MiB)))
    response = post_raw("/api/signup/", body, MULTIPART_CONTENT)
    assert_too_large(response, settings.REQUEST_MAX_BYTES)
    assert f"{len(body.getbuffer()):,} bytes" in response.json()["detail"]
    assert body.tell() == 0  # not a byte of it was read: nothing reached memory or disk
    assert list(tmp_path.iterdir()) == []
    assert not get_user_model().objects.filter(username="carol").exists()


@pytest.mark.django_db
def test_an_upload_under_the_limit_never_goes_to_a_temporary_file(settings, tmp_path):
    # Past Django's default FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB) an upload would be written to
    # FILE_UPLOAD_TEMP_DIR; here there is no such directory, so any attempt would fail.
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "absent")
    body = multipart(**SIGNUP, avatar=SimpleUploadedFile("a.bin", b"\0" * 3 * MiB))
    response = post_raw("/api/signup/", body, MULTIPART_CONTENT)
    assert response.status_code == 201, response.content
    assert not (tmp_path / "absent").exists()


def test_django_form_limits_follow_request_max_bytes(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == settings.REQUEST_MAX_BYTES
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE == settings.REQUEST_MAX_BYTES


# --- chunked bodies (no Content-Length) ---------------------------------------------------------


@pytest.mark.django_db
def test_a_chunked_body_over_the_limit_is_a_413_read_no_further(settings):
    settings.REQUEST_MAX_BYTES = 100_000
    body = io.BytesIO(multipart(**SIGNUP, avatar=SimpleUploadedFile("a.bin", b"\0" * MiB)))
    response = post_raw("/api/signup/", body, MULTIPART_CONTENT, chunked=True)
    assert_too_large(response, 100_000)
    assert "over 100,000 bytes" in response.json()["detail"]
    assert body.tell() == 100_001  # counted up to one byte past the limit, no more
    assert not get_user_model().objects.filter(username="carol").exists()


@pytest.mark.django_db
def test_a_chunked_body_under_the_limit_is_read_whole(settings):
    settings.REQUEST_MAX_BYTES = 100_000
    body = b'{"username": "carol", "password": "correct-horse-battery-staple"}'
    response = post_raw("/api/signup/", body, "application/json", chunked=True)
    assert response.status_code == 201, response.content
    assert get_user_model().objects.filter(username="carol").exists()


@pytest.mark.django_db
def test_a_chunked_body_the_server_did_not_end_is_left_unread(settings):
    # Without wsgi.input_terminated the input may run on into the next request: Django reads
    # such a body as empty, and so does the limit.
    stream = io.BytesIO(b"\0" * MiB)
    environ = {"CONTENT_TYPE": "application/json", "HTTP_TRANSFER_ENCODING": "chunked"}
    response = Client().generic("POST", "/api/signup/", b"", **environ, **{"wsgi.input": stream})
    assert response.status_code == 400
    assert stream.tell() == 0


# --- JSON and forms, as before ------------------------------------------------------------------


@pytest.mark.django_db
def test_json_over_the_limit_is_a_413_in_openai_shape_on_v1(settings, alice):
    settings.REQUEST_MAX_BYTES = 1000
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=api_key_create(user=alice, name="k")[1])
    messages = [{"role": "user", "content": "x" * 2000}]
    response = api.post("/v1/chat/completions", {"messages": messages}, format="json")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert "the limit is 1,000 bytes (REQUEST_MAX_BYTES)" in error["message"]


@pytest.mark.django_db
def test_a_urlencoded_form_over_the_limit_is_a_413(settings):
    settings.REQUEST_MAX_BYTES = 1000
    body = b"username=carol&password=" + b"x" * 2000
    response = post_raw("/api/token/", body, "application/x-www-form-urlencoded")
    assert_too_large(response, 1000)


@pytest.mark.django_db
def test_a_body_at_the_limit_is_accepted(settings):
    body = b'{"username": "carol", "password": "correct-horse-battery-staple"}'
    settings.REQUEST_MAX_BYTES = len(body)
    response = post_raw("/api/signup/", body, "application/json")
    assert response.status_code == 201, response.content


# --- image routes still take images up to IMAGE_MAX_BYTES ---------------------------------------


@pytest.fixture
def key_client(alice, upstream_providers, settings) -> APIClient:
    settings.IMAGE_MODEL = "openai/gpt-4o"
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_create(user=alice, name="k")[1])
    return client


def large_image(settings) -> bytes:
    """A real PNG just under IMAGE_MAX_BYTES (random pixels do not compress)."""
    side = int((settings.IMAGE_MAX_BYTES * 0.9 / 3) ** 0.5)
    data = noisy_png((side, side))
    assert 0.8 * settings.IMAGE_MAX_BYTES < len(data) <= settings.IMAGE_MAX_BYTES
    return data


def test_an_image_upload_near_image_max_bytes_is_accepted(key_client, fake_upstream, settings):
    upload = SimpleUploadedFile("big.png", large_image(settings), content_type="image/png")
    response = key_client.post(
        "/image_model/chat/completion", {"image": upload, "prompt": "Hi"}, format="multipart"
    )
    assert response.status_code == 200, response.content
    assert len(fake_upstream.requests) == 1


def test_a_base64_image_near_image_max_bytes_is_accepted(key_client, fake_upstream, settings):
    url = "data:image/png;base64," + base64.b64encode(large_image(settings)).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}]
    response = key_client.post(
        "/v1/chat/completions",
        {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": content}]},
        format="json",
    )
    assert response.status_code == 200, response.content


def test_a_small_image_upload_is_accepted(key_client, fake_upstream):
    upload = SimpleUploadedFile("p.png", image_bytes("PNG"), content_type="image/png")
    response = key_client.post(
        "/image_model/chat/completion", {"image": upload, "prompt": "Hi"}, format="multipart"
    )
    assert response.status_code == 200, response.content


# --- a configuration that makes image uploads impossible fails its check ------------------------


def check_ids() -> set[str]:
    return {message.id for message in run_checks() if message.id.endswith("030")}


def test_the_defaults_leave_room_for_an_image(settings):
    assert check_ids() == set()


def test_a_request_limit_below_an_image_upload_fails_the_system_check(settings):
    settings.REQUEST_MAX_BYTES = settings.IMAGE_MAX_BYTES
    assert check_ids() == {"llm_api.E030"}


def test_a_request_limit_below_a_base64_image_warns(settings):
    settings.REQUEST_MAX_BYTES = settings.IMAGE_MAX_BYTES + 200 * 1024
    assert check_ids() == {"llm_api.W030"}
