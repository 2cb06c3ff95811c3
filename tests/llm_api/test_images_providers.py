"""Images through the API to each provider: what the upstream received (bytes, MIME, placement).

OpenAI and the in-house server get OpenAI image parts (data: URLs) in their place among the
text; Gemini gets inline data in its place among the parts; Ollama gets the images beside the
message text (its wire carries no MIME type: Ollama reads the bytes).
"""

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.llm_api.conftest import chat
from tests.llm_api.seed_support import image_bytes, noisy_png

pytestmark = pytest.mark.usefixtures("upstream_providers")

JPEG, PNG, GIF, WEBP = (image_bytes(kind) for kind in ("JPEG", "PNG", "GIF", "WEBP"))
PROVIDERS = ["openai", "gemini", "ollama", "inhouse"]


@pytest.fixture(autouse=True)
def _inhouse_reads_images(settings, upstream_providers):
    """The in-house server here runs a model that reads images (OPTIONS images=True)."""
    providers = upstream_providers.llm_providers()
    providers["inhouse"]["OPTIONS"]["images"] = True
    settings.LLM_PROVIDERS = providers


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(data: bytes, mime: str) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(data, mime)}}


def b64(data: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not (the Gemini SDK sends URL-safe)."""
    return base64.urlsafe_b64decode(
        data.replace("+", "-").replace("/", "_") + "=" * (-len(data) % 4)
    )


def received(provider: str, body: dict) -> list[list[tuple]]:
    """Return each non-system message the upstream got: ("text", str), ("image", mime, bytes)."""
    if provider == "gemini":
        return [[gemini_part(part) for part in content["parts"]] for content in body["contents"]]
    messages = [m for m in body["messages"] if m["role"] != "system"]
    if provider == "ollama":
        return [
            [("text", m["content"]), *[("image", None, b64(i)) for i in m.get("images", [])]]
            for m in messages
        ]
    return [openai_parts(m["content"]) for m in messages]


def gemini_part(part: dict) -> tuple:
    if "text" in part:
        return ("text", part["text"])
    inline = part["inlineData"]
    return ("image", inline.get("mimeType") or inline.get("mime_type"), b64(inline["data"]))


def openai_parts(content) -> list[tuple]:
    if isinstance(content, str):
        return [("text", content)]
    parts = []
    for part in content:
        if part["type"] == "text":
            parts.append(("text", part["text"]))
        else:
            header, _, data = part["image_url"]["url"].partition(",")
            parts.append(("image", header.removeprefix("data:").removesuffix(";base64"), b64(data)))
    return parts


@pytest.mark.parametrize("provider", PROVIDERS)
def test_images_reach_each_provider_in_their_place(key_api, fake_upstream, provider):
    messages = [
        {"role": "system", "content": "You compare pictures."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Send them."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare "},
                image_part(JPEG, "image/jpeg"),
                image_part(PNG, "image/png"),
                {"type": "text", "text": "please."},
            ],
        },
    ]
    response = chat(key_api, model=f"{provider}/vision-model", messages=messages)
    assert response.status_code == 200, response.content
    got = received(provider, fake_upstream.last.body)
    assert len(got) == 3
    assert got[:2] == [[("text", "Hello")], [("text", "Send them.")]]
    if provider == "ollama":
        assert got[2] == [("text", "Compare please."), ("image", None, JPEG), ("image", None, PNG)]
    else:
        assert got[2] == [
            ("text", "Compare "),
            ("image", "image/jpeg", JPEG),
            ("image", "image/png", PNG),
            ("text", "please."),
        ]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_seed_upload_reaches_each_provider_after_the_prompt(
    key_api, fake_upstream, settings, provider
):
    settings.IMAGE_MODEL = f"{provider}/vision-model"
    upload = SimpleUploadedFile("photo.webp", WEBP, content_type="application/octet-stream")
    response = key_api.post(
        "/image_model/chat/completion",
        {"image": upload, "prompt": "What is it?"},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    [got] = received(provider, fake_upstream.last.body)
    mime = None if provider == "ollama" else "image/webp"
    assert got == [("text", "What is it?"), ("image", mime, WEBP)]


@pytest.mark.parametrize(("data", "mime"), [(JPEG, "image/jpeg"), (GIF, "image/gif")])
def test_the_mime_type_sent_is_what_the_bytes_are_not_what_the_url_claims(
    key_api, fake_upstream, data, mime
):
    content = [image_part(data, "image/png")]
    response = chat(key_api, model="openai/gpt-4o", messages=[{"role": "user", "content": content}])
    assert response.status_code == 200
    [[got]] = received("openai", fake_upstream.last.body)
    assert got == ("image", mime, data)


def test_a_provider_that_cannot_take_images_is_a_400_naming_the_model(
    key_api, fake_upstream, settings
):
    settings.LLM_PROVIDERS = fake_upstream.llm_providers()  # in-house without images
    content = [{"type": "text", "text": "What?"}, image_part(PNG, "image/png")]
    response = chat(
        key_api, model="inhouse/smollm2", messages=[{"role": "user", "content": content}]
    )
    assert response.status_code == 400
    assert "inhouse/smollm2" in response.json()["error"]["message"]
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("url", "status", "says"),
    [
        ("data:image/png;base64,{big}", 413, "1,000 bytes"),
        ("data:text/plain;base64,aGVsbG8gd29ybGQ=", 415, "PNG, JPEG, GIF or WEBP"),
        ("data:image/bmp;base64,{bmp}", 415, "BMP"),
        ("data:image/png;base64,not*base64", 400, "invalid base64"),
        ("data:image/png,rawbytes", 400, "base64 data URL"),
        ("gopher://example.com/x.png", 400, "data: URL or an http(s) URL"),
    ],
)
def test_bad_images_are_refused_with_the_reason(
    key_api, fake_upstream, settings, url, status, says
):
    settings.IMAGE_MAX_BYTES = 1000
    url = url.format(
        big=base64.b64encode(noisy_png((30, 30))).decode(),
        bmp=base64.b64encode(image_bytes("BMP", (4, 4))).decode(),
    )
    content = [{"type": "image_url", "image_url": {"url": url}}]
    response = chat(key_api, model="openai/gpt-4o", messages=[{"role": "user", "content": content}])
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert says in error["message"]
    assert error["param"] == "messages.0.content.0.image_url.url"
    assert fake_upstream.requests == []


def test_images_outside_user_messages_are_refused(key_api, fake_upstream):
    messages = [{"role": "assistant", "content": [image_part(PNG, "image/png")]}]
    response = chat(key_api, model="openai/gpt-4o", messages=messages)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.content"
