"""Images in requests: decoded or fetched, checked, handed to providers as bytes + MIME + size.

What a request may carry, each limit a setting: at most IMAGE_MAX_COUNT images of at most
IMAGE_MAX_BYTES each and IMAGE_MAX_TOTAL_BYTES together, each at most IMAGE_MAX_PIXELS pixels
(width x height, read from the image's header before anything decodes it: a small file can
claim a huge picture, a decompression bomb). Over a limit → 413 naming it; bytes that are not a
PNG, JPEG, GIF or WEBP image → 415; a damaged one → 400. Only the parsers of those four formats
ever read what a client sent.

Inline images (data: URLs, base64, uploads) are checked while the request is validated, before
anything is charged. http(s) image URLs are only recorded then (a pending `ImagePart`), and
fetched by `images_fetch` once the credit hold succeeded, by the rules of `llm_api.image_urls`.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from PIL import Image, WebPImagePlugin  # noqa: F401  (registers the WEBP format)

from llm_api.exceptions import ImageTooLarge, InvalidParameter, TooManyImages, UnsupportedImage
from llm_api.image_urls import image_fetch, size_text, too_large, url_checked
from llm_api.providers.base import ChatRequest, ImagePart, Part

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
# A multipart upload's share of a request that is not the image: boundaries, part headers, the
# prompt and the options.
FORM_OVERHEAD = 64 * 1024


# --- limits -------------------------------------------------------------------------------------


def too_many_pixels(param: str, size: tuple[int, int] | None = None) -> ImageTooLarge:
    """Return the 413 for an image over IMAGE_MAX_PIXELS, saying its size and the limit."""
    limit = f"the limit is {settings.IMAGE_MAX_PIXELS:,} pixels (IMAGE_MAX_PIXELS)"
    if size is None:
        return ImageTooLarge(f"'{param}': the image has too many pixels; {limit}.", param=param)
    width, height = size
    return ImageTooLarge(
        f"'{param}': the image is {width:,} x {height:,} = {width * height:,} pixels; {limit}. "
        "Send a smaller image.",
        param=param,
    )


def pixels_check(size: tuple[int, int], *, param: str) -> None:
    """Refuse an image whose header claims more than IMAGE_MAX_PIXELS pixels."""
    width, height = size
    if width < 1 or height < 1:
        raise InvalidParameter(f"'{param}': the image is {width} x {height} pixels.", param=param)
    if width * height > settings.IMAGE_MAX_PIXELS:
        raise too_many_pixels(param, size)


def count_check(images: list[ImagePart]) -> None:
    """Refuse a request with more than IMAGE_MAX_COUNT images, naming the first one too many."""
    limit = settings.IMAGE_MAX_COUNT
    if len(images) > limit:
        raise TooManyImages(
            f"The request has {len(images)} images; the limit is {limit} images a request "
            "(IMAGE_MAX_COUNT).",
            param=images[limit].param,
        )


def total_check(total: int, *, param: str | None) -> None:
    """Refuse a request whose images together pass IMAGE_MAX_TOTAL_BYTES."""
    limit = settings.IMAGE_MAX_TOTAL_BYTES
    if total > limit:
        raise ImageTooLarge(
            f"The request's images come to {total:,} bytes by '{param}'; the limit is "
            f"{size_text(limit)} for all the images of a request (IMAGE_MAX_TOTAL_BYTES).",
            param=param,
        )


# --- what an image is ---------------------------------------------------------------------------


def image_kind(prefix: bytes) -> str | None:
    """Return the format Pillow recognises in the first 16 bytes of a file, ours first."""
    Image.preinit()
    kind = accepting(prefix, FORMATS)
    if kind is None:
        Image.init()  # every other format Pillow knows, only to name the one refused
        kind = accepting(prefix, list(Image.OPEN))
    return kind


def accepting(prefix: bytes, kinds: Iterable[str]) -> str | None:
    """Return the first of `kinds` whose Pillow plugin accepts the file's first bytes."""
    for kind in kinds:
        accept = Image.OPEN[kind][1] if kind in Image.OPEN else None
        with suppress(SyntaxError, IndexError, TypeError, struct.error):
            if accept is not None and accept(prefix) is True:
                return kind
    return None


def webp_size(data: bytes) -> tuple[int, int] | None:
    """Return a WEBP image's canvas size from its header, or None when it has none.

    Pillow's WEBP plugin creates the decoder, and with it a canvas of the full size, just to
    open the file; so WEBP is only ever read here, never opened, and the model reads it.
    """
    chunk, header = data[12:16], data[:30]
    if len(header) < 30:
        return None
    if chunk == b"VP8 " and header[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", header, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8X":  # the canvas of an extended file: 24-bit width - 1, height - 1
        width, height = (int.from_bytes(header[at : at + 3], "little") + 1 for at in (24, 27))
        return width, height
    if chunk == b"VP8L" and header[20] == 0x2F:
        bits = int.from_bytes(header[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


@contextmanager
def decoder_errors(kind: str, *, param: str) -> Iterator[None]:
    """Turn whatever Pillow raises on bytes it cannot parse into an answer naming `param`."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise too_many_pixels(param) from error
    # Pillow's parsers raise many types on malformed input (OSError, SyntaxError, ValueError,
    # EOFError, struct.error, zlib.error, IndexError…): each means the image is damaged.
    except Exception as error:
        raise InvalidParameter(
            f"'{param}' is a damaged or truncated {kind} image; send the file unchanged.",
            param=param,
        ) from error


def image_inspect(data: bytes, *, param: str) -> tuple[str, tuple[int, int]]:
    """Return the format and (width, height) of an image, checked against IMAGE_MAX_PIXELS
    from its header before any pixel is decoded; refuse what is not a supported image."""
    kind = image_kind(data[:16])
    if kind not in FORMATS:
        what = f"a {kind}" if kind else "not a readable"
        raise UnsupportedImage(
            f"'{param}' is {what} image. Send PNG, JPEG, GIF or WEBP.", param=param
        )
    if kind == "WEBP":
        size = webp_size(data)
        if size is None:
            raise InvalidParameter(f"'{param}' is a damaged WEBP image.", param=param)
        pixels_check(size, param=param)
        return kind, size
    with decoder_errors(kind, param=param):
        # The format's own plugin, not Image.open: that would also run Pillow's bomb check,
        # which only warns below twice its own far higher limit.
        image = Image.OPEN[kind][0](io.BytesIO(data), None)
    with image:
        pixels_check(image.size, param=param)
        with decoder_errors(kind, param=param):
            image.verify()
    return kind, image.size


def image_check(
    data: bytes, *, param: str, detail: str | None = None, url: str | None = None
) -> ImagePart:
    """Return the bytes as a checked ImagePart: within IMAGE_MAX_BYTES and IMAGE_MAX_PIXELS, a
    PNG, JPEG, GIF or WEBP image."""
    if len(data) > settings.IMAGE_MAX_BYTES:
        raise too_large(param, len(data))
    kind, (width, height) = image_inspect(data, param=param)
    return ImagePart(
        data=data,
        mime_type=FORMATS[kind],
        detail=detail,
        width=width,
        height=height,
        url=url,
        param=param,
    )


# --- where images come from ---------------------------------------------------------------------


def image_from_base64(payload: str, *, param: str, detail: str | None = None) -> ImagePart:
    """Return the image in a base64 string (a data: URL's payload, or Ollama's `images`),
    decoded but not yet checked: `images_check` checks it once the request's images are counted."""
    # base64 is 4/3 the size of the bytes: refuse an oversized payload before decoding it.
    if len(payload) > settings.IMAGE_MAX_BYTES * 4 // 3 + 4:
        raise too_large(param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidParameter(f"'{param}' holds invalid base64.", param=param) from error
    if len(data) > settings.IMAGE_MAX_BYTES:
        raise too_large(param, len(data))
    return ImagePart(data=data, mime_type="", detail=detail, param=param)


def image_from_data_url(url: str, *, param: str, detail: str | None = None) -> ImagePart:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64") or not payload:
        raise InvalidParameter(
            f"'{param}' must be a base64 data URL like data:image/png;base64,....", param=param
        )
    return image_from_base64(payload, param=param, detail=detail)


def image_from_url(url: str, *, param: str, detail: str | None = None) -> ImagePart:
    """Return the image a content part points at: a data: URL's bytes, or an http(s) URL
    recorded to be fetched by `images_fetch` once credits are held (when allowed)."""
    if url.startswith("data:"):
        return image_from_data_url(url, param=param, detail=detail)
    if url.lower().startswith(("http://", "https://")):
        if not settings.IMAGE_URL_FETCH:
            raise InvalidParameter(
                f"'{param}': this server does not fetch image URLs; send the image as a "
                "data: URL (data:image/png;base64,...).",
                param=param,
            )
        url_checked(url, param=param)
        return ImagePart(data=b"", mime_type="", detail=detail, url=url, param=param)
    raise InvalidParameter(f"'{param}' must be a data: URL or an http(s) URL.", param=param)


class ImageUploadLimit(FileUploadHandler):
    """An upload handler that stops a file as soon as it passes IMAGE_MAX_BYTES.

    Put first in `request.upload_handlers`, it refuses an oversized upload (413) while it
    streams in, before the rest of it reaches memory.
    """

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > settings.IMAGE_MAX_BYTES:
            raise too_large(self.field_name or "image")
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def image_from_upload(upload: UploadedFile, *, param: str) -> ImagePart:
    """Return an uploaded file as a checked ImagePart."""
    if upload.size is not None and upload.size > settings.IMAGE_MAX_BYTES:
        raise too_large(param, upload.size)
    with upload.open("rb") as file:
        return image_check(file.read(settings.IMAGE_MAX_BYTES + 1), param=param)


# --- a request's images -------------------------------------------------------------------------


def request_images(request: ChatRequest) -> Iterator[tuple[list[Part], int, ImagePart]]:
    """Yield each image of the request with the content list it sits in and its index there."""
    for message in request.messages:
        if isinstance(message.content, list):
            for index, part in enumerate(message.content):
                if isinstance(part, ImagePart):
                    yield message.content, index, part


def images_check(request: ChatRequest) -> None:
    """Check a request's images while it is validated, in place: first the per-request caps
    (IMAGE_MAX_COUNT, IMAGE_MAX_TOTAL_BYTES), so a request of many images is refused before
    any is read, then each inline image. URLs stay pending for `images_fetch`."""
    placed = list(request_images(request))
    count_check([part for _, _, part in placed])
    total = 0
    for _, _, part in placed:
        total += len(part.data)
        total_check(total, param=part.param)
    for content, index, part in placed:
        if part.data and not part.mime_type:
            content[index] = image_check(part.data, param=part.param or "image", detail=part.detail)


def images_fetch(request: ChatRequest) -> None:
    """Fetch every pending image URL of the request in place, each checked as an inline image
    is, the request held to IMAGE_MAX_COUNT and IMAGE_MAX_TOTAL_BYTES: afterwards it carries
    only checked images. Call it once the credit hold succeeded."""
    placed = list(request_images(request))
    count_check([part for _, _, part in placed])
    total = sum(len(part.data) for _, _, part in placed)
    for content, index, part in placed:
        if part.pending:
            checked = image_fetched(part)
            total += len(checked.data)
            total_check(total, param=checked.param)
        elif not part.mime_type:  # inline, and not checked yet: never handed on unchecked
            checked = image_check(part.data, param=part.param or "image", detail=part.detail)
        else:
            continue
        content[index] = checked


def image_fetched(part: ImagePart) -> ImagePart:
    """Return a pending image URL fetched and checked."""
    param = part.param or "image"
    data = image_fetch(part.url or "", param=param)
    return image_check(data, param=param, detail=part.detail, url=part.url)


# --- what an image costs ------------------------------------------------------------------------

LOW_DETAIL_TOKENS = 85  # OpenAI's price of any image at detail "low", and the base of the others
TILE_TOKENS = 170  # and of each 512-pixel tile at detail "high" or "auto"


def image_tokens(part: ImagePart) -> int:
    """Return what an image may cost in prompt tokens, by OpenAI's published vision pricing:
    85 at detail "low"; otherwise, scaled to fit 2048 x 2048 and then down to 768 pixels on its
    shortest side, 170 per 512-pixel tile plus 85. An image not fetched yet costs the most an
    image within IMAGE_MAX_PIXELS can."""
    if part.detail == "low":
        return LOW_DETAIL_TOKENS
    if part.width is None or part.height is None:
        return LOW_DETAIL_TOKENS + TILE_TOKENS * most_tiles(settings.IMAGE_MAX_PIXELS)
    width, height = float(part.width), float(part.height)
    fit = min(1.0, 2048 / max(width, height))
    width, height = width * fit, height * fit
    shrink = min(1.0, 768 / min(width, height))
    width, height = width * shrink, height * shrink
    return LOW_DETAIL_TOKENS + TILE_TOKENS * math.ceil(width / 512) * math.ceil(height / 512)


def most_tiles(pixels: int) -> int:
    """Return the most 512-pixel tiles an image of at most `pixels` pixels is cut into.

    Scaled, an image is at most 2048 x 768 (4 x 2 tiles); scaling only shrinks, so the tiles a
    size reaches need at least one pixel past each inner tile edge."""
    return max(
        (across * down for across in range(1, 5) for down in range(1, 3)
         if ((across - 1) * 512 + 1) * ((down - 1) * 512 + 1) <= pixels),
        default=1,
    )  # fmt: skip


# --- configuration ------------------------------------------------------------------------------


@register()
def check_request_fits_images(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """REQUEST_MAX_BYTES must leave room for an image of IMAGE_MAX_BYTES: uploaded (its bytes
    and the form around them) or, as a warning, sent in JSON as base64 (4/3 of its bytes)."""
    request_max, image_max = settings.REQUEST_MAX_BYTES, settings.IMAGE_MAX_BYTES
    upload, in_json = image_max + FORM_OVERHEAD, image_max * 4 // 3 + FORM_OVERHEAD
    hint = "Raise REQUEST_MAX_BYTES to at least {:,}, or lower IMAGE_MAX_BYTES."
    if request_max < upload:
        return [
            Error(
                f"REQUEST_MAX_BYTES ({request_max:,}) leaves no room for an image upload of "
                f"IMAGE_MAX_BYTES ({image_max:,}) and its form: image uploads would be refused.",
                hint=hint.format(upload),
                id="llm_api.E030",
            )
        ]
    if request_max < in_json:
        return [
            CheckWarning(
                f"REQUEST_MAX_BYTES ({request_max:,}) cannot carry an image of IMAGE_MAX_BYTES "
                f"({image_max:,}) in a JSON body, where it travels as base64 (4/3 of its size).",
                hint=hint.format(in_json),
                id="llm_api.W030",
            )
        ]
    return []
