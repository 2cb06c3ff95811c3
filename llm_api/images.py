"""Images in requests: decoded or fetched, checked with Pillow, handed to providers as bytes + MIME.

http(s) image URLs are fetched only when IMAGE_URL_FETCH is on, and never from the gateway's own
networks (server-side request forgery): the host is resolved once, every address it resolves to
must be a public one (not loopback, private, link-local, multicast, reserved or unspecified, in
IPv4 or IPv6, IPv4 hidden inside IPv6 included), and the gateway then connects to that very
address with the original Host header and TLS name, so a second DNS answer cannot switch it.
Redirects are followed by hand, each target checked the same way, at most MAX_REDIRECTS; the body
is read up to IMAGE_MAX_BYTES within IMAGE_FETCH_TIMEOUT seconds.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx2
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from PIL import Image, UnidentifiedImageError

from llm_api.exceptions import ImageTooLarge, InvalidParameter, UnsupportedImage
from llm_api.providers.base import ImagePart

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
MAX_REDIRECTS = 3
REDIRECTS = {301, 302, 303, 307, 308}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def limit_text() -> str:
    """Return IMAGE_MAX_BYTES for people: "5,242,880 bytes (5 MiB)"."""
    limit = settings.IMAGE_MAX_BYTES
    mib = f" ({limit // 2**20} MiB)" if limit % 2**20 == 0 else ""
    return f"{limit:,} bytes{mib}"


def too_large(param: str, size: int | None = None) -> ImageTooLarge:
    """Return the 413 for an image over IMAGE_MAX_BYTES, saying the limit."""
    if size is None:
        message = f"'{param}': the image is larger than the limit of {limit_text()}."
    else:
        message = f"'{param}': the image is {size:,} bytes; the limit is {limit_text()}."
    return ImageTooLarge(message, param=param)


def image_check(data: bytes, *, param: str, detail: str | None = None) -> ImagePart:
    """Return the bytes as an ImagePart once Pillow recognises a supported image in them."""
    if len(data) > settings.IMAGE_MAX_BYTES:
        raise too_large(param, len(data))
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnsupportedImage(
            f"'{param}' is not a readable image. Send PNG, JPEG, GIF or WEBP.", param=param
        ) from error
    if kind not in FORMATS:
        raise UnsupportedImage(
            f"'{param}' is a {kind or 'unknown'} image. Send PNG, JPEG, GIF or WEBP.", param=param
        )
    return ImagePart(data=data, mime_type=FORMATS[kind], detail=detail)


def image_from_base64(payload: str, *, param: str, detail: str | None = None) -> ImagePart:
    """Return the image in a base64 string (a data: URL's payload, or Ollama's `images`)."""
    # base64 is 4/3 the size of the bytes: refuse an oversized payload before decoding it.
    if len(payload) > settings.IMAGE_MAX_BYTES * 4 // 3 + 4:
        raise too_large(param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidParameter(f"'{param}' holds invalid base64.", param=param) from error
    return image_check(data, param=param, detail=detail)


def image_from_data_url(url: str, *, param: str, detail: str | None = None) -> ImagePart:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64") or not payload:
        raise InvalidParameter(
            f"'{param}' must be a base64 data URL like data:image/png;base64,....", param=param
        )
    return image_from_base64(payload, param=param, detail=detail)


def image_from_url(url: str, *, param: str, detail: str | None = None) -> ImagePart:
    """Return the image a content part points at: a data: URL, or http(s) when allowed."""
    if url.startswith("data:"):
        return image_from_data_url(url, param=param, detail=detail)
    if url.lower().startswith(("http://", "https://")):
        if not settings.IMAGE_URL_FETCH:
            raise InvalidParameter(
                f"'{param}': this server does not fetch image URLs; send the image as a "
                "data: URL (data:image/png;base64,...).",
                param=param,
            )
        return image_check(image_fetch(url, param=param), param=param, detail=detail)
    raise InvalidParameter(f"'{param}' must be a data: URL or an http(s) URL.", param=param)


# --- uploads ------------------------------------------------------------------------------------


class ImageUploadLimit(FileUploadHandler):
    """An upload handler that stops a file as soon as it passes IMAGE_MAX_BYTES.

    Put first in `request.upload_handlers`, it refuses an oversized upload (413) while it
    streams in, before the rest of it reaches memory or a temporary file.
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


# --- fetching, safely ---------------------------------------------------------------------------


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Return every address `host` resolves to (the DNS seam: tests may stand in for it)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64…)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address.packed[:12] == bytes(12) or address in NAT64:
        return ipaddress.IPv4Address(address.packed[12:])
    return None


def address_allowed(address: IPAddress) -> bool:
    """Return whether the gateway may connect to `address` to fetch an image."""
    allowed = [
        ipaddress.ip_network(net, strict=False) for net in settings.IMAGE_FETCH_ALLOWED_NETWORKS
    ]
    if any(address.version == net.version and address in net for net in allowed):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and not address_allowed(inner):
            return False
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """One hop of a fetch: where to connect (a checked address) and what to ask for."""

    url: str  # the URL with the address in place of the host
    host_header: str
    tls_name: str | None  # the name the certificate must carry; None for an IP literal


def fetch_target(url: str, *, param: str) -> FetchTarget:
    """Return where `url` may be fetched from; raise InvalidParameter for a forbidden one."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise InvalidParameter(f"'{param}' has an invalid port.", param=param) from error
    host = parts.hostname
    if parts.scheme not in {"http", "https"} or not host or parts.username or parts.password:
        raise InvalidParameter(
            f"'{param}' must be an http(s) URL with a host and no user name or password.",
            param=param,
        )
    address = checked_address(host, port, param=param)
    netloc = f"[{address}]" if address.version == 6 else str(address)
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    ascii_host = host if _is_ip(host) else host.encode("idna").decode("ascii")
    host_header = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    if parts.port:
        host_header += f":{parts.port}"
    return FetchTarget(
        url=f"{parts.scheme}://{netloc}:{port}{path}{query}",
        host_header=host_header,
        tls_name=None if _is_ip(host) else ascii_host,
    )


def checked_address(host: str, port: int, *, param: str) -> IPAddress:
    """Resolve `host` once and return its address if every address it has is allowed."""
    try:
        addresses = resolve_host(host, port)
    except (OSError, UnicodeError, ValueError) as error:
        raise InvalidParameter(
            f"'{param}': the image URL's host could not be resolved.", param=param
        ) from error
    if not addresses:
        raise InvalidParameter(
            f"'{param}': the image URL's host could not be resolved.", param=param
        )
    if not all(address_allowed(address) for address in addresses):
        raise InvalidParameter(
            f"'{param}': the image URL points at a loopback, private, link-local or otherwise "
            "non-public address; this server fetches images from public addresses only.",
            param=param,
        )
    return addresses[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def tls_verify() -> bool:
    """Return httpx's `verify` for image fetches: the default trust store."""
    return True


def image_fetch(url: str, *, param: str) -> bytes:
    """Return the body of an http(s) image URL, following at most MAX_REDIRECTS redirects."""
    deadline = time.monotonic() + settings.IMAGE_FETCH_TIMEOUT
    for _ in range(MAX_REDIRECTS + 1):
        target = fetch_target(url, param=param)
        status, location, data = fetch_once(target, deadline=deadline, param=param)
        if status in REDIRECTS and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise InvalidParameter(
                f"'{param}': fetching the image failed (HTTP {status}).", param=param
            )
        return data
    raise InvalidParameter(
        f"'{param}': the image URL redirected more than {MAX_REDIRECTS} times.", param=param
    )


def fetch_once(
    target: FetchTarget, *, deadline: float, param: str
) -> tuple[int, str | None, bytes]:
    """Return (status, Location, body) of one GET; the body only for a 200."""
    timeout = max(0.1, deadline - time.monotonic())
    extensions = {"sni_hostname": target.tls_name} if target.tls_name else {}
    headers = {"Host": target.host_header, "Accept": "image/*", "Accept-Encoding": "identity"}
    # A client per hop, no pool and no proxies from the environment: a pooled connection or a
    # proxy would not be the address that was checked.
    try:
        with (
            httpx2.Client(timeout=timeout, trust_env=False, verify=tls_verify()) as client,
            client.stream("GET", target.url, headers=headers, extensions=extensions) as response,
        ):
            if response.status_code != 200:
                return response.status_code, response.headers.get("location"), b""
            return 200, None, b"".join(read_limited(response, deadline=deadline, param=param))
    except httpx2.TimeoutException as error:
        raise InvalidParameter(
            f"'{param}': the image did not arrive within {settings.IMAGE_FETCH_TIMEOUT:g} seconds.",
            param=param,
        ) from error
    except httpx2.HTTPError as error:
        raise InvalidParameter(
            f"'{param}': the image URL could not be fetched.", param=param
        ) from error


def read_limited(response: httpx2.Response, *, deadline: float, param: str) -> Iterator[bytes]:
    """Yield the body, refusing it past IMAGE_MAX_BYTES or past the deadline."""
    limit = settings.IMAGE_MAX_BYTES
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(param, int(declared))
    size = 0
    for piece in response.iter_bytes():
        size += len(piece)
        if size > limit:
            raise too_large(param)
        if time.monotonic() > deadline:
            raise httpx2.ReadTimeout("The image took too long.")
        yield piece
