"""What the seed and image tests share: the seed routes mounted, real images, SSE reading."""

import io
import json
import os

from PIL import Image

MISSING_KEY = "Missing API Key. Please provide X-API-Key header."


def image_bytes(kind: str = "PNG", size: tuple[int, int] = (8, 6)) -> bytes:
    """Return a small real image in `kind` (PNG, JPEG, GIF, WEBP, BMP…)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, format=kind)
    return buffer.getvalue()


def noisy_png(size: tuple[int, int] = (300, 300)) -> bytes:
    """Return a PNG of random pixels: it does not compress, so its size is about 3 bytes a pixel."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def sse_data(response) -> list:
    """Return the data of every SSE event of a streamed response ([DONE] as the string)."""
    text = b"".join(response.streaming_content).decode()
    events = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events
