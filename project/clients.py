"""Who is asking: the client's address, the one every throttle counts by.

Behind a reverse proxy REMOTE_ADDR is the proxy's address and the client's is in
X-Forwarded-For. But anyone can send that header, so it is believed only as far as proxies this
deployment runs wrote it: TRUSTED_PROXIES (their addresses or networks) or NUM_PROXIES (DRF's
count of them). With neither set the header is ignored: a client that sends a new one with every
request must not look like a new client to the throttles.
"""

from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from django.conf import settings
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.settings import api_settings

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def client_address(request: HttpRequest | Request) -> str:
    """Return the address of the client that sent `request`, as far as it can be trusted."""
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = _forwarded_for(request)
    proxies = networks(tuple(settings.TRUSTED_PROXIES))
    if proxies:
        return _nearest_untrusted([*forwarded, remote], proxies)
    num_proxies = api_settings.NUM_PROXIES
    if num_proxies and forwarded:
        # DRF's rule: the address the outermost of `num_proxies` proxies saw.
        return forwarded[-min(num_proxies, len(forwarded))]
    return remote


def parse_address(text: str) -> Address | None:
    """Return the IP address in `text` (with or without a port; IPv4-mapped IPv6 as IPv4)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 203.0.113.7:443
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=8)
def networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """Return a setting's list of addresses and CIDR networks (TRUSTED_PROXIES,
    METRICS_ALLOWED_IPS) as networks; the system checks report the entries that are neither."""
    parsed = []
    for entry in entries:
        try:
            parsed.append(ip_network(entry.strip(), strict=False))
        except ValueError:
            continue
    return tuple(parsed)


def bad_network_entries(entries: list[str]) -> list[str]:
    """Return the entries of such a list that are neither an address nor a network."""
    bad = []
    for entry in entries:
        try:
            ip_network(entry.strip(), strict=False)
        except ValueError:
            bad.append(entry)
    return bad


def address_in(text: str, within: tuple[Network, ...]) -> bool:
    """Return whether the address in `text` lies in one of the networks."""
    address = parse_address(text)
    return address is not None and any(address in network for network in within)


def _forwarded_for(request: HttpRequest | Request) -> list[str]:
    header = request.META.get("HTTP_X_FORWARDED_FOR", "")
    return [hop.strip() for hop in header.split(",") if hop.strip()]


def _nearest_untrusted(hops: list[str], proxies: tuple[Network, ...]) -> str:
    """Walk back from the peer through our own proxies: the first other hop is the client.

    Each trusted proxy appends the address it was connected from, so everything to the right of
    the first untrusted hop was written by us and everything to its left by the client.
    """
    for hop in reversed(hops):
        if not address_in(hop, proxies):
            address = parse_address(hop)
            return str(address) if address else hop
    return hops[0]  # every hop is one of ours: the request came from inside
