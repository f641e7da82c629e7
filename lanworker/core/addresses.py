"""Which network addresses an http(s) input may reach: global unicast ones only.

A leaf of the standard library alone, so the message policy can refuse a literal private
address at validation without loading the HTTP client (webfetch checks connected peers).
"""

from __future__ import annotations

import ipaddress


def is_public_address(text: str) -> bool:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def literal_address_refused(host: str) -> bool:
    """True when host is an IP literal that is not public (checked before any request)."""
    try:
        return not is_public_address(host.strip("[]"))
    except ValueError:
        return False  # a name: checked when it is connected to
