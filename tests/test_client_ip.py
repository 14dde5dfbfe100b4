"""The client's address: the TCP peer, and X-Forwarded-For only as far back as the hops are trusted."""

from __future__ import annotations

from typing import Any

import pytest

from cs_platform.client_ip import resolve_client_ip


def test_it_ignores_forwarded_for_when_no_proxy_is_trusted(settings: Any) -> None:
    settings.TRUSTED_PROXIES = []

    assert resolve_client_ip("127.0.0.2", "127.0.0.1") == "127.0.0.2"


def test_it_ignores_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["172.30.0.10/32"]

    assert resolve_client_ip("198.51.100.4", "127.0.0.1") == "198.51.100.4"


def test_it_believes_the_trusted_proxy_and_no_hop_beyond_it(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["172.30.0.10/32"]

    assert resolve_client_ip("172.30.0.10", "198.51.100.4") == "198.51.100.4"
    # What the client wrote itself sits left of what the proxy appended: never reached.
    assert resolve_client_ip("172.30.0.10", "127.0.0.1, 198.51.100.4") == "198.51.100.4"


def test_it_walks_back_through_every_trusted_hop(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["172.30.0.10/32", "10.1.0.0/16"]

    assert resolve_client_ip("172.30.0.10", "203.0.113.9, 10.1.2.3") == "203.0.113.9"
    assert resolve_client_ip("172.30.0.10", "10.1.2.4, 10.1.2.3") == "10.1.2.4"


def test_it_reads_ipv4_mapped_addresses_as_ipv4(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["172.30.0.10/32"]

    assert resolve_client_ip("::ffff:172.30.0.10", "::ffff:198.51.100.4") == "198.51.100.4"
    assert resolve_client_ip("::ffff:127.0.0.2", None) == "127.0.0.2"


@pytest.mark.parametrize("forwarded_for", ["not-an-address", "198.51.100.4:5555", "unknown, 198.51.100.4x"])
def test_it_knows_no_client_when_a_trusted_proxy_passes_on_something_else(
    settings: Any, forwarded_for: str
) -> None:
    settings.TRUSTED_PROXIES = ["172.30.0.10/32"]

    assert resolve_client_ip("172.30.0.10", forwarded_for) is None


def test_it_knows_no_client_without_a_peer_address(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["172.30.0.10/32"]

    assert resolve_client_ip(None, "198.51.100.4") is None
    assert resolve_client_ip("", "198.51.100.4") is None
    assert resolve_client_ip("/run/daphne.sock", "198.51.100.4") is None
