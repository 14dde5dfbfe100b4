"""The customer's IP address, believing X-Forwarded-For only from TRUSTED_PROXIES."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest


@cache
def _trusted_networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; proxies and rules are written in IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(ip in network for network in _trusted_networks(tuple(settings.TRUSTED_PROXIES)))


def resolve_client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    """Walk X-Forwarded-For from the nearest hop back while each hop is a trusted proxy.

    The peer is the TCP peer (daphne runs without --proxy-headers, cs_platform/serve_web.py), so with
    no TRUSTED_PROXIES the header is ignored.
    """
    address = _address(peer) if peer else None
    if address is None:
        return None
    hops: Iterable[str] = reversed([hop for hop in (forwarded_for or "").split(",") if hop.strip()])
    for hop in hops:
        if not _is_trusted(address):
            break
        address = _address(hop)
        if address is None:
            # A trusted proxy passed on something that is not an address: the client is unknown, and
            # not the proxy itself (whose private address staff and metrics rules may admit).
            return None
    return str(address)


def client_ip_from_request(request: HttpRequest) -> str | None:
    """The client's address for an HTTP request."""
    return resolve_client_ip(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))


def client_ip_from_scope(scope: Mapping[str, Any]) -> str | None:
    """The client's address for an ASGI connection (a websocket): its peer, and X-Forwarded-For as far
    as the hops are TRUSTED_PROXIES, as for HTTP."""
    client = scope.get("client")
    peer = client[0] if client else None
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() == b"x-forwarded-for"
    ]
    return resolve_client_ip(peer, ",".join(forwarded) or None)


def axes_client_ip(request: HttpRequest) -> str | None:
    """django-axes' address of a sign-in: the same as every other count's; None when unknown (a test
    client's force_login, a unix socket), which axes stores as no address (its column is an inet)."""
    return client_ip_from_request(request)


def ratelimit_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit key: the client's real address."""
    return client_ip_from_request(request) or "unknown"
