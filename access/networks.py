"""IP networks as IP rules write them: parsing, normalising, and the private ranges staff admit.

Kept apart from the models so that the rule cache, the middleware and the command share one reading
of what an operator typed.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

CIDR_HELP = "an IPv4 or IPv6 address or network, such as 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32"

# The no-rule default of the staff scope (and the contract's for metrics): loopback and the private
# ranges of RFC 1918 and RFC 4193.
#
# Link-local (169.254.0.0/16, fe80::/10) is left out on purpose. Those addresses are not handed out by
# anyone's network plan: every host on a segment gives itself one with no DHCP and no administrator
# (APIPA, and every IPv6 interface always has one), they are not routed, and on cloud hosts 169.254.x
# is where the metadata service lives. A staff member reaches the platform through the company's
# network or its proxy, whose addresses are in the ranges below; "anyone plugged into the same cable"
# is not what "private" should mean for admin. Nor is 100.64.0.0/10 (carrier-grade NAT, an ISP's
# shared space). An operator who needs either writes an allow rule for the staff scope.
PRIVATE_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(network)
    for network in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)

_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def network_parse(text: str) -> Network:
    """The network `text` names, normalised; a bare address is a /32 (IPv4) or /128 (IPv6).

    Host bits are dropped (10.1.2.3/8 is 10.0.0.0/8, what such a line can only mean) and an IPv4-mapped
    IPv6 network (::ffff:10.0.0.0/104) is written as the IPv4 network it is, since client addresses are
    compared as IPv4 (cs_platform/client_ip.py). Raises ValueError with a sentence for the operator.
    """
    value = text.strip()
    if not value:
        raise ValueError(f"Write {CIDR_HELP}.")
    if "%" in value:
        # A zone (fe80::1%eth0) names an interface of one host, not an address a client comes from.
        raise ValueError(f"{value!r} has an interface zone (%...); write {CIDR_HELP}.")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network; write {CIDR_HELP}.") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def address_parse(text: str | None) -> Address | None:
    """The address a resolver returned, IPv4-mapped IPv6 read as IPv4; None when there is none."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_is_private(address: Address) -> bool:
    """Whether `address` is loopback or in a private range (PRIVATE_NETWORKS)."""
    return any(address in network for network in PRIVATE_NETWORKS)
