"""The customer's IP address, believing X-Forwarded-For only from TRUSTED_PROXIES."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import cache

from django.conf import settings
from django.http import HttpRequest


@cache
def _trusted_networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _is_trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _trusted_networks(tuple(settings.TRUSTED_PROXIES)))


def resolve_client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    """Walk X-Forwarded-For from the nearest hop back while each hop is a trusted proxy."""
    if not peer:
        return None
    address = peer
    hops: Iterable[str] = reversed([hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()])
    for hop in hops:
        if not _is_trusted(address):
            break
        address = hop
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def client_ip_from_request(request: HttpRequest) -> str | None:
    """The client's address for an HTTP request."""
    return resolve_client_ip(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))


def ratelimit_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit key: the client's real address."""
    return client_ip_from_request(request) or "unknown"
