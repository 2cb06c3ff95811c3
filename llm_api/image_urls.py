"""http(s) image URLs: what may be fetched, and fetching it without reaching the gateway's own
networks (server-side request forgery).

Only when IMAGE_URL_FETCH is on, only on IMAGE_FETCH_PORTS (80 and 443). The host is resolved
once; every address it resolves to must be a public one (not loopback, private, link-local,
multicast, reserved or unspecified, in IPv4 or IPv6, IPv4 hidden inside IPv6 included, and
never the translated prefixes 64:ff9b:1::/48 and ::ffff:0:0:0/96), unless it lies in
IMAGE_FETCH_ALLOWED_NETWORKS; the gateway then connects to that very address with the original
Host header and TLS name, so a second DNS answer cannot switch it. Redirects are followed by
hand, each target checked the same way, at most MAX_REDIRECTS; the body is read up to
IMAGE_MAX_BYTES within IMAGE_FETCH_TIMEOUT seconds.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx2
from django.conf import settings

from llm_api.exceptions import ImageTooLarge, InvalidParameter

MAX_REDIRECTS = 3
REDIRECTS = {301, 302, 303, 307, 308}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# IPv6 prefixes that carry an IPv4 address an upstream translator may reach on the gateway's own
# network: local-use NAT64 (RFC 8215) and SIIT's IPv4-translated addresses (RFC 2765). Python
# counts both as global; they are refused whatever IPv4 address they carry.
TRANSLATED = [ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("::ffff:0:0:0/96")]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- the byte limit, for every image however it came -------------------------------------------


def size_text(limit: int) -> str:
    """Return a byte count for people: "5,242,880 bytes (5 MiB)"."""
    mib = f" ({limit // 2**20} MiB)" if limit >= 2**20 and limit % 2**20 == 0 else ""
    return f"{limit:,} bytes{mib}"


def limit_text() -> str:
    """Return IMAGE_MAX_BYTES for people: "5,242,880 bytes (5 MiB)"."""
    return size_text(settings.IMAGE_MAX_BYTES)


def too_large(param: str, size: int | None = None) -> ImageTooLarge:
    """Return the 413 for an image over IMAGE_MAX_BYTES, saying the limit."""
    if size is None:
        message = f"'{param}': the image is larger than the limit of {limit_text()}"
    else:
        message = f"'{param}': the image is {size:,} bytes; the limit is {limit_text()}"
    return ImageTooLarge(f"{message} (IMAGE_MAX_BYTES).", param=param)


# --- fetching, safely ---------------------------------------------------------------------------


def url_checked(url: str, *, param: str) -> tuple[SplitResult, int]:
    """Return the parts and port of an image URL the rules allow (before any name lookup):
    http(s), a host, no user name or password, a port among IMAGE_FETCH_PORTS."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise InvalidParameter(f"'{param}' has an invalid port.", param=param) from error
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.username
        or parts.password
    ):
        raise InvalidParameter(
            f"'{param}' must be an http(s) URL with a host and no user name or password.",
            param=param,
        )
    ports = settings.IMAGE_FETCH_PORTS
    if port not in ports:
        raise InvalidParameter(
            f"'{param}': image URLs may only use port {' or '.join(map(str, ports))} "
            f"(IMAGE_FETCH_PORTS); this one uses port {port}.",
            param=param,
        )
    return parts, port


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
        if any(address in net for net in TRANSLATED):
            return False
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
    parts, port = url_checked(url, param=param)
    host = parts.hostname or ""
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
