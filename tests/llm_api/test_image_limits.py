"""Image limits on every route that takes images: pixels (decompression bombs), damaged files,
the count and total size of a request's images, and what an image may cost in tokens.

The images are real bytes: small files whose headers claim huge pictures, crafted with
struct/zlib or by patching the size fields of an image Pillow wrote.
"""

import base64
import io
import logging
import struct
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from llm_api.exceptions import ImageTooLarge, InvalidParameter, UnsupportedImage
from llm_api.images import image_check, image_tokens
from llm_api.providers.base import ImagePart
from project.exceptions import ServiceError
from tests.llm_api.conftest import chat
from tests.llm_api.seed_support import image_bytes

pytestmark = pytest.mark.usefixtures("upstream_providers")

PNG = image_bytes("PNG")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(width: int, height: int) -> bytes:
    """Return a valid, tiny PNG (every CRC right) whose header claims width x height pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(image_bytes("JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(image_bytes("GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    data = bytearray(image_bytes("WEBP"))
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", width, height)
    return bytes(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes) -> str:
    return f"data:image/png;base64,{b64(data)}"


def image_message(*images: bytes) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": data_url(data)}} for data in images]
    return [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, *parts]}]


def assert_quiet(caplog) -> None:
    """Nothing went wrong inside: no error logged, no traceback."""
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "Traceback" not in caplog.text


BOMB = png_claiming(20_000, 20_000)  # 400 million pixels: over Pillow's own refusal
UNDER_PILLOW = png_claiming(9_000, 9_000)  # 81 million: under Pillow's limit, over ours


# --- decompression bombs, on each route that takes images ---------------------------------------


@pytest.mark.parametrize("image", [BOMB, UNDER_PILLOW], ids=["20000x20000", "9000x9000"])
def test_a_bomb_in_a_chat_data_url_is_a_413_naming_the_limit(key_api, fake_upstream, caplog, image):
    caplog.set_level(logging.INFO)
    response = chat(key_api, model="openai/gpt-4o", messages=image_message(image))
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert error["code"] == "image_too_large"
    assert error["param"] == "messages.0.content.1.image_url.url"
    assert "IMAGE_MAX_PIXELS" in error["message"]
    assert "40,000,000 pixels" in error["message"]
    side = "20,000" if image is BOMB else "9,000"
    assert f"{side} x {side}" in error["message"]
    assert fake_upstream.requests == []
    assert_quiet(caplog)


def test_a_bomb_in_ollama_images_on_generate_is_a_413(key_api, fake_upstream, settings, caplog):
    settings.DEFAULT_PROVIDER = "ollama"
    body = {"prompt": "What is this?", "images": [b64(BOMB)], "model": "llava"}
    response = key_api.post("/api/v1/generate", body, format="json")
    assert response.status_code == 413, response.content
    assert "IMAGE_MAX_PIXELS" in response.json()["message"]
    assert "20,000 x 20,000" in response.json()["message"]
    assert fake_upstream.requests == []
    assert_quiet(caplog)


def test_a_bomb_beside_an_ollama_chat_message_is_a_413(key_api, fake_upstream, caplog):
    messages = [{"role": "user", "content": "What is this?", "images": [b64(BOMB)]}]
    response = key_api.post("/api/v1/chat", {"messages": messages}, format="json")
    assert response.status_code == 413, response.content
    assert "IMAGE_MAX_PIXELS" in response.json()["message"]
    assert fake_upstream.requests == []
    assert_quiet(caplog)


def test_a_bomb_in_a_responses_input_image_is_a_413(key_api, fake_upstream, caplog):
    item = {
        "role": "user",
        "content": [{"type": "input_image", "image_url": data_url(BOMB)}],
    }
    response = key_api.post(
        "/v1/responses", {"model": "openai/gpt-4o", "input": [item]}, format="json"
    )
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert error["param"] == "input.0.content.0.image_url"
    assert "IMAGE_MAX_PIXELS" in error["message"]
    assert fake_upstream.requests == []
    assert_quiet(caplog)


def test_a_bomb_uploaded_to_the_seed_image_route_is_a_413(key_api, fake_upstream, settings, caplog):
    settings.IMAGE_MODEL = "openai/gpt-4o"
    upload = SimpleUploadedFile("bomb.png", BOMB, content_type="image/png")
    response = key_api.post(
        "/image_model/chat/completion", {"image": upload, "prompt": "Hi"}, format="multipart"
    )
    assert response.status_code == 413, response.content
    assert "IMAGE_MAX_PIXELS" in response.json()["detail"]
    assert fake_upstream.requests == []
    assert_quiet(caplog)


@pytest.mark.parametrize(
    "claiming", [png_claiming, jpeg_claiming, gif_claiming, webp_claiming], ids=lambda f: f.__name__
)
def test_every_format_is_measured_from_its_header(claiming):
    with pytest.raises(ImageTooLarge, match="16,000 x 16,000 = 256,000,000 pixels"):
        image_check(claiming(16_000, 16_000), param="image")


def test_the_pixel_limit_is_a_setting(settings):
    settings.IMAGE_MAX_PIXELS = 8 * 6 - 1
    with pytest.raises(ImageTooLarge, match="8 x 6 = 48 pixels; the limit is 47 pixels"):
        image_check(PNG, param="image")
    settings.IMAGE_MAX_PIXELS = 8 * 6
    assert image_check(PNG, param="image").mime_type == "image/png"


# --- damaged images -----------------------------------------------------------------------------


def test_a_damaged_png_is_a_400_naming_the_part(key_api, fake_upstream, caplog):
    damaged = bytearray(PNG)
    damaged[PNG.index(b"IDAT") + 6] ^= 0xFF  # the chunk's CRC no longer matches its data
    response = chat(key_api, model="openai/gpt-4o", messages=image_message(bytes(damaged)))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == "messages.0.content.1.image_url.url"
    assert "damaged" in error["message"]
    assert fake_upstream.requests == []
    assert_quiet(caplog)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "GIF", "WEBP"])
def test_no_truncation_or_corruption_of_an_image_escapes_as_a_crash(kind):
    """Every prefix of a real image, and every byte of its header flipped: each is accepted or
    refused with a 400, 413 or 415, never another exception."""
    data = image_bytes(kind, (40, 30))
    variants = [data[:end] for end in range(len(data))]
    for at in range(min(len(data), 64)):
        flipped = bytearray(data)
        flipped[at] ^= 0xFF
        variants.append(bytes(flipped))
    for variant in variants:
        try:
            image_check(variant, param="image")
        except ServiceError as error:
            assert error.status_code in {400, 413, 415}
            assert error.param == "image"


def test_not_an_image_is_still_a_415_and_a_known_other_format_is_named():
    with pytest.raises(UnsupportedImage, match="not a readable image"):
        image_check(b"hello world, not an image", param="image")
    with pytest.raises(UnsupportedImage, match="BMP"):
        image_check(image_bytes("BMP"), param="image")


def test_a_webp_without_a_readable_size_is_a_400():
    data = bytearray(image_bytes("WEBP"))
    data[23:26] = b"\0\0\0"  # the VP8 start code that precedes the size
    with pytest.raises(InvalidParameter, match="damaged WEBP"):
        image_check(bytes(data), param="image")


# --- a request's images together ----------------------------------------------------------------


def test_more_images_than_the_count_limit_is_a_413_naming_it(key_api, fake_upstream, settings):
    settings.IMAGE_MAX_COUNT = 2
    response = chat(key_api, model="openai/gpt-4o", messages=image_message(PNG, PNG, PNG))
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert error["code"] == "too_many_images"
    assert "IMAGE_MAX_COUNT" in error["message"]
    assert "3 images; the limit is 2" in error["message"]
    assert error["param"] == "messages.0.content.3.image_url.url"
    assert fake_upstream.requests == []


def test_the_count_limit_counts_across_messages_on_the_ollama_route(
    key_api, fake_upstream, settings
):
    settings.IMAGE_MAX_COUNT = 2
    messages = [
        {"role": "user", "content": "One", "images": [b64(PNG), b64(PNG)]},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Two", "images": [b64(PNG)]},
    ]
    response = key_api.post("/api/v1/chat", {"messages": messages}, format="json")
    assert response.status_code == 413, response.content
    assert "IMAGE_MAX_COUNT" in response.json()["message"]
    assert fake_upstream.requests == []


def test_images_at_the_count_limit_reach_the_model(key_api, fake_upstream, settings):
    settings.IMAGE_MAX_COUNT = 2
    response = chat(key_api, model="openai/gpt-4o", messages=image_message(PNG, PNG))
    assert response.status_code == 200, response.content
    parts = fake_upstream.last.body["messages"][0]["content"]
    assert [part["type"] for part in parts] == ["text", "image_url", "image_url"]


def test_images_over_the_total_size_limit_are_a_413_naming_it(key_api, fake_upstream, settings):
    settings.IMAGE_MAX_TOTAL_BYTES = len(PNG) * 2 - 1
    response = chat(key_api, model="openai/gpt-4o", messages=image_message(PNG, PNG))
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert "IMAGE_MAX_TOTAL_BYTES" in error["message"]
    assert f"{len(PNG) * 2 - 1:,} bytes" in error["message"]
    assert error["param"] == "messages.0.content.2.image_url.url"
    assert fake_upstream.requests == []


# --- the decoded size, and what an image costs -------------------------------------------------


def test_a_checked_image_keeps_its_decoded_size():
    part = image_check(image_bytes("JPEG", (40, 30)), param="image")
    assert (part.width, part.height, part.mime_type) == (40, 30, "image/jpeg")


def test_an_image_part_built_the_old_way_still_works():
    part = ImagePart(data=PNG, mime_type="image/png")
    assert (part.width, part.height, part.url, part.pending) == (None, None, None, False)


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((4000, 3000), "low", 85),
        ((1024, 1024), None, 765),  # → 768 x 768: 4 tiles (OpenAI's own example)
        ((2048, 4096), "high", 1105),  # → 1024 x 2048 → 768 x 1536: 6 tiles (OpenAI's example)
        ((100, 100), "auto", 255),  # 1 tile: a small image is not scaled up
        ((8000, 1000), None, 765),  # → 2048 x 256: 4 x 1 tiles
    ],
)
def test_image_tokens_follow_openai_vision_pricing(size, detail, tokens):
    part = ImagePart(data=b"x", mime_type="image/png", detail=detail, width=size[0], height=size[1])
    assert image_tokens(part) == tokens


def test_an_image_not_fetched_yet_costs_the_most_an_image_can(settings):
    pending = ImagePart(data=b"", mime_type="", url="https://images.example/cat.png")
    assert image_tokens(pending) == 85 + 170 * 8  # 2048 x 768 after scaling: 4 x 2 tiles
    settings.IMAGE_MAX_PIXELS = 512 * 512  # too few pixels to reach a second row of tiles
    assert image_tokens(pending) == 85 + 170 * 4
    low = ImagePart(data=b"", mime_type="", url="https://images.example/cat.png", detail="low")
    assert image_tokens(low) == 85


@pytest.mark.parametrize(
    ("options", "chunk"),
    [
        ({}, b"VP8 "),
        ({"lossless": True}, b"VP8L"),
        ({"exif": b"Exif\0\0II*\0\x08\0\0\0\0\0"}, b"VP8X"),
    ],
)
def test_each_kind_of_webp_is_measured(options, chunk):
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(buffer, format="WEBP", **options)
    data = buffer.getvalue()
    assert data[12:16] == chunk
    part = image_check(data, param="image")
    assert (part.mime_type, part.width, part.height) == ("image/webp", 300, 200)
